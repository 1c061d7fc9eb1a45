"""LoRAHub on causal LMs (METHOD.md, "Baselines"): a gradient-free search of per-adapter weights.

For weights w ∈ [weight_min, weight_max]^K the combined adapter is A = Σ w_i A_i, B = Σ w_i B_i
(both factors weighted, as LoRAHub does), applied with the source adapters' own PEFT scaling α/r.
The objective is the few-shot loss on target train examples plus l1 · Σ|w_i|, minimised with a
nevergrad optimizer (NGOpt by default) under a budget of `steps` evaluations.

Split in three, so the search can be tested without a model:
- `lorahub_search(K, loss_fn, cfg, seed)`: the optimisation, model-agnostic;
- `combine_adapters(adapters, w)`: the math;
- `attach_combination(model, adapters)` / `lorahub_merge(...)`: model plumbing, reusing the merged
  module (K = 1, c = α/r) and the PEFT writer of models.export.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from grasp_lora.config import LoraHubConfig
from grasp_lora.models.export import write_peft_adapter
from grasp_lora.models.merged import merge_loaded_adapters, merged_modules, unmerge
from grasp_lora.models.peft_adapter import LoraAdapter, check_compatible, read_adapter

__all__ = [
    "LORAHUB_INFO",
    "LoraHubResult",
    "attach_combination",
    "combine_adapters",
    "lorahub_merge",
    "lorahub_search",
    "write_peft_adapter",
]

LORAHUB_INFO = "grasp_lora_lorahub.json"
# Told to the optimizer in place of a non-finite loss, so one diverging candidate cannot break it.
_BAD_OBJECTIVE = 1e9


def lorahub_search(
    num_adapters: int,
    loss_fn: Callable[[np.ndarray], float],
    cfg: LoraHubConfig,
    seed: int = 42,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Minimise loss_fn(w) + cfg.l1 · Σ|w_i| over w ∈ [weight_min, weight_max]^K.

    Returns the best evaluated weights (lowest objective, earliest on ties) and the history, one
    record per evaluation: step, weights, loss, l1_penalty, objective. We return the best point
    seen rather than nevergrad's recommendation: with a deterministic loss it is never worse, and
    its loss is one we actually measured (the recommendation is kept in the last record)."""
    import nevergrad as ng

    if num_adapters < 1:
        raise ValueError(f"lorahub: need at least one adapter, got {num_adapters}")
    if cfg.optimizer not in ng.optimizers.registry:
        raise ValueError(f"lorahub.optimizer: unknown nevergrad optimizer {cfg.optimizer!r}")
    if not cfg.weight_min < cfg.weight_max:
        raise ValueError("lorahub.weight_min: must be below lorahub.weight_max")
    param = ng.p.Array(shape=(num_adapters,), lower=cfg.weight_min, upper=cfg.weight_max)
    # Seeded: the same seed gives the same candidates and so the same weights.
    param.random_state = np.random.RandomState(seed)
    optimizer = ng.optimizers.registry[cfg.optimizer](parametrization=param, budget=cfg.steps, num_workers=1)

    history: list[dict[str, Any]] = []
    with warnings.catch_warnings():
        # NGOpt's COBYLA stage complains about its own internal tolerances; nothing for users.
        warnings.filterwarnings("ignore", message=r"COBYLA", category=UserWarning)
        _run(optimizer, loss_fn, cfg, history)
        recommendation = np.asarray(optimizer.provide_recommendation().value, dtype=np.float64)
    finite = [h for h in history if math.isfinite(h["objective"])]
    if not finite:
        raise ValueError("lorahub: every candidate gave a non-finite loss")
    best = min(finite, key=lambda h: h["objective"])  # min keeps the earliest on ties
    history[-1]["recommendation"] = recommendation.tolist()
    return np.asarray(best["weights"], dtype=np.float64), history


def _run(optimizer: Any, loss_fn: Callable[[np.ndarray], float], cfg: LoraHubConfig,
         history: list[dict[str, Any]]) -> None:
    for step in range(cfg.steps):
        cand = optimizer.ask()
        w = np.asarray(cand.value, dtype=np.float64).copy()
        loss = float(loss_fn(w.copy()))
        penalty = float(cfg.l1 * np.abs(w).sum())
        objective = loss + penalty
        optimizer.tell(cand, objective if math.isfinite(objective) else _BAD_OBJECTIVE)
        history.append(
            {"step": step, "weights": w.tolist(), "loss": loss, "l1_penalty": penalty, "objective": objective}
        )


def combine_adapters(adapters: Sequence[LoraAdapter], weights: Sequence[float] | np.ndarray) -> LoraAdapter:
    """A = Σ w_i A_i and B = Σ w_i B_i per module; r, lora_alpha (so the PEFT scaling α/r),
    target modules and base model are the first adapter's (all must match)."""
    w = [float(x) for x in np.asarray(weights, dtype=np.float64).reshape(-1)]
    if len(w) != len(adapters):
        raise ValueError(f"lorahub: {len(w)} weights for {len(adapters)} adapters")
    # One α: the combined adapter is applied with the sources' α/r.
    check_compatible(adapters, same_alpha=True)
    ref = adapters[0]
    A: dict[str, torch.Tensor] = {}
    B: dict[str, torch.Tensor] = {}
    for module in ref.modules:
        # Accumulate in float64: weights can cancel, and the result is written in float32.
        A[module] = sum(wi * ad.A[module].double() for wi, ad in zip(w, adapters)).float()
        B[module] = sum(wi * ad.B[module].double() for wi, ad in zip(w, adapters)).float()
    config = {
        "r": ref.r,
        "lora_alpha": ref.config.get("lora_alpha", ref.r),
        "target_modules": ref.target_modules,
        "use_rslora": ref.use_rslora,
        "base_model_name_or_path": next((a.base_model_name_or_path for a in adapters if a.base_model_name_or_path), ""),
    }
    return LoraAdapter(config=config, A=A, B=B, path=None)


def attach_combination(model: nn.Module, adapters: Sequence[LoraAdapter]) -> Callable[[np.ndarray], None]:
    """Inject one LoRA slot (a K = 1 merged module with c = α/r, i.e. exactly what PEFT computes
    for the combined adapter) and return set_weights(w), which writes Σ w_i A_i, Σ w_i B_i into it
    in place. `unmerge(model)` removes it."""
    start = combine_adapters(adapters, np.zeros(len(adapters)))
    merge_loaded_adapters(model, [start], scaling="lora")
    mods = dict(merged_modules(model))
    # Stacked per module once, so each candidate costs one weighted sum per factor.
    stacked = {
        m: (torch.stack([ad.A[m] for ad in adapters]), torch.stack([ad.B[m] for ad in adapters]))
        for m in start.modules
    }

    def set_weights(w: np.ndarray) -> None:
        wt = torch.as_tensor(np.asarray(w, dtype=np.float64).reshape(-1), dtype=torch.float64)
        if wt.numel() != len(adapters):
            raise ValueError(f"lorahub: {wt.numel()} weights for {len(adapters)} adapters")
        with torch.no_grad():
            for m, (sa, sb) in stacked.items():
                mod = mods[m]
                mod.lora_A[0].copy_(torch.tensordot(wt, sa.double(), dims=1).to(mod.lora_A[0]))
                mod.lora_B[0].copy_(torch.tensordot(wt, sb.double(), dims=1).to(mod.lora_B[0]))

    return set_weights


@dataclass
class LoraHubResult:
    weights: np.ndarray
    history: list[dict[str, Any]]
    out_dir: Path
    scaling: float


def lorahub_merge(
    model: nn.Module,
    adapter_dirs: Sequence[str | Path],
    loss_of_model: Callable[[nn.Module], float],
    cfg: LoraHubConfig,
    out_dir: str | Path,
    seed: int = 42,
) -> LoraHubResult:
    """Search LoRAHub weights with `loss_of_model(model)` (the caller's few-shot loss on target
    train examples) and write the combined adapter as a PEFT folder + grasp_lora_lorahub.json.
    The model is left plain afterwards."""
    adapters = [read_adapter(d) for d in adapter_dirs]
    check_compatible(adapters, same_alpha=True)
    set_weights = attach_combination(model, adapters)
    try:

        def loss_fn(w: np.ndarray) -> float:
            set_weights(w)
            with torch.no_grad():
                return float(loss_of_model(model))

        weights, history = lorahub_search(len(adapters), loss_fn, cfg, seed)
    finally:
        unmerge(model)
    combined = combine_adapters(adapters, weights)
    scaling = combined.peft_scaling
    best = min((h for h in history if math.isfinite(h["objective"])), key=lambda h: h["objective"])
    write_peft_adapter(
        combined,
        out_dir,
        side_info={
            "method": "lorahub",
            "adapter_dirs": [str(d) for d in adapter_dirs],
            "weights": weights.tolist(),
            "scaling": scaling,
            "scaling_rule": "peft alpha/r of the source adapters",
            "loss": best["loss"],
            "objective": best["objective"],
            "l1": cfg.l1,
            "steps": cfg.steps,
            "optimizer": cfg.optimizer,
            "weight_bounds": [cfg.weight_min, cfg.weight_max],
            "seed": seed,
            "history": history,
        },
        side_file=LORAHUB_INFO,
    )
    return LoraHubResult(weights=weights, history=history, out_dir=Path(out_dir), scaling=scaling)
