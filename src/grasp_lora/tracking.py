"""Optional experiment tracking: follow a long run in TensorBoard or Weights & Biases.

`grasp-lora ... --report-to tensorboard|wandb|none` (default none). What is logged, on rank 0 only:
- every training stage (stage-1 adapters, controller run, final run, grid points, baselines):
  `train/loss` and `train/lr` per optimizer step, `val/loss` and `train/epoch_loss` per epoch;
- every controller round: `controller/mu`, `controller/sigma`, `controller/p_c`,
  `controller/sparsity`, `controller/committed_ratio` (rounds that commit), and per candidate i
  `controller/candidate_i`, `controller/loss_i`, `controller/reward_i`, plus the round's mean
  and best reward.
The x axis is the stage's optimizer step. A stage is named after its folder in the run
(`adapters/ar`, `grasp`, `seed_42/grid/point_0.2000`, ...): in TensorBoard one run per
stage under `<run>/tensorboard/`, in W&B one run per command with the stage as metric prefix.

The tracker of a command is process-wide (`start` / `active` / `finish`); the training loop asks
for `active().stage(name)` and hands the resulting `StageTracker` to its hooks through
`LoopState.tracker`, so nothing between the CLI and the loop has to carry it.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, Optional

logger = logging.getLogger(__name__)

CHOICES = ("none", "tensorboard", "wandb")
TENSORBOARD_DIR = "tensorboard"


class TrackingError(ValueError):
    """A tracker was asked for but cannot start; one line naming the fix."""


def _scalars(values: Mapping[str, Any]) -> dict[str, float]:
    """Finite numbers only: a missing validation loss (None) or a NaN is not a point to plot."""
    out = {}
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(v):
            out[k] = float(v)
    return out


class Tracker:
    """Does nothing: the tracker of `--report-to none` and of every rank but 0."""

    name = "none"

    def log(self, stage: str, values: Mapping[str, Any], step: int) -> None:
        pass

    def end_stage(self, stage: str) -> None:
        pass

    def finish(self) -> None:
        pass

    def stage(self, name: str) -> "StageTracker":
        return StageTracker(self, name)


class StageTracker:
    """A tracker bound to one stage: what the loop and its hooks log to."""

    def __init__(self, tracker: Tracker, stage: str) -> None:
        self.tracker = tracker
        self.name = stage

    def log(self, values: Mapping[str, Any], step: int) -> None:
        scalars = _scalars(values)
        if scalars:
            self.tracker.log(self.name, scalars, int(step))

    def log_round(self, record: Mapping[str, Any]) -> None:
        """One controller round (the history record of controller.grpo)."""
        self.log(round_values(record), record["step"])

    def close(self) -> None:
        self.tracker.end_stage(self.name)


def round_values(record: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {f"controller/{k}": record.get(k) for k in ("mu", "sigma", "p_c", "sparsity", "committed_ratio")}
    rewards = [r for r in record.get("rewards") or [] if r is not None]
    for i, c in enumerate(record.get("candidates") or []):
        values[f"controller/candidate_{i}"] = c
    for i, loss in enumerate(record.get("losses") or []):
        values[f"controller/loss_{i}"] = loss
    for i, r in enumerate(record.get("rewards") or []):
        values[f"controller/reward_{i}"] = r
    if rewards:
        values["controller/reward_mean"] = sum(rewards) / len(rewards)
        values["controller/reward_best"] = max(rewards)
    return values


class TensorBoardTracker(Tracker):
    """One SummaryWriter (one TensorBoard run) per stage, under `logdir/<stage>`."""

    name = "tensorboard"

    def __init__(self, logdir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise TrackingError(
                "--report-to tensorboard: the tensorboard package is not installed "
                "(pip install 'grasp-lora[tracking]')"
            ) from None
        self._writer_cls = SummaryWriter
        self.logdir = Path(logdir)
        self._writers: dict[str, Any] = {}

    def _writer(self, stage: str) -> Any:
        w = self._writers.get(stage)
        if w is None:
            w = self._writers[stage] = self._writer_cls(log_dir=str(self.logdir / stage))
        return w

    def log(self, stage: str, values: Mapping[str, Any], step: int) -> None:
        w = self._writer(stage)
        for k, v in values.items():
            w.add_scalar(k, v, step)

    def end_stage(self, stage: str) -> None:
        w = self._writers.pop(stage, None)
        if w is not None:
            w.close()  # flushes: a finished stage is on disk for TensorBoard at once

    def finish(self) -> None:
        for stage in list(self._writers):
            self.end_stage(stage)


class WandbTracker(Tracker):
    """One W&B run per command; each stage's metrics are prefixed with the stage and plotted
    against that stage's own step (`<stage>/step`), since stages restart their step count."""

    name = "wandb"

    def __init__(self, run_name: str, config: Optional[Mapping[str, Any]], run_dir: str | Path) -> None:
        try:
            import wandb
        except ImportError:
            raise TrackingError("--report-to wandb: the wandb package is not installed (pip install 'grasp-lora[wandb]')") from None
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "grasp-lora"), name=run_name,
                                  config=dict(config or {}), dir=str(run_dir))
        except Exception as e:  # noqa: BLE001 - wandb raises its own types for login / network failures
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise TrackingError(f"--report-to wandb: wandb.init failed ({first}); run `wandb login` or set WANDB_MODE=offline") from None
        self._defined: set[str] = set()

    def log(self, stage: str, values: Mapping[str, Any], step: int) -> None:
        if stage not in self._defined:
            self.run.define_metric(f"{stage}/step", hidden=True)
            self.run.define_metric(f"{stage}/*", step_metric=f"{stage}/step")
            self._defined.add(stage)
        self.run.log({f"{stage}/step": step, **{f"{stage}/{k}": v for k, v in values.items()}})

    def finish(self) -> None:
        self.run.finish()


_NULL = Tracker()
_active: Tracker = _NULL
_root: Optional[Path] = None


def start(kind: str, run_dir: str | Path, *, run_name: str = "grasp-lora", config: Optional[Mapping[str, Any]] = None,
          main: bool = True) -> Tracker:
    """Make the tracker of `kind` this process's active one (rank > 0: the no-op tracker)."""
    global _active, _root
    if kind not in CHOICES:
        raise TrackingError(f"--report-to {kind}: expected one of {', '.join(CHOICES)}")
    finish()
    _root = Path(run_dir)
    if kind == "none" or not main:
        return _active
    if kind == "tensorboard":
        _active = TensorBoardTracker(_root / TENSORBOARD_DIR)
        logger.info("tracking: TensorBoard logs in %s (tensorboard --logdir %s)", _root / TENSORBOARD_DIR, _root / TENSORBOARD_DIR)
    else:
        _active = WandbTracker(run_name, config, _root)
    return _active


def active() -> Tracker:
    return _active


def is_active() -> bool:
    return _active is not _NULL


def finish() -> None:
    global _active
    tracker, _active = _active, _NULL
    tracker.finish()


_TMP_SUFFIX = re.compile(r"^\.(.+)\.tmp-\d+$")  # a unit being written: `.ar.tmp-1234` -> `ar`


def stage_name(desc: str, log_path: Optional[str | Path]) -> str:
    """The stage's name in the tracker: its folder relative to the run, else `desc`."""
    if log_path is not None and _root is not None:
        folder = Path(log_path).parent
        try:
            parts = folder.resolve().relative_to(_root.resolve()).parts
        except ValueError:
            parts = ()
        if parts:
            return "/".join(_TMP_SUFFIX.sub(r"\1", p) for p in parts)
    return desc
