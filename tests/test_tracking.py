"""Experiment tracking (--report-to): TensorBoard event files written for real and read back;
W&B through a stand-in module (not installed in tests); one-line errors for missing packages."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch

from grasp_lora import tracking
from grasp_lora.tracking import TrackingError
from grasp_lora.training.loop import train
from helpers import TINY_OVERRIDES, run_cli
from test_loop import cfg, lora_model, random_examples


def read_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of one TensorBoard run folder, as (step, value) lists."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture(autouse=True)
def no_tracker_left_behind():
    yield
    tracking.finish()


def test_loop_losses_land_in_tensorboard(tmp_path):
    tb = tracking.TensorBoardTracker(tmp_path / "tb")
    model = lora_model()
    res = train(model, random_examples(6, 1), random_examples(3, 2), cfg(epochs=2, grad_accum=2), progress=False,
                tracker=tb.stage("adapters/ar"))
    tb.finish()
    scalars = read_scalars(tmp_path / "tb" / "adapters" / "ar")
    assert [s for s, _ in scalars["train/loss"]] == list(range(1, res.steps + 1))
    assert [s for s, _ in scalars["val/loss"]] == [e["steps"] for e in res.epochs]
    assert [v for _, v in scalars["val/loss"]] == pytest.approx([e["val_loss"] for e in res.epochs], rel=1e-6)
    assert [v for _, v in scalars["train/epoch_loss"]] == pytest.approx([e["train_loss"] for e in res.epochs], rel=1e-6)
    assert [v for _, v in scalars["train/lr"]][0] == pytest.approx(1e-2)


def test_no_tracker_writes_nothing(tmp_path):
    tracking.start("none", tmp_path)
    assert not tracking.is_active()
    train(lora_model(), random_examples(4, 1), random_examples(2, 2), cfg(epochs=1), progress=False,
          log_path=tmp_path / "x" / "log.jsonl")
    assert not (tmp_path / "tensorboard").exists()


def test_stage_names_follow_the_run_folders(tmp_path):
    tracking.start("none", tmp_path / "run")
    assert tracking.stage_name("train", tmp_path / "run" / "adapters" / ".ar.tmp-4242" / "log.jsonl") == "adapters/ar"
    assert tracking.stage_name("grid_point", tmp_path / "run" / "seed_42/grid/point_0.2000/l.jsonl") == "seed_42/grid/point_0.2000"
    assert tracking.stage_name("final", tmp_path / "elsewhere" / "l.jsonl") == "final"
    assert tracking.stage_name("final", None) == "final"


def test_controller_rounds_and_stage_losses_through_the_cli(tmp_path):
    """`search --method grasp --report-to tensorboard`: per round mu, sigma, p_c, candidates and
    rewards equal the history the run wrote; every training stage has its losses."""
    run = tmp_path / "run"
    proc = run_cli(["search", "demo", "--method", "grasp", "--report-to", "tensorboard", "--run-dir", str(run),
                    "--quiet", *TINY_OVERRIDES], tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-2000:]
    tb = run / "tensorboard"
    for stage in ("adapters/en", "adapters/ar"):
        assert len(read_scalars(tb / stage)["train/loss"]) > 0
    scalars = read_scalars(tb / "grasp")  # the experiment's one controller run (pipeline.controller_per_seed off)
    history = [json.loads(x) for x in (run / "grasp/history.jsonl").read_text().splitlines()]
    assert len(history) >= 2
    steps = [r["step"] for r in history]
    for key in ("mu", "sigma", "p_c"):
        assert scalars[f"controller/{key}"] == [(s, pytest.approx(r[key], rel=1e-6)) for s, r in zip(steps, history)]
    for i in range(len(history[0]["candidates"])):
        assert [v for _, v in scalars[f"controller/candidate_{i}"]] == pytest.approx([r["candidates"][i] for r in history], rel=1e-6)
        assert [v for _, v in scalars[f"controller/reward_{i}"]] == pytest.approx([r["rewards"][i] for r in history], rel=1e-5, abs=1e-6)
    assert len(scalars["train/loss"]) == json.loads((run / "grasp/result.json").read_text())["steps"]
    assert "val/loss" in scalars


class FakeRun:
    def __init__(self) -> None:
        self.defined: list[tuple] = []
        self.logged: list[dict] = []
        self.finished = False

    def define_metric(self, name, step_metric=None, hidden=None):
        self.defined.append((name, step_metric))

    def log(self, values):
        self.logged.append(values)

    def finish(self):
        self.finished = True


def test_wandb_prefixes_each_stage_and_plots_it_against_its_own_step(tmp_path, monkeypatch):
    run, inits = FakeRun(), []
    wandb = types.ModuleType("wandb")
    wandb.init = lambda **kw: inits.append(kw) or run
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setenv("WANDB_PROJECT", "proj")
    tracker = tracking.start("wandb", tmp_path, run_name="demo", config={"train": {"lr": 3e-4}})
    assert inits == [{"project": "proj", "name": "demo", "config": {"train": {"lr": 3e-4}}, "dir": str(tmp_path)}]
    stage = tracker.stage("seed_42/grasp")
    stage.log({"train/loss": 1.5, "val/loss": None}, 3)  # None (no validation) is not a point
    stage.log_round({"step": 4, "mu": 0.4, "sigma": 0.1, "p_c": 0.3, "sparsity": 0.2, "committed_ratio": None,
                     "candidates": [0.2, 0.5], "losses": [2.0, 2.5], "rewards": [-2.0, -2.5]})
    assert run.defined == [("seed_42/grasp/step", None), ("seed_42/grasp/*", "seed_42/grasp/step")]
    assert run.logged[0] == {"seed_42/grasp/step": 3, "seed_42/grasp/train/loss": 1.5}
    logged = run.logged[1]
    assert logged["seed_42/grasp/step"] == 4 and logged["seed_42/grasp/controller/mu"] == 0.4
    assert logged["seed_42/grasp/controller/candidate_1"] == 0.5 and logged["seed_42/grasp/controller/reward_0"] == -2.0
    assert logged["seed_42/grasp/controller/reward_best"] == -2.0
    assert "seed_42/grasp/controller/committed_ratio" not in logged
    tracking.finish()
    assert run.finished and not tracking.is_active()


@pytest.mark.parametrize("kind, module, extra", [
    ("wandb", "wandb", "grasp-lora[wandb]"),
    ("tensorboard", "torch.utils.tensorboard", "grasp-lora[tracking]"),
])
def test_missing_tracker_package_is_one_line_naming_the_extra(tmp_path, monkeypatch, kind, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(TrackingError) as e:
        tracking.start(kind, tmp_path)
    assert "\n" not in str(e.value) and f"--report-to {kind}" in str(e.value) and extra in str(e.value)


def test_other_ranks_track_nothing(tmp_path):
    tracking.start("tensorboard", tmp_path, main=False)
    assert not tracking.is_active()
