"""How a controller round scores a ratio: two independent choices, composed (METHOD.md, "Controller variants").

1. Which weights a mask is cut from (`controller.train_under_mask`):
   - `MaskedRunMasks` (true, the paper): the controller run trains under the committed mask; L0 is
     the live, masked model; a commit applies the mask to the weights (and resets the optimizer's
     moments of newly pruned entries).
   - `DenseRunMasks` (false): the run trains dense; a commit moves p_c only; every mask of a round,
     L0's at p_c included, is cut from the same dense weights, so no ratio carries the advantage of
     having been trained under (BENCHMARKS.md, "Real data").
2. How a mask is turned into a loss (`controller.reward`), the reward r_i = L0 - L_i:
   - `ImmediateLoss` (the paper): the micro-dev loss with the mask applied, at once;
   - `LookaheadLoss`: the mask is first trained under for `lookahead_steps` optimizer steps, then
     scored; weights and optimizer state restored exactly afterwards.

`ControllerScorer` composes one of each into the controller's `RatioScorer` protocol, and
`build_scorer` picks them from a `ControllerConfig`: the one factory that the controller run and
the benchmarks' probes share. A new reward is a new loss class; a new way of cutting masks is a new
mask source; the controller (`grpo.GRPOController`) sees neither.

Several processes: every process runs every round. Nothing here communicates: the weights are
identical on every process (the loop sums gradients), so are the magnitude importance and every
mask; the losses come from `evaluate_loss`, which all-reduces; the lookahead trains the same
examples from the same weights everywhere.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Optional, Sequence

import torch

from grasp_lora.pruning.importance import magnitude_importance
from grasp_lora.pruning.masks import committed_first, mask_from_order, prune_order
from grasp_lora.pruning.state import MaskState

__all__ = ["MaskedRunMasks", "DenseRunMasks", "ImmediateLoss", "LookaheadLoss", "ControllerScorer", "build_scorer"]

Masks = Optional[list[torch.Tensor]]  # None: the model as it is (the committed mask in place, or dense)
OptimizerGetter = Callable[[], Optional[torch.optim.Optimizer]]


# -- which weights a mask is cut from ---------------------------------------------------------

class MaskedRunMasks:
    """Masks by magnitude importance of the run's own weights, which train under the committed mask.

    Committed entries are zero, so they rank first: a candidate at a ratio >= the committed one keeps
    the committed mask and prunes more; one below releases committed entries. Which ones (`release`):
    - "stash" (`fidelity: fixed`): the committed entries with the largest stashed magnitudes;
    - "index" (`fidelity: authors`): the zeros tie, so the lowest flat indices go first, as the
      authors' magnitude ranking does.
    Each refresh sorts every factor once; the candidates of a round only slice those orders.
    """

    def __init__(self, mask_state: MaskState, optimizer_getter: OptimizerGetter, *, at_least_one: bool = False,
                 release: str = "stash", optimizer_reset: str = "masked") -> None:
        if release not in ("stash", "index"):
            raise ValueError(f"release: expected stash or index, got {release!r}")
        self.mask_state = mask_state
        self.optimizer_getter = optimizer_getter
        self.at_least_one = at_least_one
        self.release = release
        self.optimizer_reset = optimizer_reset
        self._orders: Optional[list[torch.Tensor]] = None
        self.refreshes = 0

    def round_start(self) -> tuple[Masks, Optional[float]]:
        """L0's masks (None: the live model) and the ratio they are at (None: not a candidate's)."""
        return None, None

    def refresh(self) -> None:
        ms = self.mask_state
        if self.release == "stash" and ms.has_commit:
            self._orders = [committed_first(prune_order(v), m) for v, m in zip(ms.restore_magnitudes(), ms.masks)]
        else:
            self._orders = [prune_order(magnitude_importance(p)) for p in ms.factors]
        self.refreshes += 1

    def at(self, ratio: float) -> list[torch.Tensor]:
        if self._orders is None:
            raise RuntimeError("importance not computed yet: call refresh_importance() first")
        return [mask_from_order(o, p.shape, ratio, self.at_least_one)
                for o, p in zip(self._orders, self.mask_state.factors)]

    def commit(self, ratio: float) -> float:
        self.mask_state.commit(self.at(ratio), optimizer=self.optimizer_getter(), ratio=ratio,
                               optimizer_reset=self.optimizer_reset)
        return self.mask_state.committed_sparsity()

    def state_dict(self) -> dict[str, Any]:
        # The cached ranking matters on resume under fidelity authors (importance from round 1).
        return {"orders": None if self._orders is None else [o.cpu() for o in self._orders], "refreshes": self.refreshes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        orders = state.get("orders")
        self._orders = None if orders is None else [
            torch.as_tensor(o).to(p.device) for o, p in zip(orders, self.mask_state.factors, strict=True)]
        self.refreshes = int(state.get("refreshes", 0))


class DenseRunMasks(MaskedRunMasks):
    """Masks cut from the dense run's weights; a commit moves p_c only, no mask is ever applied.

    Under the paper's rule the live weights co-adapt to the committed mask, so any other mask then
    looks worse on the spot and after the first commit nothing is committed again (BENCHMARKS.md
    "Real data"). Here L0 is p_c's mask cut from this round's weights by the same ranking as the
    candidates' (the dense model before the first commit, as in the paper). The final run, which
    trains under p*, is unchanged.
    """

    def __init__(self, mask_state: MaskState, optimizer_getter: OptimizerGetter, **kwargs: Any) -> None:
        super().__init__(mask_state, optimizer_getter, **kwargs)
        if mask_state.has_commit:
            raise ValueError("DenseRunMasks needs a MaskState without a committed mask")
        self.committed_ratio: Optional[float] = None
        self._ranked_for_round = False

    def round_start(self) -> tuple[Masks, Optional[float]]:
        if self.committed_ratio is None:
            return None, None
        super().refresh()  # p_c's mask needs this round's ranking before the candidates'
        self._ranked_for_round = True
        return self.at(self.committed_ratio), self.committed_ratio

    def refresh(self) -> None:
        if not self._ranked_for_round:  # the weights have not moved since round_start ranked them
            super().refresh()
        self._ranked_for_round = False

    def commit(self, ratio: float) -> float:
        self.committed_ratio = float(ratio)
        return self.mask_state.mask_sparsity(self.at(ratio))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "committed_ratio": self.committed_ratio}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.committed_ratio = state.get("committed_ratio")


# -- how a mask becomes a loss ---------------------------------------------------------------

class ImmediateLoss:
    """The paper's reward: the micro-dev loss with the mask applied to the current weights."""

    def __init__(self, mask_state: MaskState, evaluate_loss: Callable[[], float]) -> None:
        self.mask_state = mask_state
        self.evaluate_loss = evaluate_loss

    def start_round(self) -> None:
        pass

    def __call__(self, masks: Masks, ratio: Optional[float] = None) -> float:
        if masks is None:
            return float(self.evaluate_loss())
        with self.mask_state.candidate(masks):  # restores the weights bit for bit on exit
            return float(self.evaluate_loss())

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class LookaheadLoss:
    """A mask is scored after the model has been trained under it for `steps` optimizer steps.

    The immediate reward measures the damage a mask does to weights trained without it, so pruning
    more always looks worse. Here the mask is applied, the factors are trained for `steps` steps
    (batch 1, the loop's optimizer and learning rate, the mask re-zeroed after every step) on the
    round's `steps` training examples, and only then is the micro-dev loss taken. Weights and
    optimizer state are restored exactly afterwards, so the run's own trajectory only changes
    through what the controller commits. A round's examples are the next `steps` of a seeded
    cyclic permutation of the training set, the same for every mask of the round.

    A ratio is trained at most once a round: a second candidate at the same ratio (candidates
    clamped to a bound often coincide), or one at p_c's ratio on the dense run, would train the same
    mask from the same weights, optimizer state and examples, so its loss is reused
    (`reuse_within_round`; identical histories with it off, tests/test_grasp_search.py).
    """

    reuse_within_round = True

    def __init__(self, mask_state: MaskState, evaluate_loss: Callable[[], float], optimizer_getter: OptimizerGetter,
                 *, model: torch.nn.Module, train_set: Sequence[dict[str, Any]], steps: int, seed: int,
                 targets_only: bool = True) -> None:
        if steps < 1 or not train_set:
            raise ValueError(f"lookahead needs steps >= 1 and training examples, got {steps} and {len(train_set)}")
        self.mask_state, self.evaluate_loss, self.optimizer_getter = mask_state, evaluate_loss, optimizer_getter
        self.model, self.train_set, self.steps, self.targets_only = model, list(train_set), int(steps), targets_only
        self._order = torch.randperm(len(self.train_set), generator=torch.Generator().manual_seed(seed)).tolist()
        self._cursor = 0
        self._round_examples: list[dict[str, Any]] = []
        self._round_losses: dict[float, float] = {}  # ratio -> loss, this round
        self.lookaheads, self.reused = 0, 0  # masks trained ahead, and losses reused instead

    def start_round(self) -> None:
        self._round_examples = []
        for _ in range(self.steps):
            self._round_examples.append(self.train_set[self._order[self._cursor % len(self._order)]])
            self._cursor += 1
        self._round_losses = {}

    def __call__(self, masks: Masks, ratio: Optional[float] = None) -> float:
        if ratio is not None and self.reuse_within_round and ratio in self._round_losses:
            self.reused += 1
            return self._round_losses[ratio]
        loss = self.trained_loss(self.mask_state.masks if masks is None else masks)
        if ratio is not None:
            self._round_losses[ratio] = loss
        return loss

    def trained_loss(self, masks: Sequence[torch.Tensor]) -> float:
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

    def state_dict(self) -> dict[str, Any]:
        return {"cursor": self._cursor, "lookaheads": self.lookaheads, "reused": self.reused}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._cursor = int(state.get("cursor", 0))
        self.lookaheads, self.reused = int(state.get("lookaheads", 0)), int(state.get("reused", 0))


# -- the two composed ------------------------------------------------------------------------

class ControllerScorer:
    """The controller's `RatioScorer`: masks from `masks`, losses from `loss`."""

    def __init__(self, masks: MaskedRunMasks, loss: ImmediateLoss | LookaheadLoss) -> None:
        self.masks = masks
        self.loss = loss

    def committed_loss(self) -> float:
        # The first call of every round: the lookahead draws the round's examples here.
        self.loss.start_round()
        l0_masks, ratio = self.masks.round_start()
        return self.loss(l0_masks, ratio)

    def refresh_importance(self) -> None:
        self.masks.refresh()

    def candidate_loss(self, ratio: float) -> float:
        return self.loss(self.masks.at(ratio), ratio)

    def commit(self, ratio: float) -> float:
        return self.masks.commit(ratio)

    @property
    def lookaheads(self) -> Optional[int]:
        return getattr(self.loss, "lookaheads", None)

    @property
    def reused(self) -> Optional[int]:
        return getattr(self.loss, "reused", None)

    def state_dict(self) -> dict[str, Any]:
        return {**self.masks.state_dict(), **self.loss.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks.load_state_dict(state)
        self.loss.load_state_dict(state)


def build_scorer(c: Any, mask_state: MaskState, evaluate_loss: Callable[[], float], optimizer_getter: OptimizerGetter,
                 *, model: Optional[torch.nn.Module] = None, train_set: Sequence[dict[str, Any]] = (),
                 targets_only: bool = True) -> ControllerScorer:
    """The scorer a `ControllerConfig` describes: train_under_mask picks the mask source, reward the
    loss, fidelity how masks are ranked and what a commit resets. The lookahead needs the model and
    its training examples (its examples are drawn from controller.seed)."""
    authors = c.fidelity == "authors"
    source = MaskedRunMasks if c.train_under_mask else DenseRunMasks
    masks = source(mask_state, optimizer_getter, at_least_one=authors, release="index" if authors else "stash",
                   optimizer_reset="whole" if authors else "masked")
    if c.reward == "lookahead":
        if model is None:
            raise ValueError("the lookahead reward needs the model and its training examples")
        loss: ImmediateLoss | LookaheadLoss = LookaheadLoss(
            mask_state, evaluate_loss, optimizer_getter, model=model, train_set=train_set, steps=c.lookahead_steps,
            seed=c.seed, targets_only=targets_only)
    elif c.reward == "immediate":
        loss = ImmediateLoss(mask_state, evaluate_loss)
    else:
        raise ValueError(f"controller.reward: expected immediate or lookahead, got {c.reward!r}")
    return ControllerScorer(masks, loss)
