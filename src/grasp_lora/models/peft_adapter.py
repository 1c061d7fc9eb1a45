"""A PEFT LoRA folder as plain tensors: `LoraAdapter`, `read_adapter`, `check_compatible`.

The adaptive merge (`models.merged`), TIES and LoRAHub read adapters through here (the export
writes them in the same layout); only plain LoRA on Linear layers is accepted, so no part of an
adapter is silently dropped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# PEFT saves a LoRA's tensors under the PeftModel's path: "base_model.model." + the module's path
# inside the plain model, then ".lora_A.weight" / ".lora_B.weight".
PEFT_PREFIX = "base_model.model."


class AdapterError(ValueError):
    """An adapter folder is missing, unreadable, not a LoRA, or uses a LoRA feature we cannot merge."""


class AdapterMismatchError(ValueError):
    """Two adapters (or an adapter and the model) cannot be merged; the message names both and the difference."""


def _natural_key(name: str) -> list[Any]:
    # "layers.10" after "layers.9": module order as in the model, not as strings sort.
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


@dataclass
class LoraAdapter:
    """One LoRA adapter as plain tensors: per module path (inside the plain HF model, e.g.
    `model.layers.0.self_attn.q_proj`) the factors A (r × d_in) and B (d_out × r).

    `config` is the adapter_config.json mapping; `path` the folder it came from (None when built
    in memory, e.g. a LoRAHub combination)."""

    config: dict[str, Any]
    A: dict[str, torch.Tensor]
    B: dict[str, torch.Tensor]
    path: Path | None = None

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else "<in-memory adapter>"

    @property
    def modules(self) -> list[str]:
        return sorted(self.A, key=_natural_key)

    @property
    def r(self) -> int:
        return int(self.config["r"])

    @property
    def alpha(self) -> float:
        return float(self.config.get("lora_alpha", self.r))

    @property
    def use_rslora(self) -> bool:
        return bool(self.config.get("use_rslora", False))

    @property
    def peft_scaling(self) -> float:
        """The scaling PEFT applies to this adapter: α/r (α/√r under rsLoRA)."""
        return self.alpha / (self.r**0.5 if self.use_rslora else self.r)

    @property
    def target_modules(self) -> list[str] | str:
        tm = self.config.get("target_modules")
        if isinstance(tm, str):  # a regex in PEFT; kept as is
            return tm
        return sorted(tm or [])

    @property
    def base_model_name_or_path(self) -> str:
        return self.config.get("base_model_name_or_path") or ""


def _fail(path: Path, what: str) -> AdapterError:
    return AdapterError(f"adapter folder {path}: {what}")


def read_adapter(adapter_dir: str | Path) -> LoraAdapter:
    """Read a PEFT LoRA folder (adapter_config.json + adapter_model.safetensors).

    Factors are returned in float32 on the CPU. LoRA variants whose weights are not just A and B
    (DoRA, LoRA bias, modules_to_save, per-module rank or alpha patterns, trainable tokens) are
    rejected: merging would silently drop part of the adapter."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(adapter_dir)
    if not path.is_dir():
        raise _fail(path, "not found (expected a PEFT LoRA folder with adapter_config.json)")
    cfg_path = path / ADAPTER_CONFIG
    if not cfg_path.is_file():
        raise _fail(path, f"no {ADAPTER_CONFIG}; not a PEFT adapter folder")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise _fail(path, f"{ADAPTER_CONFIG} is not readable JSON ({e})") from None
    if not isinstance(config, dict):
        raise _fail(path, f"{ADAPTER_CONFIG} is not a JSON object")
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise _fail(path, f"peft_type is {config.get('peft_type')!r}, not LORA")
    for key, bad in (
        ("use_dora", lambda v: bool(v)),
        ("lora_bias", lambda v: bool(v)),
        ("bias", lambda v: v not in (None, "none")),
        ("modules_to_save", lambda v: bool(v)),
        ("rank_pattern", lambda v: bool(v)),
        ("alpha_pattern", lambda v: bool(v)),
        ("target_parameters", lambda v: bool(v)),
        ("trainable_token_indices", lambda v: bool(v)),
        ("fan_in_fan_out", lambda v: bool(v)),
    ):
        if key in config and bad(config[key]):
            raise _fail(path, f"{key}={config[key]!r} is not supported (only plain LoRA on Linear layers merges)")
    if not isinstance(config.get("r"), int) or config["r"] < 1:
        raise _fail(path, f"r={config.get('r')!r} is not a positive integer")

    weights_path = path / ADAPTER_WEIGHTS
    if not weights_path.is_file():
        extra = " (a .bin adapter; only safetensors is read)" if (path / "adapter_model.bin").exists() else ""
        raise _fail(path, f"no {ADAPTER_WEIGHTS}{extra}")
    try:
        tensors = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise _fail(path, f"{ADAPTER_WEIGHTS} is not readable ({e})") from None

    A: dict[str, torch.Tensor] = {}
    B: dict[str, torch.Tensor] = {}
    for key, t in tensors.items():
        m = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.[^.]+)?\.weight", key)
        if m is None:
            raise _fail(path, f"tensor {key!r} is not a LoRA factor (only lora_A / lora_B weights merge)")
        module, which = m.group(1), m.group(2)
        if t.dim() != 2:
            raise _fail(path, f"tensor {key!r} has shape {tuple(t.shape)}; LoRA factors of Linear layers are 2-D")
        (A if which == "A" else B)[module] = t.to(torch.float32)
    if not A:
        raise _fail(path, f"{ADAPTER_WEIGHTS} holds no LoRA factors")
    if set(A) != set(B):
        odd = sorted(set(A) ^ set(B), key=_natural_key)[0]
        raise _fail(path, f"module {odd} has only one of lora_A / lora_B")
    r = config["r"]
    for module in A:
        a, b = A[module], B[module]
        if a.shape[0] != r or b.shape[1] != r:
            raise _fail(path, f"module {module}: lora_A {tuple(a.shape)} / lora_B {tuple(b.shape)} do not have rank r={r}")
    return LoraAdapter(config=config, A=A, B=B, path=path)


def _normalise_base(name: str) -> str:
    name = name.strip().rstrip("/\\")
    p = Path(name).expanduser()
    if name and p.exists():
        return str(p.resolve())
    return name.lower()


def check_compatible(adapters: Sequence[LoraAdapter], same_alpha: bool = False) -> None:
    """Raise AdapterMismatchError unless every adapter targets the same base model, the same
    modules with the same shapes, and has the same r. Compares each adapter to the first.
    `same_alpha`: also require one lora_alpha (needed wherever PEFT's α/r becomes the single c)."""
    if len(adapters) == 0:
        raise AdapterMismatchError("no adapters to merge")
    ref = adapters[0]
    for other in adapters[1:]:
        pair = f"adapters {ref.name} and {other.name}"
        b0, b1 = _normalise_base(ref.base_model_name_or_path), _normalise_base(other.base_model_name_or_path)
        # An empty name (e.g. a model built from a config) carries no information: allow it.
        if b0 and b1 and b0 != b1:
            raise AdapterMismatchError(
                f"{pair} differ: base_model_name_or_path {ref.base_model_name_or_path!r} vs "
                f"{other.base_model_name_or_path!r}"
            )
        if ref.target_modules != other.target_modules:
            raise AdapterMismatchError(
                f"{pair} differ: target_modules {ref.target_modules} vs {other.target_modules}"
            )
        if ref.r != other.r:
            raise AdapterMismatchError(f"{pair} differ: r {ref.r} vs {other.r}")
        if ref.use_rslora != other.use_rslora:
            raise AdapterMismatchError(f"{pair} differ: use_rslora {ref.use_rslora} vs {other.use_rslora}")
        if set(ref.A) != set(other.A):
            only0 = sorted(set(ref.A) - set(other.A), key=_natural_key)
            only1 = sorted(set(other.A) - set(ref.A), key=_natural_key)
            raise AdapterMismatchError(
                f"{pair} differ: adapted modules (only in the first: {only0[:3]}, only in the second: {only1[:3]})"
            )
        for module in ref.modules:
            for which, d0, d1 in (("lora_A", ref.A, other.A), ("lora_B", ref.B, other.B)):
                if d0[module].shape != d1[module].shape:
                    raise AdapterMismatchError(
                        f"{pair} differ: {module}.{which} shape {tuple(d0[module].shape)} vs {tuple(d1[module].shape)}"
                    )
        # α only matters where α/r becomes the one scaling c; there a different α is ambiguous.
        if same_alpha and ref.alpha != other.alpha:
            raise AdapterMismatchError(f"{pair} differ: lora_alpha {ref.alpha} vs {other.alpha}")
