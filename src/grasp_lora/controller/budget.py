"""How many controller rounds fit in a budget of grid points (`controller.budget_grid_points`).

Cost is counted in example passes, the unit that dominates on every device we measured: one
training example forward and backward is one pass, one forward alone (scoring, validation) a third
of one (the backward costs about twice the forward). A grid point is one final run: every training
example once per epoch, and the validation set once per epoch. A controller round is K batch-1
steps of the run itself, the lookahead's training of each scored mask (C candidates and p_c's own),
and the micro-dev scoring of those C + 1 masks. Late probing (`rounds_at: end`) first pays for the
whole run, one grid point, and its rounds train no K steps of their own. Counting passes instead of seconds keeps the
number of rounds, hence the run, deterministic; `result.json` records the seconds it really took.
"""

from __future__ import annotations

import math
from typing import Optional

__all__ = ["FORWARD_SHARE", "grid_point_passes", "round_passes", "rounds_within_budget", "round_cap"]

FORWARD_SHARE = 1.0 / 3.0


def grid_point_passes(n_train: int, n_val: int, epochs: int) -> float:
    """Example passes of one final run (a grid point) trained for `epochs` epochs."""
    return epochs * (n_train + FORWARD_SHARE * n_val)


def round_passes(every_k_steps: int, candidates: int, micro_dev: int, lookahead_steps: int) -> float:
    """Example passes of one controller round on a batch-1 run (lookahead_steps 0: immediate reward;
    every_k_steps 0: a round after training, late probing)."""
    masks = candidates + 1  # the candidates and p_c's own mask for L0
    return every_k_steps + masks * lookahead_steps + masks * FORWARD_SHARE * micro_dev


def rounds_within_budget(budget_grid_points: float, *, n_train: int, n_val: int, epochs: int, every_k_steps: int,
                         candidates: int, micro_dev: int, lookahead_steps: int, rounds_at: str = "during") -> int:
    """The most rounds whose passes, with the validation pass that ends the run, fit in the budget
    (at least 1: a controller run that scores nothing has no answer). `rounds_at="end"`: the whole
    run (one grid point) first, then rounds without training steps of their own."""
    point = grid_point_passes(n_train, n_val, epochs)
    if rounds_at == "end":
        budget, every_k_steps = budget_grid_points * point - point, 0
    else:
        budget = budget_grid_points * point - FORWARD_SHARE * n_val
    per_round = round_passes(every_k_steps, candidates, micro_dev, lookahead_steps)
    return max(1, math.floor(budget / per_round + 1e-9))


def round_cap(max_rounds: Optional[int], budget_rounds: Optional[int]) -> Optional[int]:
    """The tighter of an explicit cap and a budget's rounds (None: no cap)."""
    caps = [r for r in (max_rounds, budget_rounds) if r is not None]
    return min(caps) if caps else None
