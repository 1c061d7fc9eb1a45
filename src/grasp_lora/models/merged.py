"""The adaptive merge (METHOD.md, "Adaptive merge"): K LoRA adapters of one base model, trained jointly as one module.

For a target module with frozen weight W, the merged module computes

    y = W x + c · (Σ_i B_i) (Σ_i A_i) x

with every A_i (r × d_in) and B_i (d_out × r) trainable and the backbone frozen. The product is
evaluated on the low-rank path ((ΣA_i) x first, then ΣB_i): the d_out × d_in matrix is never
formed. Cross terms B_i A_j (i ≠ j) come out of the two sums; they are part of the method.
c = 1 under `scaling: none` (the authors load the raw factors and drop PEFT's α/r) and c = α/r
under `scaling: lora`.

`dense=True` (opt-in, benchmarks only) is the authors' formulation of the same function: the
d_out × d_in product c·(ΣB)(ΣA) is materialised in every forward and applied as one matmul. It
exists so that `python -m benchmarks.bench_fixed_ratio` can time it against the low-rank default; outputs
and gradients are equal up to floating-point rounding.

Here: the module `MergedLoRALinear` (math only, no I/O) and the model plumbing: `merge_adapters`
/ `merge_loaded_adapters` (inject), `unmerge`, `factor_groups`, `trainable_factors`. Adapters are
read by `models.peft_adapter`; a merged state is saved and re-loaded by `models.merged_state`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from grasp_lora.models.peft_adapter import AdapterMismatchError, LoraAdapter, check_compatible, read_adapter
from grasp_lora.pruning.groups import FactorGroup, all_factors

SCALING_MODES = ("none", "lora")


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


def iter_merged_factor_tensors(model: nn.Module) -> Iterable[tuple[str, torch.Tensor, torch.Tensor]]:
    """(path, ΣA, ΣB) per merged module, detached float32 on CPU: the rank-r LoRA it equals."""
    with torch.no_grad():
        for path, m in merged_modules(model):
            yield path, m.sum_A().detach().to("cpu").clone(), m.sum_B().detach().to("cpu").clone()
