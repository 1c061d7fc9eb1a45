"""Model loading: builtin names, GGUF files, local folders and hub ids -> (model, tokenizer).

Every name resolves to a local Hugging Face folder (config + safetensors + tokenizer) and then
goes through one `from_pretrained` path, so GGUF models, tiny test models and hub models behave
the same downstream. Where the folders come from: `models.registry` (builtin names),
`models.gguf_conversion` (a GGUF dequantized once into the atomic `models.cache`), `models.hub`
(hub ids); a local folder is used in place.

Safety: weights are read from safetensors only (`use_safetensors=True`, hub downloads skip pickle
files); `trust_remote_code` is off unless asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import torch

from grasp_lora.config import ModelConfig
from grasp_lora.models.cache import cache_root
from grasp_lora.models.gguf_conversion import ensure_gguf
from grasp_lora.models.hub import hub_snapshot, looks_like_path
from grasp_lora.models.registry import (
    DEFAULT_MODEL,
    ModelLoadError,
    ensure_tiny,
    first_line,
    gemma_source,
    local_gguf_source,
    model_missing,
    smollm2_source,
)
from grasp_lora.models.tiny import TINY_NAMES

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

ModelSpec = Union[ModelConfig, str]


# ----------------------------------------------------------------------------------------------
# Defaults: device, dtype.


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: Union[str, torch.device, None] = None) -> torch.dtype:
    """fp32 on CPU (bf16 matmuls are slow there), bf16 on CUDA."""
    device = torch.device(device if device is not None else default_device())
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def resolve_device(device: Union[str, torch.device, None]) -> torch.device:
    if device is None or device == "auto":
        return torch.device(default_device())
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ModelLoadError(f"device {device!r}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r}: CUDA is not available on this machine (use cpu or auto)")
    return dev


def resolve_dtype(dtype: Union[str, torch.dtype, None], device: torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ModelLoadError(f"dtype {dtype!r}: expected auto, float32, bfloat16 or float16")


# ----------------------------------------------------------------------------------------------
# Name resolution.


def check_hf_folder(name: str, folder: Path) -> Path:
    if not (folder / "config.json").is_file():
        raise model_missing(name, f"{folder} has no config.json (not a Hugging Face model folder)")
    if not any(folder.glob("*.safetensors")):
        why = ("only pickle weights (.bin/.pt), which are never loaded; convert them to safetensors"
               if any(folder.glob("*.bin")) or any(folder.glob("*.pt")) else "no .safetensors weights")
        raise ModelLoadError(f"model {name!r}: {folder} has {why}")
    return folder


def resolve_model_dir(name: str, cache_dir: Optional[Union[str, Path]] = None, *,
                      trust_remote_code: bool = False) -> Path:
    """A local Hugging Face folder for `name`, ready for from_pretrained (building caches as needed)."""
    if not isinstance(name, str) or not name.strip():
        raise model_missing(str(name), "empty model name")
    root = cache_root(cache_dir)
    if name in TINY_NAMES:
        return ensure_tiny(name, root)
    if name == "gemma-3-270m":
        return ensure_gguf(gemma_source(name), root)
    if name == "smollm2-135m":
        return ensure_gguf(smollm2_source(name), root)
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise model_missing(name, "is a file but not a .gguf file")
        return ensure_gguf(local_gguf_source(path), root)
    if path.is_dir():
        return check_hf_folder(name, path)
    if looks_like_path(name):
        raise model_missing(name, "no such file or folder")
    return check_hf_folder(name, hub_snapshot(name, trust_remote_code))


# ----------------------------------------------------------------------------------------------
# Loading.


def _ensure_pad(tok: Any, name: str) -> Any:
    """Batching needs a pad token; models without one pad with eos (masked out anyway)."""
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ModelLoadError(f"model {name!r}: the tokenizer has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    return tok


def _tokenizer_from(folder: Path, name: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as e:
        raise ModelLoadError(f"model {name!r}: cannot load the tokenizer from {folder} ({first_line(e)})") from None
    return _ensure_pad(tok, name)


def load_tokenizer(name: str, cache_dir: Optional[Union[str, Path]] = None) -> Any:
    """The tokenizer of a model name (same resolution as load_model), with a pad token set."""
    return _tokenizer_from(resolve_model_dir(name, cache_dir), name)


def _model_from(folder: Path, name: str, dtype: torch.dtype, device: torch.device,
                trust_remote_code: bool) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as e:
        raise ModelLoadError(f"model {name!r}: cannot load the weights from {folder} ({first_line(e)})") from None
    return model.to(device)


def _finalise(model: torch.nn.Module, tok: Any) -> None:
    """Eval mode, frozen base weights, and the model's pad id matching the tokenizer's."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.config.pad_token_id = tok.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tok.pad_token_id


def _as_config(spec: ModelSpec) -> ModelConfig:
    if isinstance(spec, ModelConfig):
        return spec
    if isinstance(spec, (str, Path)):
        return ModelConfig(name=str(spec))
    raise ModelLoadError(f"model spec {spec!r}: expected a ModelConfig or a model name")


def load_model(
    spec: ModelSpec = DEFAULT_MODEL,
    *,
    dtype: Union[str, torch.dtype, None] = None,
    device: Union[str, torch.device, None] = None,
    cache_dir: Optional[Union[str, Path]] = None,
    trust_remote_code: bool = False,
) -> tuple[torch.nn.Module, Any]:
    """(model, tokenizer) for a ModelConfig or a name; keyword arguments override the config.

    dtype/device default to "auto" (fp32 on CPU, bf16 on CUDA). trust_remote_code is on only
    when the argument or the config asks for it. The model is in eval mode with every base
    parameter frozen; the tokenizer always has a pad token (eos when the model has none).
    """
    cfg = _as_config(spec)
    dev = resolve_device(device if device is not None else cfg.device)
    dt = resolve_dtype(dtype if dtype is not None else cfg.dtype, dev)
    trust = bool(trust_remote_code or cfg.trust_remote_code)
    folder = resolve_model_dir(cfg.name, cache_dir if cache_dir is not None else cfg.cache_dir,
                               trust_remote_code=trust)
    tok = _tokenizer_from(folder, cfg.name, trust)
    model = _model_from(folder, cfg.name, dt, dev, trust)
    _finalise(model, tok)
    return model, tok

