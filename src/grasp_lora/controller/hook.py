"""Glue between the GRPO controller and the training loop (the hook protocol, ARCHITECTURE.md).

- `MaskedModelScorer`: a `RatioScorer` over a `MaskState` with magnitude importance; the
  micro-dev loss is injected (`evaluate_loss`, all-reduced across processes by the loop).
- `GRPOHook`: after every optimizer step re-zeroes the committed entries, and every K-th step
  runs a controller round and appends its record to the history JSONL (main process only).

Several processes: every process runs every round. Nothing here communicates: the weights are
identical on every process (the loop sums gradients), so are the magnitude importance and every
mask; the losses come from `evaluate_loss`, which all-reduces; the candidates come from the
controller's own generator, seeded identically. Hence identical decisions without a broadcast.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from grasp_lora.controller.grpo import GRPOController, RatioScorer
from grasp_lora.io import append_jsonl
from grasp_lora.pruning.importance import magnitude_importance
from grasp_lora.pruning.masks import committed_first, mask_from_order, prune_order
from grasp_lora.pruning.state import MaskState

__all__ = ["MaskedModelScorer", "LookaheadScorer", "DenseRunScorer", "DenseRunLookaheadScorer", "GRPOHook",
           "is_main_process"]


class MaskedModelScorer:
    """RatioScorer: magnitude importance over the factors of `mask_state.groups`.

    Importance is |w| of the current weights. Committed entries are zero, so they rank first: a
    candidate at a ratio >= the committed one keeps the committed mask and prunes more, one below
    it releases committed entries. Which ones (`release`):
    - "stash" (`fidelity: fixed`): the committed entries with the largest stashed magnitudes, i.e.
      committed entries ranked by |stash| among themselves, ahead of the live ones ranked by |w|;
    - "index" (`fidelity: authors`): the zeros tie, so the lowest flat indices are released first,
      as the authors' magnitude ranking does.
    Each refresh sorts every factor once; the candidates of a round only slice those orders.
    Commits reset optimizer state per `optimizer_reset` (see `MaskState.commit`).
    """

    def __init__(
        self,
        mask_state: MaskState,
        evaluate_loss: Callable[[], float],
        optimizer_getter: Callable[[], Optional[torch.optim.Optimizer]],
        at_least_one: bool = False,
        release: str = "stash",
        optimizer_reset: str = "masked",
    ) -> None:
        if release not in ("stash", "index"):
            raise ValueError(f"release: expected stash or index, got {release!r}")
        self.mask_state = mask_state
        self.evaluate_loss = evaluate_loss
        self.optimizer_getter = optimizer_getter
        self.at_least_one = at_least_one
        self.release = release
        self.optimizer_reset = optimizer_reset
        self._orders: Optional[list[torch.Tensor]] = None
        self.refreshes = 0

    def _masks(self, ratio: float) -> list[torch.Tensor]:
        if self._orders is None:
            raise RuntimeError("importance not computed yet: call refresh_importance() first")
        return [
            mask_from_order(o, p.shape, ratio, self.at_least_one)
            for o, p in zip(self._orders, self.mask_state.factors)
        ]

    def committed_loss(self) -> float:
        return float(self.evaluate_loss())

    def refresh_importance(self) -> None:
        ms = self.mask_state
        if self.release == "stash" and ms.has_commit:
            self._orders = [committed_first(prune_order(v), m) for v, m in zip(ms.restore_magnitudes(), ms.masks)]
        else:
            self._orders = [prune_order(magnitude_importance(p)) for p in ms.factors]
        self.refreshes += 1

    def candidate_loss(self, ratio: float) -> float:
        with self.mask_state.candidate(self._masks(ratio)):
            return float(self.evaluate_loss())

    def commit(self, ratio: float) -> float:
        self.mask_state.commit(self._masks(ratio), optimizer=self.optimizer_getter(), ratio=ratio,
                               optimizer_reset=self.optimizer_reset)
        return self.mask_state.committed_sparsity()

    def state_dict(self) -> dict[str, Any]:
        # The cached ranking matters on resume under fidelity authors (importance from round 1).
        return {"orders": None if self._orders is None else [o.cpu() for o in self._orders], "refreshes": self.refreshes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        orders = state.get("orders")
        self._orders = None if orders is None else [
            torch.as_tensor(o).to(p.device) for o, p in zip(orders, self.mask_state.factors, strict=True)
        ]
        self.refreshes = int(state.get("refreshes", 0))


class LookaheadScorer(MaskedModelScorer):
    """`controller.reward: lookahead`: a mask is scored after the model has been trained under it.

    The immediate reward (METHOD.md, "The GRASP controller") measures the damage a mask does to
    weights that were trained without it, so pruning more always looks worse and the controller
    drifts to low ratios even where the grid shows that training under a higher ratio ends better.
    Here each candidate's mask, and the committed mask for L0, is applied, the factors are trained for `steps` optimizer
    steps (batch 1, the loop's optimizer and learning rate, the mask re-zeroed after every step) on
    the same `steps` training examples, and only then is the micro-dev loss taken. Weights and
    optimizer state are restored exactly afterwards, so the controller run's own trajectory only
    changes through what the controller commits. The examples of a round are the next `steps`
    of a seeded cyclic permutation of the training set, the same for every candidate of the round.

    Several processes: every process trains the same examples from the same weights (no
    all-reduce needed, the result is identical); the micro-dev losses are all-reduced as usual.

    A ratio is trained at most once a round: a second candidate at the same ratio (candidates
    clamped to a bound often coincide), or one at p_c's ratio on the dense run, would train the same
    mask from the same weights, optimizer state and examples, so its loss is reused
    (`reuse_within_round`; identical histories with it off, tests/test_grasp_search.py).
    """

    reuse_within_round = True

    def __init__(self, mask_state: MaskState, evaluate_loss: Callable[[], float],
                 optimizer_getter: Callable[[], Optional[torch.optim.Optimizer]], *, model: torch.nn.Module,
                 train_set: list[dict[str, Any]], steps: int, seed: int, targets_only: bool = True, **kwargs: Any) -> None:
        super().__init__(mask_state, evaluate_loss, optimizer_getter, **kwargs)
        if steps < 1 or not train_set:
            raise ValueError(f"lookahead needs steps >= 1 and training examples, got {steps} and {len(train_set)}")
        self.model, self.train_set, self.steps, self.targets_only = model, list(train_set), int(steps), targets_only
        self._order = torch.randperm(len(self.train_set), generator=torch.Generator().manual_seed(seed)).tolist()
        self._cursor = 0
        self._round_examples: list[dict[str, Any]] = []
        self._round_losses: dict[float, float] = {}  # ratio -> loss, this round
        self.lookaheads, self.reused = 0, 0  # masks trained ahead, and losses reused instead

    def _start_round(self) -> None:
        self._round_examples = self._next_examples()
        self._round_losses = {}

    def _next_examples(self) -> list[dict[str, Any]]:
        out = []
        for _ in range(self.steps):
            out.append(self.train_set[self._order[self._cursor % len(self._order)]])
            self._cursor += 1
        return out

    def _trained_loss(self, masks: list[torch.Tensor]) -> float:
        import copy

        from grasp_lora.training.loss import collate, lm_loss, pad_id_of

        optimizer = self.optimizer_getter()
        if optimizer is None:
            raise RuntimeError("lookahead reward: the training loop's optimizer is not known yet")
        self.lookaheads += 1
        saved_state = copy.deepcopy(optimizer.state_dict())
        was_training = self.model.training
        pad = pad_id_of(self.model)
        try:
            with self.mask_state.candidate(masks):  # restores the weights bit for bit on exit
                self.model.train()
                for example in self._round_examples:
                    loss_sum, n_tokens = lm_loss(self.model, collate([example], pad), self.targets_only)
                    (loss_sum / n_tokens.clamp(min=1)).backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    with torch.no_grad():
                        for p, m in zip(self.mask_state.factors, masks):
                            p.masked_fill_(m, 0)
                return float(self.evaluate_loss())
        finally:
            optimizer.zero_grad(set_to_none=True)
            optimizer.load_state_dict(saved_state)
            self.model.train(was_training)

    def committed_loss(self) -> float:
        # The first call of every round: the round's examples are drawn here.
        self._start_round()
        return self._trained_loss(self.mask_state.masks)

    def candidate_loss(self, ratio: float) -> float:
        if self.reuse_within_round and ratio in self._round_losses:
            self.reused += 1
            return self._round_losses[ratio]
        loss = self._trained_loss(self._masks(ratio))
        self._round_losses[ratio] = loss
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "cursor": self._cursor, "lookaheads": self.lookaheads, "reused": self.reused}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._cursor = int(state.get("cursor", 0))
        self.lookaheads, self.reused = int(state.get("lookaheads", 0)), int(state.get("reused", 0))


class DenseRunScorer(MaskedModelScorer):
    """`controller.train_under_mask: false`: a commit moves p_c only; no mask is ever applied to
    the controller run, which trains the merged adapters dense.

    Under the paper's rule the run trains under the committed mask, so the live weights co-adapt to
    it: any other mask then looks worse on the spot, whether it prunes more or releases stale
    stashed values, and after the first commit nothing is committed again (BENCHMARKS.md "Real
    data"). Here every mask of a round, L0's at p_c included, is cut from the same dense weights
    by the same magnitude ranking and scored on them, so the comparison between ratios carries no
    advantage for the one committed last. Before the first commit L0 is the dense loss, as in the
    paper. The final run, which trains under p*, is unchanged.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.mask_state.has_commit:
            raise ValueError("DenseRunScorer needs a MaskState without a committed mask")
        self.committed_ratio: Optional[float] = None
        self._ranked_for_round = False

    def committed_loss(self) -> float:
        if self.committed_ratio is None:
            return float(self.evaluate_loss())
        # p_c's mask needs this round's ranking before the controller asks for it; rank once
        super().refresh_importance()
        self._ranked_for_round = True
        return self.candidate_loss(self.committed_ratio)

    def refresh_importance(self) -> None:
        if not self._ranked_for_round:  # the weights have not moved since committed_loss ranked them
            super().refresh_importance()
        self._ranked_for_round = False

    def commit(self, ratio: float) -> float:
        self.committed_ratio = float(ratio)
        return self.mask_state.mask_sparsity(self._masks(ratio))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "committed_ratio": self.committed_ratio}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.committed_ratio = state.get("committed_ratio")


class DenseRunLookaheadScorer(DenseRunScorer, LookaheadScorer):
    """`controller.reward: lookahead` with `train_under_mask: false`: the run trains dense, a commit
    moves p_c only (as `DenseRunScorer`), and every mask of a round, L0's at p_c included, is cut from
    the round's dense weights and trained under for `steps` steps before it is scored (as
    `LookaheadScorer`, which restores weights and optimizer afterwards). Before the first commit L0
    is the dense model after the same steps. The immediate reward on dense weights only sees how much
    a mask damages (or shrinks) weights trained without it; training under the mask first lets the
    reward see what the final run, which trains under p*, will see (BENCHMARKS.md, "Real data")."""

    def committed_loss(self) -> float:
        self._start_round()  # the round's examples, the same for every mask
        if self.committed_ratio is None:
            return self._trained_loss(self.mask_state.masks)  # no commit: all-False masks, i.e. dense
        MaskedModelScorer.refresh_importance(self)
        self._ranked_for_round = True
        return self.candidate_loss(self.committed_ratio)


def is_main_process(state: Any) -> bool:
    acc = getattr(state, "accelerator", None)
    if acc is None:
        from grasp_lora.distributed import is_main

        return is_main()  # rank 0 of a process group, or the only process
    return bool(getattr(acc, "is_main_process", True))


class GRPOHook:
    """Training-loop hook running the controller every `controller.cfg.every_k_steps` steps."""

    def __init__(
        self,
        controller: GRPOController,
        scorer: RatioScorer,
        mask_state: MaskState,
        history_path: Optional[str | Path] = None,
        max_rounds: Optional[int] = None,
    ) -> None:
        self.controller = controller
        self.scorer = scorer
        self.mask_state = mask_state
        self.history_path = Path(history_path) if history_path is not None else None
        self.every_k = int(controller.cfg.every_k_steps)
        # controller.max_rounds / budget_grid_points: the run stops once the decision is made
        self.max_rounds = max_rounds

    def on_train_start(self, state: Any) -> None:
        self.mask_state.rezero()  # a resumed run starts from the committed mask
        state.stop = state.stop or self._rounds_spent()

    def on_optimizer_step(self, state: Any) -> None:
        # Gradients revive committed entries at every step; put the mask back first, so that the
        # round below (and the next forward) sees the committed model.
        self.mask_state.rezero()
        step = int(state.step)
        if step <= 0 or step % self.every_k != 0:
            return
        timer = getattr(state, "timer", None)
        with timer.phase("controller_rounds") if timer is not None else nullcontext():
            record = self.controller.run_round(step, self.scorer)
        if self.history_path is not None and is_main_process(state):
            append_jsonl(self.history_path, record)
        if getattr(state, "tracker", None) is not None:  # --report-to: rank 0's StageTracker
            state.tracker.log_round(record)
        if self._rounds_spent():
            state.stop = True  # every process counts the same rounds, so all stop at this step

    def _rounds_spent(self) -> bool:
        return self.max_rounds is not None and self.controller.round >= self.max_rounds

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"controller": self.controller.state_dict(), "mask_state": self.mask_state.state_dict()}
        if hasattr(self.scorer, "state_dict"):
            out["scorer"] = self.scorer.state_dict()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.controller.load_state_dict(state["controller"])
        self.mask_state.load_state_dict(state["mask_state"])
        if "scorer" in state and hasattr(self.scorer, "load_state_dict"):
            self.scorer.load_state_dict(state["scorer"])
