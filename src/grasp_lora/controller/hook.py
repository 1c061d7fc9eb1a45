"""Glue between the GRPO controller and the training loop (the hook protocol, ARCHITECTURE.md).

`GRPOHook`: after every optimizer step re-zeroes the committed entries, and every K-th step runs a
controller round with its scorer (`controller.scorers`) and appends the round's record to the
history JSONL (main process only). With `rounds_at: end` (late probing) no round runs during
training; once the loop has restored its best weights, the rounds run back to back until the cap.

Several processes: every process runs every round. Nothing here communicates: the candidates come
from the controller's own generator, seeded identically, and the scorer sees identical weights and
all-reduced losses. Hence identical decisions without a broadcast.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, Optional

from grasp_lora.controller.grpo import GRPOController, RatioScorer
from grasp_lora.io import append_jsonl
from grasp_lora.pruning.state import MaskState

__all__ = ["GRPOHook", "is_main_process"]


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
        self.at_end = controller.cfg.rounds_at == "end"
        if self.at_end and max_rounds is None:
            raise ValueError("rounds_at: end needs a cap on rounds (max_rounds)")
        # controller.max_rounds / budget_grid_points: the run stops once the decision is made
        self.max_rounds = max_rounds

    def on_train_start(self, state: Any) -> None:
        self.mask_state.rezero()  # a resumed run starts from the committed mask
        if not self.at_end:
            state.stop = state.stop or self._rounds_spent()

    def on_optimizer_step(self, state: Any) -> None:
        # Gradients revive committed entries at every step; put the mask back first, so that the
        # round below (and the next forward) sees the committed model.
        self.mask_state.rezero()
        step = int(state.step)
        if self.at_end or step <= 0 or step % self.every_k != 0:
            return
        self._round(state, step)
        if self._rounds_spent():
            state.stop = True  # every process counts the same rounds, so all stop at this step

    def on_train_end(self, state: Any) -> None:
        # Late probing: every round at the weights the run returns (its best epoch's).
        # The loop has closed its tracker by now: these rounds go to the history file only.
        while self.at_end and not self._rounds_spent():
            self._round(state, int(state.step), track=False)

    def _round(self, state: Any, step: int, track: bool = True) -> None:
        timer = getattr(state, "timer", None)
        with timer.phase("controller_rounds") if timer is not None else nullcontext():
            record = self.controller.run_round(step, self.scorer)
        if self.history_path is not None and is_main_process(state):
            append_jsonl(self.history_path, record)
        if track and getattr(state, "tracker", None) is not None:  # --report-to: rank 0's StageTracker
            state.tracker.log_round(record)

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
