"""Config-safe resume on a real (tiny) run folder: which units a changed key makes stale, the
one-line refusal, and --rerun-changed giving the same results as a fresh run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from helpers import TINY_OVERRIDES, comparable_results, run_cli

from grasp_lora.fingerprint import plan_resume


@pytest.fixture(scope="module")
def first_run(tiny_run):
    root, run, _ = tiny_run
    return root, run


def _stale(run: Path, *changes: str) -> tuple[set[str], set[str]]:
    """(stale unit names, all unit names) for the first run's folder under changed overrides."""
    from grasp_lora.cli import resolve_recipe
    from grasp_lora.config import load_config
    from grasp_lora.pipeline import Experiment

    cfg = load_config(resolve_recipe("demo"), [*TINY_OVERRIDES, *changes, f"pipeline.output_dir={run}"])
    units = Experiment(cfg, progress=False).units()
    return {s.unit.name for s in plan_resume(units)}, {u.name for u in units}


def test_each_stage_key_makes_exactly_its_units_stale(first_run):
    _, run = first_run
    none, everything = _stale(run)
    assert none == set()
    # keys that cannot change a result invalidate nothing
    assert _stale(run, "generation.batch_size=2", "train.eval_batch_size=2", "controller.score_batch_size=2",
                  "model.device=cpu")[0] == set()
    # data: everything reads the splits
    assert _stale(run, "data.seed=7")[0] == everything
    # adapters: everything but the data and the zero-shot system
    trained = everything - {"data", "systems/zero_shot"}
    assert _stale(run, "lora.r=4")[0] == trained
    assert _stale(run, "train.lr=0.05")[0] == trained
    # the controller: its run, the final run(s) at its p*, and GRASP's systems
    ctrl = _stale(run, "controller.candidates=2")[0]
    assert ctrl and all("grasp" in n or "final" in n for n in ctrl)
    assert any(n.startswith("systems/grasp") for n in ctrl) and not any("grid" in n for n in ctrl)
    # the controller records its variant keys resolved: spelling out the default changes nothing,
    # while the paper's controller (train_under_mask alone) is another run
    assert _stale(run, "controller.train_under_mask=false", "controller.reward=lookahead", "controller.lookahead_steps=2",
                  "controller.advantage=standardized", "controller.p_star_rule=final",
                  "controller.budget_grid_points=3")[0] == set()
    assert _stale(run, "controller.train_under_mask=true")[0] == ctrl
    # the grid's ratios: only the grid-best system (new points are not finished work)
    assert _stale(run, "grid.ratios=[0.3, 0.6, 0.9]")[0] == {n for n in everything if n.startswith("systems/grid_best")}
    # evaluation: every system, nothing else
    assert _stale(run, "eval.bertscore_idf=true")[0] == {n for n in everything if n.startswith("systems/")}


def test_changed_settings_stop_with_one_line_then_rerun_changed_matches_a_fresh_run(first_run):
    root, first = first_run
    run = root / "changed"
    shutil.copytree(first, run)
    config_before = (run / "config.yaml").read_text()
    changed = ["train.lr=0.05", "lora.r=4"]
    stale, _ = _stale(run, *changed)

    refused = run_cli(["pipeline", "demo", *TINY_OVERRIDES, *changed, "--run-dir", str(run), "--no-progress"],
                      root / "cache")
    assert refused.returncode == 2
    lines = [line for line in refused.stderr.strip().splitlines() if line]
    assert len(lines) == 1, refused.stderr[-2000:]
    assert "lora.r 8 -> 4" in lines[0] and "train.lr 0.001 -> 0.05" in lines[0]
    assert "--run-dir" in lines[0] and "--rerun-changed" in lines[0] and "adapters/ar" in lines[0]
    assert "[run]" not in refused.stdout  # no work done
    assert (run / "config.yaml").read_text() == config_before  # still describes the results

    # --no-progress, not --quiet: --quiet hides the [redo] / [skip] lines read here
    redo = run_cli(["pipeline", "demo", *TINY_OVERRIDES, *changed, "--run-dir", str(run), "--no-progress",
                    "--rerun-changed"], root / "cache")
    assert redo.returncode == 0, redo.stderr[-3000:]
    redone = {line.split()[1].rstrip(":") for line in redo.stdout.splitlines() if line.startswith("[redo]")}
    assert redone == stale
    assert "[skip] prepare data" in redo.stdout and "[skip] generate + evaluate zero_shot" in redo.stdout
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["train"]["lr"] == 0.05 and cfg["lora"]["r"] == 4

    fresh = root / "fresh"
    proc = run_cli(["pipeline", "demo", *TINY_OVERRIDES, *changed, "--run-dir", str(fresh), "--quiet"], root / "cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert comparable_results(run / "results.json") == comparable_results(fresh / "results.json")
    assert comparable_results(run / "results.json") != comparable_results(first / "results.json")

    again = run_cli(["pipeline", "demo", *TINY_OVERRIDES, *changed, "--run-dir", str(run), "--no-progress"],
                    root / "cache")
    assert again.returncode == 0 and "[skip] train ar adapter" in again.stdout
    assert "[run]" not in again.stdout and "[redo]" not in again.stdout


def test_report_is_readable_and_carries_the_config_hash(first_run):
    from grasp_lora.fingerprint import results_hash

    _, run = first_run
    text = (run / "report.md").read_text()
    prose = [line for line in text.splitlines() if not line.startswith("![")]  # image links use brackets
    for token in ("{", "}", "[", "None", "True", "False", "@layer1@layer1"):
        assert not any(token in line for line in prose), token
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert f"Configuration hash `{results_hash(cfg)}`" in text
    assert "BERTScore-F1 uses the encoder `tiny-llama` (hidden layer 1 of 2), rescaled against a baseline F of" in text
    assert "seeds 42." in text
    costs = {c["family"]: c for c in json.loads((run / "results.json").read_text())["costs"]}
    assert costs["zero_shot"]["runs"] == 0 and costs["adaptive_merge"]["runs"] == 1
    assert costs["grid_best"]["runs"] == 2 and costs["grasp"]["runs"] == 2  # 2 ratios x 1 seed; controller + final
    assert all(c["eval_minutes"] is not None and c["eval_minutes"] > 0 for c in costs.values())
    assert "| GRASP | controller + final runs | 2 |" in text
