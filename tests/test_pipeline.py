"""End to end: the whole pipeline through the CLI on a tiny model, and resume after kills."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from helpers import TINY_OVERRIDES, cli_env, comparable_results, run_cli


@pytest.fixture(scope="module")
def reference_run(tiny_run):
    return tiny_run


def test_pipeline_writes_every_artefact(reference_run):
    _, run, proc = reference_run
    assert "report:" in proc.stdout and "| GRASP |" in proc.stdout
    for path in ["config.yaml", "data/manifest.json", "data/ar/test.jsonl", "adapters/en/adapter_model.safetensors",
                 "adapters/ar/adapter_config.json", "baselines/ties/adapter/adapter_config.json",
                 "baselines/lorahub/adapter/adapter_config.json", "baselines/adaptive_merge/adapter/adapter_config.json",
                 "grasp/history.jsonl", "grasp/result.json", "grasp/trajectory.png", "grid/summary.json",
                 "seed_42/final/adapter/adapter_model.safetensors", "seed_42/grid/summary.json", "seed_42/grid/grid.png",
                 "systems/grasp_seed42/predictions.jsonl", "systems/zero_shot/metrics.json",
                 "report.md", "results.json", "trajectory.png", "grid.png", "systems.png"]:
        assert (run / path).exists(), path
    results = json.loads((run / "results.json").read_text())
    families = [row["family"] for row in results["rows"]]
    assert families == ["zero_shot", "target_lora", "ties", "lorahub", "adaptive_merge", "grid_best", "grasp"]
    for row in results["rows"]:
        assert set(row["metrics"]) == {"bertscore", "exact_match", "f1"}
    grasp = json.loads((run / "grasp/result.json").read_text())
    history = [json.loads(l) for l in (run / "grasp/history.jsonl").read_text().splitlines()]
    assert grasp["rounds"] == len(history) > 0
    # p* is the paper's rule over the recorded rounds: the last committed ratio, p_init if none
    committed = [h["committed_ratio"] for h in history if h["committed_ratio"] is not None]
    p_init = yaml.safe_load((run / "config.yaml").read_text())["controller"]["p_init"]
    assert grasp["p_star"] == pytest.approx(committed[-1] if committed else p_init)
    final = json.loads((run / "seed_42/final/result.json").read_text())
    assert final["ratio"] == grasp["p_star"]
    report = (run / "report.md").read_text()
    assert "| GRASP (1 controller run(s) + 1 final run(s)) | 2 |" in report
    # the default controller trains dense, scores masks after a lookahead of K steps and stops within
    # its budget of 3 grid points (METHOD.md, Controller variants and Controller cost); the report says so
    steps = yaml.safe_load((run / "config.yaml").read_text())["controller"]["every_k_steps"]
    assert grasp["lookahead_steps"] == steps and grasp["budget_rounds"] == grasp["max_rounds"] >= grasp["rounds"]
    assert grasp["train_under_mask"] is False and grasp["reward"] == "lookahead"
    assert f"| dense, masks only scored | lookahead, {steps} steps | standardized |" in report


def test_final_adapter_loads_with_plain_peft(reference_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from grasp_lora.models.loading import resolve_model_dir

    root, run, _ = reference_run
    base_dir = resolve_model_dir("tiny-llama", cache_dir=root / "cache")
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    ids = torch.tensor([[2, 40, 50, 60, 70]])
    plain = base(ids).logits
    model = PeftModel.from_pretrained(base, str(run / "seed_42/final/adapter"))
    adapted = model(ids).logits
    assert adapted.shape == plain.shape
    assert not torch.allclose(adapted, plain)  # the merged, pruned adapter changes the model
    cfg = json.loads((run / "seed_42/final/adapter/adapter_config.json").read_text())
    assert cfg["r"] == 8 and cfg["lora_alpha"] == 8  # c = 1 (merge.scaling none) -> alpha = c * r


def test_rerun_skips_every_finished_stage(reference_run, tmp_path):
    root, reference, _ = reference_run
    run = tmp_path / "run"  # the reference run is shared (read-only)
    shutil.copytree(reference, run)
    before = (run / "results.json").read_text()
    # --no-progress, not --quiet: --quiet hides the [skip] lines this test reads.
    proc = run_cli(["pipeline", "demo", *TINY_OVERRIDES, "--run-dir", str(run), "--no-progress"], root / "cache")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[run]  train" not in proc.stdout and "[run]  GRASP" not in proc.stdout
    assert proc.stdout.count("[skip]") >= 10
    assert comparable_results(run / "results.json") == comparable_results(before)


def test_killed_pipeline_resumes_to_the_same_report(reference_run):
    """Kill a real run at random points (SIGKILL: no clean-up), resume, compare with the uninterrupted run."""
    root, reference, _ = reference_run
    run = root / "killed"
    args = [sys.executable, "-m", "grasp_lora", "pipeline", "demo", *TINY_OVERRIDES, "--run-dir", str(run), "--quiet"]
    rng = random.Random(1234)
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen(args, env=cli_env(root / "cache"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(4.0, 9.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 1
    done = run_cli(args[3:], root / "cache")
    assert done.returncode == 0, done.stderr[-3000:]
    assert comparable_results(run / "results.json") == comparable_results(reference / "results.json")
    leftovers = [p for p in run.rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name]
    assert leftovers == []


def test_optuna_search_through_the_cli(reference_run, tmp_path):
    from grasp_lora.config import load_config
    from grasp_lora.pipeline import Experiment

    root, reference, _ = reference_run
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    proc = run_cli(["search", "demo", *TINY_OVERRIDES, "--run-dir", str(run), "--quiet", "--method", "optuna",
                    "--trials", "2", "--budget-minutes", "60", "--budget-clock", "cpu", "--budget-rule", "spend"],
                   root / "cache")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Optuna best ratio" in proc.stdout
    result = json.loads((run / "seed_42/optuna/result.json").read_text())
    assert len(result["trials"]) == 2 and result["stopped_by"] == "n_trials"
    assert (result["budget_s"], result["budget_clock"], result["budget_rule"]) == (3600, "cpu", "spend")
    complete = [t for t in result["trials"] if t["state"] == "complete"]
    best = min(complete, key=lambda t: t["value"])  # the lowest validation loss of the finished trials
    assert (result["best_ratio"], result["best_val_loss"]) == (best["ratio"], best["value"])
    exp = Experiment(load_config(run / "config.yaml"), progress=False)
    systems = exp.systems()
    assert systems["optuna_best_seed42"]["family"] == "optuna"
    assert Path(systems["optuna_best_seed42"]["adapter"]).is_dir()


def test_bad_input_is_one_line_on_stderr(tmp_path):
    proc = run_cli(["pipeline", "demo", "controller.p_min=0.9", "--run-dir", str(tmp_path / "r")], tmp_path / "cache")
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.strip().splitlines() if l]
    assert lines == ["grasp-lora: error: override 'controller.p_min=0.9': controller.p_min: must be below "
                     "controller.p_max (0.9 >= 0.8)"]
    proc = run_cli(["pipeline", "no_such_recipe"], tmp_path / "cache")
    assert proc.returncode == 2 and "shipped:" in proc.stderr and "demo" in proc.stderr
