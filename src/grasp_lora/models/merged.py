"""The adaptive merge (SPEC 3): K LoRA adapters of one base model, trained jointly as one module.

For a target module with frozen weight W, the merged module computes

    y = W x + c · (Σ_i B_i) (Σ_i A_i) x

with every A_i (r × d_in) and B_i (d_out × r) trainable and the backbone frozen. The product is
evaluated on the low-rank path ((ΣA_i) x first, then ΣB_i): the d_out × d_in matrix is never
formed. Cross terms B_i A_j (i ≠ j) come out of the two sums; they are part of the method.
c = 1 under `scaling: none` (the authors load the raw factors and drop PEFT's α/r) and c = α/r
under `scaling: lora`.

`dense=True` (opt-in, benchmarks only) is the authors' formulation of the same function: the
d_out × d_in product c·(ΣB)(ΣA) is materialised in every forward and applied as one matmul. It
exists so that benchmarks/bench_fixed_ratio.py can time it against the low-rank default; outputs
and gradients are equal up to floating-point rounding.

This file has three layers, kept apart:
- adapter data: `LoraAdapter`, `read_adapter` (a PEFT LoRA folder → tensors), `check_compatible`;
- the module: `MergedLoRALinear` (math only, no I/O);
- model plumbing: `merge_adapters` / `merge_loaded_adapters` (inject), `unmerge`, `factor_groups`,
  `trainable_factors`, `save_merged_factors` / `load_merged_factors` (resume a merged state).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from grasp_lora.pruning.groups import FactorGroup, all_factors

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MERGED_FACTORS = "merged_factors.safetensors"
MERGE_INFO = "merge_info.json"
# PEFT saves a LoRA's tensors under the PeftModel's path: "base_model.model." + the module's path
# inside the plain model, then ".lora_A.weight" / ".lora_B.weight".
PEFT_PREFIX = "base_model.model."
SCALING_MODES = ("none", "lora")


class AdapterError(ValueError):
    """An adapter folder is missing, unreadable, not a LoRA, or uses a LoRA feature we cannot merge."""


class AdapterMismatchError(ValueError):
    """Two adapters (or an adapter and the model) cannot be merged; the message names both and the difference."""


# ----------------------------------------------------------------------------------------------
# Adapter data


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


# ----------------------------------------------------------------------------------------------
# The merged module (math only)


class MergedLoRALinear(nn.Module):
    """A frozen nn.Linear plus K LoRA factor pairs: y = base(x) + c · (ΣB_i)(ΣA_i) x.

    Factors are float32 master weights (a bf16 backbone keeps fp32 optimizer updates); they are
    summed in float32 and cast to x's dtype in forward. No dropout: dropout belongs to adapter
    training (stage 1), the authors' merged module has none."""

    def __init__(
        self,
        base: nn.Linear,
        A: Sequence[torch.Tensor],
        B: Sequence[torch.Tensor],
        scaling: float,
        dense: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"MergedLoRALinear wraps nn.Linear, got {type(base).__name__}")
        if len(A) == 0 or len(A) != len(B):
            raise ValueError(f"need K >= 1 pairs of factors, got {len(A)} A and {len(B)} B")
        d_out, d_in = base.weight.shape
        r = A[0].shape[0]
        for i, (a, b) in enumerate(zip(A, B)):
            if tuple(a.shape) != (r, d_in) or tuple(b.shape) != (d_out, r):
                raise ValueError(
                    f"factor pair {i}: A {tuple(a.shape)} / B {tuple(b.shape)} do not fit a Linear "
                    f"{d_in}->{d_out} at rank {r}"
                )
        self.base = base
        dev = base.weight.device
        self.lora_A = nn.ParameterList(
            [nn.Parameter(a.detach().to(device=dev, dtype=torch.float32).clone()) for a in A]
        )
        self.lora_B = nn.ParameterList(
            [nn.Parameter(b.detach().to(device=dev, dtype=torch.float32).clone()) for b in B]
        )
        self.scaling = float(scaling)
        # Opt-in, the authors' formulation: form c·(ΣB)(ΣA) (d_out × d_in) in every forward.
        self.dense = bool(dense)

    # Some model code reads `proj.weight` / `in_features` of the module it called; forward them.
    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def r(self) -> int:
        return self.lora_A[0].shape[0]

    @property
    def num_adapters(self) -> int:
        return len(self.lora_A)

    def sum_A(self) -> torch.Tensor:
        """ΣA_i (float32, differentiable)."""
        return torch.stack(list(self.lora_A)).sum(0)

    def sum_B(self) -> torch.Tensor:
        """ΣB_i (float32, differentiable)."""
        return torch.stack(list(self.lora_B)).sum(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        # Sum the K factors at float32 or better (fp64 inputs get an fp64 sum), then cast to x's
        # dtype: a bf16 model gets fp32-accurate sums, a fp64 check gets exact ones.
        acc = torch.promote_types(torch.float32, x.dtype)
        a = torch.stack([p.to(acc) for p in self.lora_A]).sum(0).to(x.dtype)
        b = torch.stack([p.to(acc) for p in self.lora_B]).sum(0).to(x.dtype)
        if self.dense:
            # The authors' formulation (benchmarks only): the d_out × d_in update, every forward.
            return out + F.linear(x, self.scaling * (b @ a))
        # Low-rank path: (r × d_in) then (d_out × r); never the d_out × d_in product.
        return out + self.scaling * F.linear(F.linear(x, a), b)

    def extra_repr(self) -> str:
        dense = ", dense" if self.dense else ""
        return f"in={self.in_features}, out={self.out_features}, r={self.r}, K={self.num_adapters}, c={self.scaling:g}{dense}"


# ----------------------------------------------------------------------------------------------
# Model plumbing


@dataclass
class MergeInfo:
    """What a merge did; written next to saved factors and exported adapters."""

    scaling_mode: str
    scaling: float  # c
    adapter_dirs: list[str]
    r: int
    alpha: float
    target_modules: list[str] | str
    base_model_name_or_path: str
    num_adapters: int
    modules: list[str] = field(default_factory=list)
    use_rslora: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MergeInfo":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def resolve_scaling(mode: str, adapter: LoraAdapter) -> float:
    """c for a scaling mode: 1 for "none" (the authors), PEFT's α/r for "lora"."""
    if mode == "none":
        return 1.0
    if mode == "lora":
        return adapter.peft_scaling
    raise ValueError(f"merge scaling: expected one of {', '.join(SCALING_MODES)}, got {mode!r}")


def merged_modules(model: nn.Module) -> list[tuple[str, MergedLoRALinear]]:
    """(path, module) for every MergedLoRALinear, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, MergedLoRALinear)]


def check_plain_model(model: nn.Module) -> None:
    if merged_modules(model):
        raise ValueError("the model already holds merged LoRA modules; call unmerge(model) first")
    try:
        from peft import PeftModel
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover - peft is a dependency
        return
    if isinstance(model, PeftModel) or any(isinstance(m, LoraLayer) for m in model.modules()):
        raise ValueError("expected a plain Hugging Face model, got one with PEFT adapters injected")


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, child, module)


def _plan(model: nn.Module, adapters: Sequence[LoraAdapter]) -> dict[str, nn.Linear]:
    """Map each adapted module path to the model's Linear, checking shapes; inject nothing."""
    ref = adapters[0]
    plan: dict[str, nn.Linear] = {}
    for path in ref.modules:
        try:
            target = model.get_submodule(path)
        except AttributeError:
            raise AdapterMismatchError(
                f"adapter {ref.name} and the model differ: the model has no module {path}"
            ) from None
        if not isinstance(target, nn.Linear):
            raise AdapterMismatchError(
                f"adapter {ref.name} and the model differ: {path} is a {type(target).__name__}, not nn.Linear"
            )
        d_out, d_in = target.weight.shape
        a, b = ref.A[path], ref.B[path]
        if a.shape[1] != d_in or b.shape[0] != d_out:
            raise AdapterMismatchError(
                f"adapter {ref.name} and the model differ: {path} is {d_in}->{d_out}, the adapter's "
                f"factors are A {tuple(a.shape)} / B {tuple(b.shape)}"
            )
        plan[path] = target
    return plan


def merge_loaded_adapters(
    model: nn.Module,
    adapters: Sequence[LoraAdapter],
    scaling: str | float = "none",
    freeze_backbone: bool = True,
    dense: bool = False,
) -> MergeInfo:
    """Inject MergedLoRALinear modules built from in-memory adapters (see `merge_adapters`).

    `scaling` is a mode ("none" | "lora") or an explicit c. Everything is checked before the model
    is touched, so a mismatch leaves the model as it was. `dense`: the authors' dense-ΔW forward
    (benchmarks only; see MergedLoRALinear)."""
    check_compatible(adapters, same_alpha=scaling == "lora")
    ref = adapters[0]
    if isinstance(scaling, str):
        c, mode = resolve_scaling(scaling, ref), scaling
    else:
        c, mode = float(scaling), "explicit"
    check_plain_model(model)
    plan = _plan(model, adapters)

    if freeze_backbone:
        for p in model.parameters():
            p.requires_grad_(False)
    for path, linear in plan.items():
        module = MergedLoRALinear(
            linear, [ad.A[path] for ad in adapters], [ad.B[path] for ad in adapters], c, dense=dense
        )
        module.lora_A.requires_grad_(True)
        module.lora_B.requires_grad_(True)
        _set_submodule(model, path, module)
    return MergeInfo(
        scaling_mode=mode,
        scaling=c,
        adapter_dirs=[ad.name for ad in adapters],
        r=ref.r,
        alpha=ref.alpha,
        target_modules=ref.target_modules,
        base_model_name_or_path=next((ad.base_model_name_or_path for ad in adapters if ad.base_model_name_or_path), ""),
        num_adapters=len(adapters),
        modules=list(plan),
        use_rslora=ref.use_rslora,
    )


def merge_adapters(
    model: nn.Module, adapter_dirs: Sequence[str | Path], scaling: str = "none", dense: bool = False
) -> MergeInfo:
    """Replace each adapted module of a plain HF causal LM by a MergedLoRALinear holding the
    factors of all K adapters. The backbone is frozen (requires_grad False on every base
    parameter); every factor is trainable. c = 1 for scaling "none", α/r for "lora".
    `dense=True` selects the authors' dense-ΔW forward (opt-in, for benchmarks; same function).

    All adapters are read and checked (AdapterMismatchError) before anything is injected."""
    if scaling not in SCALING_MODES:
        raise ValueError(f"merge scaling: expected one of {', '.join(SCALING_MODES)}, got {scaling!r}")
    if len(adapter_dirs) == 0:
        raise ValueError("merge_adapters: no adapter folders given")
    adapters = [read_adapter(d) for d in adapter_dirs]
    return merge_loaded_adapters(model, adapters, scaling, dense=dense)


def unmerge(model: nn.Module) -> nn.Module:
    """Put the plain Linears back (factors dropped). requires_grad of the backbone is left as is."""
    for path, module in merged_modules(model):
        _set_submodule(model, path, module.base)
    return model


_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks)\.(\d+)\.")


def layer_index(path: str) -> int:
    """The decoder layer index in a module path (`model.layers.3.self_attn.q_proj` → 3)."""
    m = _LAYER_RE.search(path)
    if m is None:
        raise ValueError(f"cannot find a decoder layer index (layers.<i>.) in module path {path!r}")
    return int(m.group(1))


def set_dense(model: nn.Module, dense: bool) -> int:
    """Switch every merged module between the low-rank (default) and the authors' dense-ΔW
    forward; returns how many modules were switched. Benchmarks only."""
    mods = merged_modules(model)
    for _, m in mods:
        m.dense = bool(dense)
    return len(mods)


def factor_groups(model: nn.Module) -> list[FactorGroup]:
    """One FactorGroup per merged module, in module order."""
    return [
        FactorGroup(name=path, layer_index=layer_index(path), A=list(m.lora_A), B=list(m.lora_B))
        for path, m in merged_modules(model)
    ]


def trainable_factors(model: nn.Module) -> list[nn.Parameter]:
    """Every A_i and B_i of every merged module (what the optimizer trains)."""
    return all_factors(factor_groups(model))


def merged_scaling(model: nn.Module) -> float:
    """The c shared by all merged modules."""
    mods = merged_modules(model)
    if not mods:
        raise ValueError("the model holds no merged LoRA modules (call merge_adapters first)")
    cs = {m.scaling for _, m in mods}
    if len(cs) != 1:
        raise ValueError(f"merged modules disagree on the scaling c: {sorted(cs)}")
    return cs.pop()


def factor_sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero entries over all factors of all merged modules."""
    params = trainable_factors(model)
    total = sum(p.numel() for p in params)
    zeros = sum(int((p.detach() == 0).sum()) for p in params)
    return zeros / total if total else 0.0


# ----------------------------------------------------------------------------------------------
# Saving and re-loading a merged state (resume; the unpruned start point of the final run)


def save_merged_factors(model: nn.Module, out_dir: str | Path, info: MergeInfo) -> Path:
    """Write every merged module's K factor pairs (safetensors) + merge_info.json, atomically."""
    from safetensors.torch import save

    from grasp_lora.io import atomic_write_bytes, write_json

    mods = merged_modules(model)
    if not mods:
        raise ValueError("save_merged_factors: the model holds no merged LoRA modules")
    tensors: dict[str, torch.Tensor] = {}
    for path, m in mods:
        for i, (a, b) in enumerate(zip(m.lora_A, m.lora_B)):
            tensors[f"{path}.lora_A.{i}"] = a.detach().to("cpu", torch.float32).contiguous()
            tensors[f"{path}.lora_B.{i}"] = b.detach().to("cpu", torch.float32).contiguous()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = info.to_dict()
    meta.update(scaling=merged_scaling(model), modules=[p for p, _ in mods], num_adapters=mods[0][1].num_adapters)
    # Factors first, info last: merge_info.json present means the factors beside it are whole.
    atomic_write_bytes(out / MERGED_FACTORS, save(tensors, metadata={"format": "pt"}))
    write_json(out / MERGE_INFO, meta)
    return out


def load_merged_factors(model: nn.Module, factors_dir: str | Path) -> MergeInfo:
    """Load factors written by `save_merged_factors`.

    On a plain model the merged modules are injected (backbone frozen); on a model merged with
    the same layout the values are copied in place, so Parameter identities (and optimizer
    references to them) survive."""
    from safetensors.torch import load_file

    src = Path(factors_dir)
    info_path, fac_path = src / MERGE_INFO, src / MERGED_FACTORS
    if not info_path.is_file() or not fac_path.is_file():
        raise AdapterError(f"merged factors folder {src}: expected {MERGE_INFO} and {MERGED_FACTORS}")
    try:
        info = MergeInfo.from_dict(json.loads(info_path.read_text(encoding="utf-8")))
        tensors = load_file(str(fac_path), device="cpu")
    except Exception as e:  # one clear line for any corrupt file
        raise AdapterError(f"merged factors folder {src}: not readable ({e})") from None
    K = info.num_adapters
    by_module: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for path in info.modules:
        try:
            by_module[path] = (
                [tensors[f"{path}.lora_A.{i}"] for i in range(K)],
                [tensors[f"{path}.lora_B.{i}"] for i in range(K)],
            )
        except KeyError as e:
            raise AdapterError(f"merged factors folder {src}: missing tensor {e.args[0]}") from None

    existing = dict(merged_modules(model))
    if existing:
        if set(existing) != set(by_module):
            raise AdapterMismatchError(
                f"merged factors {src} and the model's merged modules differ: "
                f"{len(by_module)} saved modules vs {len(existing)} in the model"
            )
        for path, (As, Bs) in by_module.items():
            m = existing[path]
            if m.num_adapters != K or any(
                p.shape != t.shape for p, t in zip([*m.lora_A, *m.lora_B], [*As, *Bs])
            ):
                raise AdapterMismatchError(f"merged factors {src} and the model differ at {path}: K or shapes")
        with torch.no_grad():
            for path, (As, Bs) in by_module.items():
                m = existing[path]
                for p, t in zip([*m.lora_A, *m.lora_B], [*As, *Bs]):
                    p.copy_(t.to(p.device, p.dtype))
                m.scaling = float(info.scaling)
        return info

    # Plain model: inject through the same path as a fresh merge (same checks, same freezing).
    adapters = [
        LoraAdapter(
            config={
                "r": info.r,
                "lora_alpha": info.alpha,
                "target_modules": info.target_modules,
                "use_rslora": info.use_rslora,
                "base_model_name_or_path": info.base_model_name_or_path,
            },
            A={p: by_module[p][0][i] for p in by_module},
            B={p: by_module[p][1][i] for p in by_module},
            path=src / f"adapter{i}",
        )
        for i in range(K)
    ]
    merge_loaded_adapters(model, adapters, float(info.scaling))
    return info


def iter_merged_factor_tensors(model: nn.Module) -> Iterable[tuple[str, torch.Tensor, torch.Tensor]]:
    """(path, ΣA, ΣB) per merged module, detached float32 on CPU: the rank-r LoRA it equals."""
    with torch.no_grad():
        for path, m in merged_modules(model):
            yield path, m.sum_A().detach().to("cpu").clone(), m.sum_B().detach().to("cpu").clone()
