"""Fixed-ratio pruning during training (METHOD.md, "Pruning at a ratio p"): the grid-search runs and the final run.

After EVERY optimizer step, input-aware importance is recomputed for each A_i and B_i of each
module from that module's decoder-layer input norms, and the floor(p*n) least important entries of
each tensor are zeroed. Nothing is stashed: gradients may revive an entry and a later step may
prune it again (the authors' behaviour).

Input norms come from a norms source (`norms_for_step() -> {layer_index: n}`):
- `TrainForwardNorms` (`importance_inputs: train_forward`, default): accumulated by forward
  pre-hooks during the training forwards since the last optimizer step; no extra forward.
- `FullPassNorms` (`importance_inputs: full_pass`, the authors): an extra no-grad forward over the
  whole training set after each step, through a callable the training code provides.

`AgreementPruner` (benchmarks) computes the masks of both sources each step and records how much
they agree.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, Optional, Protocol

import torch

from grasp_lora.pruning.groups import FactorGroup
from grasp_lora.pruning.importance import input_aware_importance, magnitude_importance
from grasp_lora.pruning.input_norms import LayerInputHooks
from grasp_lora.pruning.masks import check_ratio, mask_agreement, prune_mask

__all__ = [
    "NormsSource",
    "TrainForwardNorms",
    "FullPassNorms",
    "GroupImportanceFn",
    "magnitude_group_importance",
    "input_aware_group_importance",
    "compute_masks",
    "zero_masks_at_ratio",
    "FixedRatioPruner",
    "AgreementPruner",
    "make_norms_source",
    "norm_layout",
]

ReduceFn = Callable[[torch.Tensor], torch.Tensor]


class NormsSource(Protocol):
    def norms_for_step(self) -> dict[int, torch.Tensor]: ...


def norm_layout(groups: list[FactorGroup]) -> dict[int, int]:
    """{decoder layer index: size of its input norms} the groups need (A's input dimension)."""
    return {g.layer_index: int(g.A[0].shape[1]) for g in groups if g.A}


def _collect(
    hooks: LayerInputHooks, reduce_sum: Optional[ReduceFn], layout: Optional[dict[int, int]] = None
) -> dict[int, torch.Tensor]:
    acc = hooks.accumulator
    if reduce_sum is not None and layout is not None:
        return _collect_reduced(acc, reduce_sum, layout)
    layers = acc.layers()
    if not layers:
        return {}
    sums = [acc.sum_of_squares(i) for i in layers]
    if reduce_sum is not None:
        # One collective for all layers: every process must hold the same statistic, or the
        # processes would prune different entries. Sums of squares add across processes.
        sizes = [s.numel() for s in sums]
        home = sums[0].device  # layers may sit on several devices (device_map); gather on one
        flat = reduce_sum(torch.cat([s.reshape(-1).to(home) for s in sums]))
        sums = list(torch.split(flat, sizes))
    return {i: s.clamp_min(0).sqrt() for i, s in zip(layers, sums)}


def _collect_reduced(acc: Any, reduce_sum: ReduceFn, layout: dict[int, int]) -> dict[int, torch.Tensor]:
    """The multi-process statistic over a fixed layout: a process that ran no forward since the
    last step (a short trailing micro-batch gave it no example) still joins the collective, with
    zeros. A layer no process saw is left out (callers report it)."""
    layers = sorted(layout)
    recorded = set(acc.layers())
    home = acc.sum_of_squares(min(recorded)).device if recorded else torch.device("cpu")
    parts, seen = [], []
    for i in layers:
        if i in recorded:
            s = acc.sum_of_squares(i)
            if s.numel() != layout[i]:
                raise ValueError(f"decoder layer {i}: input norms have {s.numel()} features, the factors expect {layout[i]}")
            parts.append(s.reshape(-1).float().to(home))
        else:
            parts.append(torch.zeros(layout[i], dtype=torch.float32, device=home))
        seen.append(1.0 if i in recorded else 0.0)
    flat = reduce_sum(torch.cat(parts + [torch.tensor(seen, device=home)]))
    sizes = [layout[i] for i in layers]
    sums = torch.split(flat[: sum(sizes)], sizes)
    seen_anywhere = flat[sum(sizes) :]
    return {i: s.clamp_min(0).sqrt() for i, s, k in zip(layers, sums, seen_anywhere) if k > 0}


class TrainForwardNorms:
    """Norms from the training forwards since the last optimizer step (then reset).

    The hooks are enabled here and count only forwards run with autograd enabled (the training
    forwards), so evaluation passes under no_grad never leak into the statistic.
    `reduce_sum`: e.g. `lambda t: accelerator.reduce(t, "sum")` with several processes, and
    `layout` ({layer: features}; `FixedRatioPruner` fills it from its groups) so that a process
    without a forward since the last step still joins the sum.
    """

    def __init__(
        self, hooks: LayerInputHooks, reduce_sum: Optional[ReduceFn] = None, layout: Optional[dict[int, int]] = None
    ) -> None:
        self.hooks = hooks
        self.reduce_sum = reduce_sum
        self.layout = layout
        hooks.grad_forwards_only = True
        hooks.enable()

    def on_train_start(self) -> None:
        self.hooks.accumulator.reset()  # nothing before the first training forward counts
        self.hooks.grad_forwards_only = True
        self.hooks.enable()

    def on_train_end(self) -> None:
        self.hooks.disable()

    def norms_for_step(self) -> dict[int, torch.Tensor]:
        norms = _collect(self.hooks, self.reduce_sum, self.layout)
        self.hooks.accumulator.reset()
        if not norms:
            raise RuntimeError(
                "input-aware pruning: the decoder-layer hooks saw no training forward since the last "
                "optimizer step (were the hooks registered on this model's decoder layers?)"
            )
        return norms


class FullPassNorms:
    """The authors' statistic: an extra forward over the whole training set after each step.

    `run_full_pass()` runs that forward (no grad, any batching); the hooks are enabled only
    for its duration. With several processes each runs the pass over its shard of the training
    set and `reduce_sum` adds the shards' statistics up (same `layout` rule as TrainForwardNorms).
    """

    def __init__(
        self,
        hooks: LayerInputHooks,
        run_full_pass: Callable[[], None],
        reduce_sum: Optional[ReduceFn] = None,
        layout: Optional[dict[int, int]] = None,
    ) -> None:
        self.hooks = hooks
        self.run_full_pass = run_full_pass
        self.reduce_sum = reduce_sum
        self.layout = layout
        hooks.disable()

    def on_train_start(self) -> None:
        self.hooks.disable()

    def on_train_end(self) -> None:
        self.hooks.disable()

    def norms_for_step(self) -> dict[int, torch.Tensor]:
        self.hooks.accumulator.reset()
        self.hooks.grad_forwards_only = False  # the pass runs under no_grad
        self.hooks.enable()
        try:
            self.run_full_pass()
        finally:
            self.hooks.disable()
        norms = _collect(self.hooks, self.reduce_sum, self.layout)
        self.hooks.accumulator.reset()
        if not norms:
            raise RuntimeError("input-aware pruning: the full pass reached no decoder layer")
        return norms


def make_norms_source(
    kind: str,
    hooks: LayerInputHooks,
    run_full_pass: Optional[Callable[[], None]] = None,
    reduce_sum: Optional[ReduceFn] = None,
) -> NormsSource:
    """`prune.importance_inputs` -> a norms source."""
    if kind == "train_forward":
        return TrainForwardNorms(hooks, reduce_sum)
    if kind == "full_pass":
        if run_full_pass is None:
            raise ValueError("importance_inputs full_pass needs run_full_pass (a forward over the training set)")
        return FullPassNorms(hooks, run_full_pass, reduce_sum)
    raise ValueError(f"importance_inputs: expected train_forward or full_pass, got {kind!r}")


# -- masks for groups ---------------------------------------------------------------------------
# An importance function maps a group to (importances of its A's, importances of its B's).
GroupImportanceFn = Callable[[FactorGroup], tuple[list[torch.Tensor], list[torch.Tensor]]]


def magnitude_group_importance(group: FactorGroup) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    return [magnitude_importance(a) for a in group.A], [magnitude_importance(b) for b in group.B]


def input_aware_group_importance(norms: dict[int, torch.Tensor]) -> GroupImportanceFn:
    """Input-aware importance of each adapter i of a group, with its decoder layer's norms."""

    def fn(group: FactorGroup) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if group.layer_index not in norms:
            raise KeyError(f"{group.name}: no input norms for decoder layer {group.layer_index}")
        n = norms[group.layer_index]
        pairs = [input_aware_importance(a, b, n) for a, b in zip(group.A, group.B, strict=True)]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    return fn


def compute_masks(
    groups: list[FactorGroup], ratio: float, importance_fn: GroupImportanceFn, at_least_one: bool = False
) -> list[torch.Tensor]:
    """Masks (True = pruned) in all_factors order. All importances of a group are computed
    before any of its factors is zeroed (I(A) depends on B and vice versa)."""
    check_ratio(ratio)
    masks: list[torch.Tensor] = []
    for g in groups:
        imp_a, imp_b = importance_fn(g)
        for imp, p in zip([*imp_a, *imp_b], g.factors(), strict=True):
            masks.append(prune_mask(imp, ratio, at_least_one).to(p.device))
    return masks


def zero_masks_at_ratio(
    groups: list[FactorGroup], ratio: float, importance_fn: GroupImportanceFn, at_least_one: bool = False
) -> list[torch.Tensor]:
    """Compute the masks at `ratio` and zero those entries in place; returns the masks."""
    masks = compute_masks(groups, ratio, importance_fn, at_least_one)
    params = [p for g in groups for p in g.factors()]
    with torch.no_grad():
        for p, m in zip(params, masks):
            p.masked_fill_(m, 0)
    return masks


class FixedRatioPruner:
    """Training-loop hook: input-aware pruning at a fixed ratio after every optimizer step."""

    def __init__(
        self, groups: list[FactorGroup], ratio: float, norms_source: NormsSource, at_least_one: bool = False
    ) -> None:
        self.groups = groups
        self.ratio = check_ratio(ratio)
        self.norms_source = norms_source
        self.at_least_one = at_least_one
        self.steps_pruned = 0
        if getattr(norms_source, "reduce_sum", None) is not None and getattr(norms_source, "layout", None) is None:
            # Several processes: reduce over the layers these groups need, seen locally or not.
            norms_source.layout = norm_layout(groups)

    def on_train_start(self, state: Any) -> None:
        start = getattr(self.norms_source, "on_train_start", None)
        if start is not None:
            start()

    def on_train_end(self, state: Any) -> None:
        end = getattr(self.norms_source, "on_train_end", None)
        if end is not None:
            end()

    def on_optimizer_step(self, state: Any) -> None:
        timer = getattr(state, "timer", None)
        with timer.phase("pruning") if timer is not None else nullcontext():
            self.prune(self.norms_source.norms_for_step())

    def prune(self, norms: dict[int, torch.Tensor]) -> list[torch.Tensor]:
        self.steps_pruned += 1
        if self.ratio == 0.0 and not self.at_least_one:
            # floor(0 * n) = 0 everywhere: nothing to zero, skip the dW products.
            return [torch.zeros(p.shape, dtype=torch.bool, device=p.device) for g in self.groups for p in g.factors()]
        return zero_masks_at_ratio(self.groups, self.ratio, input_aware_group_importance(norms), self.at_least_one)


class AgreementPruner:
    """Fixed-ratio pruner hook that computes the input-aware masks from BOTH norm sources at
    every optimizer step (train_forward and full_pass, on the same weights), records how much
    they agree (`records`: one `masks.mask_agreement` per step), and prunes with `apply`'s masks.
    The trajectory is therefore exactly the one of a plain run with `apply` (the extra no-grad
    pass changes no weight). The work of the other source is timed apart (timer phase
    "agreement_extra"), so the run's time minus that phase is the plain run's time."""

    def __init__(self, groups: list[FactorGroup], ratio: float, train_forward: NormsSource,
                 full_pass: NormsSource, at_least_one: bool, apply: str) -> None:
        self.groups, self.ratio, self.at_least_one = groups, check_ratio(ratio), at_least_one
        sources = {"train_forward": train_forward, "full_pass": full_pass}
        if apply not in sources:
            raise ValueError(f"apply: expected train_forward or full_pass, got {apply!r}")
        for source in sources.values():
            if getattr(source, "reduce_sum", None) is not None and getattr(source, "layout", None) is None:
                source.layout = norm_layout(groups)
        self.applied = sources.pop(apply)
        self.other = sources.popitem()[1]
        self.apply = apply
        self.records: list[dict[str, Any]] = []

    def on_train_start(self, state: Any) -> None:
        self.applied.on_train_start()
        self.other.on_train_start()

    def on_train_end(self, state: Any) -> None:
        self.applied.on_train_end()
        self.other.on_train_end()

    def _masks(self, source: NormsSource) -> list[torch.Tensor]:
        return compute_masks(self.groups, self.ratio, input_aware_group_importance(source.norms_for_step()),
                             self.at_least_one)

    def on_optimizer_step(self, state: Any) -> None:
        with state.timer.phase("pruning"):
            applied = self._masks(self.applied)
        with state.timer.phase("agreement_extra"):
            other = self._masks(self.other)
            tf, fp = (applied, other) if self.apply == "train_forward" else (other, applied)
            self.records.append({"step": int(state.step), **mask_agreement(tf, fp)})
        with state.timer.phase("pruning"):
            params = [p for g in self.groups for p in g.factors()]
            with torch.no_grad():
                for p, m in zip(params, applied, strict=True):
                    p.masked_fill_(m, 0)
