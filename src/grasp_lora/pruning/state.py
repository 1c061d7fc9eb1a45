"""The controller's committed mask over every LoRA factor: apply, stash, restore, commit
(METHOD.md, "The GRASP controller").

Factors are identified by their position in `all_factors(groups)` order (A_i then B_i of each
group), never by id(), so that a state_dict saved by one process loads in another.

Invariants between calls (the training loop calls `rezero()` after every optimizer step):
- `mask[k]` is the committed mask of factor k (True = pruned); all False before the first commit;
- `stash[k]` holds, at the committed positions, the values the weights had when they were
  pruned (zero elsewhere); released entries get these values back.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import torch

from grasp_lora.pruning.groups import FactorGroup, all_factors
from grasp_lora.pruning.masks import check_ratio, prune_mask

__all__ = ["MaskState", "zero_optimizer_state", "ImportanceLike"]

ImportanceLike = Union[Sequence[torch.Tensor], Mapping[int, torch.Tensor]]


def zero_optimizer_state(optimizer: Any, param: torch.Tensor, mask: Optional[torch.Tensor] = None) -> int:
    """Zero `param`'s optimizer state; returns how many state tensors were touched.

    With `mask`: every tensor-valued entry with param's shape (AdamW's exp_avg / exp_avg_sq, SGD
    momentum, Adam's max_exp_avg_sq) at the masked positions; scalar entries such as `step` are
    left alone (METHOD.md, "The GRASP controller"). Without: EVERY state tensor, whole, the 0-dim
    AdamW `step` included, so bias correction restarts: what the authors' scripts do to a factor
    that gets newly pruned entries (`fidelity: authors`). Sharded optimizer states (ZeRO/FSDP) have
    other shapes and are not reached here.
    """
    state = getattr(optimizer, "state", None)
    if state is None or param not in state:
        return 0
    touched = 0
    with torch.no_grad():
        for value in state[param].values():
            if not isinstance(value, torch.Tensor):
                continue
            if mask is None:
                value.zero_()
            elif value.shape == param.shape:
                value.masked_fill_(mask.to(value.device), 0)
            else:
                continue
            touched += 1
    return touched


class MaskState:
    def __init__(self, groups: list[FactorGroup]) -> None:
        self.groups = groups
        self.factors: list[torch.nn.Parameter] = all_factors(groups)
        if not self.factors:
            raise ValueError("MaskState needs at least one factor")
        self._masks = [torch.zeros(p.shape, dtype=torch.bool, device=p.device) for p in self.factors]
        self._stash = [torch.zeros_like(p, memory_format=torch.contiguous_format).detach() for p in self.factors]
        self.committed_ratio: Optional[float] = None
        self._has_commit = False
        self._in_candidate = False
        self.total_entries = sum(p.numel() for p in self.factors)

    # -- masks -------------------------------------------------------------------------------
    @property
    def masks(self) -> list[torch.Tensor]:
        """The committed masks (read-only views; do not modify)."""
        return list(self._masks)

    @property
    def has_commit(self) -> bool:
        return self._has_commit

    def _importance_list(self, importance: ImportanceLike) -> list[torch.Tensor]:
        if isinstance(importance, Mapping):
            missing = [k for k in range(len(self.factors)) if k not in importance]
            if missing:
                raise KeyError(f"importance is missing factor indices {missing[:5]}")
            items = [importance[k] for k in range(len(self.factors))]
        else:
            items = list(importance)
        if len(items) != len(self.factors):
            raise ValueError(f"expected importance for {len(self.factors)} factors, got {len(items)}")
        for k, (imp, p) in enumerate(zip(items, self.factors)):
            if imp.shape != p.shape:
                raise ValueError(f"factor {k}: importance shape {tuple(imp.shape)} != factor shape {tuple(p.shape)}")
        return items

    def masks_at_ratio(self, importance: ImportanceLike, ratio: float, at_least_one: bool = False) -> list[torch.Tensor]:
        """One mask per factor (all_factors order): the floor(ratio*n) least important entries."""
        check_ratio(ratio)
        return [prune_mask(imp, ratio, at_least_one).to(p.device) for imp, p in zip(self._importance_list(importance), self.factors)]

    def _check_masks(self, masks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        masks = list(masks)
        if len(masks) != len(self.factors):
            raise ValueError(f"expected {len(self.factors)} masks (one per factor), got {len(masks)}")
        out = []
        for k, (m, p) in enumerate(zip(masks, self.factors)):
            if m.dtype != torch.bool or m.shape != p.shape:
                raise ValueError(f"mask {k}: expected a bool tensor of shape {tuple(p.shape)}, got {m.dtype} {tuple(m.shape)}")
            out.append(m.to(p.device))
        return out

    def restore_magnitudes(self) -> list[torch.Tensor]:
        """|where(committed, stash, w)| per factor: each entry's magnitude as it would be if every
        committed entry were released (its stashed value back). Ranks which committed entries a
        lower ratio releases: the largest stashed magnitudes first (`fidelity: fixed`)."""
        return [torch.where(m, st, p.detach()).abs() for p, m, st in zip(self.factors, self._masks, self._stash)]

    def committed_sparsity(self) -> float:
        """Fraction of all factor entries in the committed mask (the real sparsity it imposes)."""
        return self.mask_sparsity(self._masks)

    def mask_sparsity(self, masks: Sequence[torch.Tensor]) -> float:
        """Fraction of all factor entries that `masks` (one per factor) would prune."""
        return sum(int(m.sum().item()) for m in masks) / self.total_entries

    # -- weights -----------------------------------------------------------------------------
    def rezero(self) -> None:
        """Zero the committed entries (after every optimizer step: gradients revive them)."""
        if not self._has_commit:
            return
        with torch.no_grad():
            for p, m in zip(self.factors, self._masks):
                p.masked_fill_(m, 0)

    @contextmanager
    def candidate(self, masks: Sequence[torch.Tensor]) -> Iterator[None]:
        """Temporarily replace the committed mask by `masks`; weights restored bit-for-bit on exit.

        Inside: candidate entries are zero; committed entries outside the candidate carry their
        stashed values; everything else is untouched. Costs one clone of the factor tensors.
        """
        if self._in_candidate:
            raise RuntimeError("candidate masks do not nest")
        masks = self._check_masks(masks)
        saved = [p.detach().clone() for p in self.factors]
        self._in_candidate = True
        try:
            with torch.no_grad():
                for p, cand, old, stash in zip(self.factors, masks, self._masks, self._stash):
                    value = torch.where(old, stash, p) if self._has_commit else p
                    p.copy_(value.masked_fill(cand, 0))
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(self.factors, saved):
                    p.copy_(s)
            self._in_candidate = False

    def commit(self, masks: Sequence[torch.Tensor], optimizer: Any = None, ratio: Optional[float] = None,
               optimizer_reset: str = "masked") -> dict[str, int]:
        """Make `masks` the committed mask.

        Newly pruned entries: their current values go to the stash and the weights are zeroed
        there. With an optimizer, `optimizer_reset` says what happens to its state: "masked" zeroes
        every param-shaped state entry at the newly pruned positions (METHOD.md, "The GRASP
        controller"); "whole" zeroes every state tensor of a factor that has newly pruned entries,
        the AdamW `step` included (the authors' scripts). Released entries (committed before, not
        now) get their stashed values back. `ratio` is recorded as `committed_ratio`. Returns counts {"newly_pruned", "released", "pruned"}.
        """
        if optimizer_reset not in ("masked", "whole"):
            raise ValueError(f"optimizer_reset: expected masked or whole, got {optimizer_reset!r}")
        if self._in_candidate:
            raise RuntimeError("cannot commit inside a candidate() block")
        masks = self._check_masks(masks)
        newly_total = released_total = pruned_total = 0
        with torch.no_grad():
            for k, (p, new) in enumerate(zip(self.factors, masks)):
                old = self._masks[k]
                newly = new & ~old
                released = old & ~new
                stash = torch.where(newly, p.detach(), self._stash[k])
                value = torch.where(released, stash, p.detach()).masked_fill(new, 0)
                p.copy_(value)
                self._stash[k] = stash.masked_fill(~new, 0)
                self._masks[k] = new.clone()
                if optimizer is not None:
                    if optimizer_reset == "masked":
                        zero_optimizer_state(optimizer, p, newly)
                    elif bool(newly.any()):
                        zero_optimizer_state(optimizer, p)
                newly_total += int(newly.sum().item())
                released_total += int(released.sum().item())
                pruned_total += int(new.sum().item())
        self._has_commit = True
        self.committed_ratio = None if ratio is None else float(ratio)
        return {"newly_pruned": newly_total, "released": released_total, "pruned": pruned_total}

    # -- resume ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "masks": [m.detach().cpu().clone() for m in self._masks],
            "stash": [s.detach().cpu().clone() for s in self._stash],
            "committed_ratio": self.committed_ratio,
            "has_commit": self._has_commit,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore masks and stash, then re-zero the committed entries of the weights."""
        masks = self._check_masks([torch.as_tensor(m) for m in state["masks"]])
        stash = list(state["stash"])
        if len(stash) != len(self.factors):
            raise ValueError(f"expected {len(self.factors)} stash tensors, got {len(stash)}")
        new_stash = []
        for k, (s, p) in enumerate(zip(stash, self.factors)):
            s = torch.as_tensor(s)
            if s.shape != p.shape:
                raise ValueError(f"stash {k}: shape {tuple(s.shape)} != factor shape {tuple(p.shape)}")
            new_stash.append(s.to(device=p.device, dtype=p.dtype).clone())
        self._masks = [m.clone() for m in masks]
        self._stash = new_stash
        ratio = state.get("committed_ratio")
        self.committed_ratio = None if ratio is None else float(ratio)
        self._has_commit = bool(state.get("has_commit", any(bool(m.any()) for m in masks)))
        self.rezero()
