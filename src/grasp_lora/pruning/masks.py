"""Pruning masks at a ratio (METHOD.md, "Pruning at a ratio p"): per tensor, the floor(p*n) least important entries.

A mask is a bool tensor of the factor's shape, True = pruned (set to zero). Ties in importance
are broken by the lowest flat (row-major) index first, via a stable ascending sort, so masks are
deterministic and identical on every process.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

__all__ = [
    "check_ratio",
    "prune_count",
    "prune_order",
    "mask_from_order",
    "prune_mask",
    "sparsity",
    "mask_agreement",
]


def check_ratio(ratio: float) -> float:
    r = float(ratio)
    if not (0.0 <= r < 1.0):  # also rejects NaN
        raise ValueError(f"pruning ratio must be in [0, 1), got {ratio!r}")
    return r


def prune_count(n: int, ratio: float, at_least_one: bool = False) -> int:
    """floor(ratio * n); max(1, .) with `at_least_one` (the authors' allocator), never above n.

    The product is rounded to 9 decimals before the floor so that a decimal ratio means what it
    says: 0.29 * 100 is 28.999999999999996 in binary floating point, but prunes 29 entries.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    r = check_ratio(ratio)
    k = math.floor(round(r * n, 9))
    if at_least_one:
        k = max(1, k)
    return min(k, n)


def prune_order(importance: torch.Tensor) -> torch.Tensor:
    """Flat indices from least to most important; ties: lowest index first (stable sort).

    Sorting once and slicing the prefix for each ratio gives nested masks and is cheap when
    several ratios are tried on the same importance (the controller's candidates).
    """
    flat = importance.detach().reshape(-1)
    if flat.is_floating_point() and flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()
    return torch.sort(flat, stable=True).indices


def committed_first(order: torch.Tensor, committed: torch.Tensor) -> torch.Tensor:
    """`order` (flat indices, least important first) with the committed entries moved to the
    front, each part keeping its relative order. Masks cut from the result nest around the
    committed mask: a ratio at or above the committed one keeps it and prunes more; one below it
    releases the committed entries that come last in `order`."""
    flat = committed.reshape(-1)[order]
    return torch.cat([order[flat], order[~flat]])


def mask_from_order(
    order: torch.Tensor, shape: torch.Size | tuple[int, ...], ratio: float, at_least_one: bool = False
) -> torch.Tensor:
    n = order.numel()
    k = prune_count(n, ratio, at_least_one)
    flat = torch.zeros(n, dtype=torch.bool, device=order.device)
    flat[order[:k]] = True
    return flat.view(shape)


def prune_mask(importance: torch.Tensor, ratio: float, at_least_one: bool = False) -> torch.Tensor:
    """Bool mask (True = pruned) of exactly prune_count(numel, ratio) lowest-importance entries."""
    check_ratio(ratio)
    return mask_from_order(prune_order(importance), importance.shape, ratio, at_least_one)


def sparsity(tensors: Iterable[torch.Tensor]) -> float:
    """Fraction of exact zeros over all entries of `tensors` (0.0 when there are none)."""
    zeros = 0
    total = 0
    for t in tensors:
        zeros += int((t.detach() == 0).sum().item())
        total += t.numel()
    return zeros / total if total else 0.0


def mask_agreement(masks_a: Iterable[torch.Tensor], masks_b: Iterable[torch.Tensor]) -> dict[str, float]:
    """How alike two mask sets are (e.g. train_forward vs full_pass norms, BENCHMARKS.md's fixed-ratio section).

    `entries`: fraction of all entries on which the masks agree (pruned in both or kept in both);
    `pruned`: |A and B| / |A or B| over the pruned entries (1.0 when neither prunes anything).
    """
    same = total = both = either = 0
    for a, b in zip(masks_a, masks_b, strict=True):
        if a.shape != b.shape:
            raise ValueError(f"mask shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
        a, b = a.bool(), b.bool().to(a.device)
        same += int((a == b).sum().item())
        total += a.numel()
        both += int((a & b).sum().item())
        either += int((a | b).sum().item())
    return {"entries": same / total if total else 1.0, "pruned": both / either if either else 1.0}
