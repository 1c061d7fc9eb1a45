"""Optuna search over the prune ratio (optional extra): trials, resume, interrupted trials, pruning hook."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from grasp_lora.cli import resolve_recipe
from grasp_lora.config import load_config, seed_config
from grasp_lora.io import manifest_complete, read_json
from grasp_lora.pipeline import Experiment
from grasp_lora.search.optuna_search import (
    STUDY_NAME,
    EpochReporter,
    OptunaNotInstalledError,
    budget_allows,
    run_optuna_search,
    trial_dir,
)
from helpers import TINY_OVERRIDES


@pytest.fixture(scope="module")
def exp(tmp_path_factory):
    root = tmp_path_factory.mktemp("optuna_run")
    cfg = load_config(resolve_recipe("demo"), [*TINY_OVERRIDES, f"pipeline.output_dir={root}"])
    e = Experiment(cfg, root=root, progress=False, log=lambda _m: None)
    e.prepare()
    e.adapters()
    return e


def search(exp, seed, out, **kwargs):
    """The search of one seed, trained by the experiment's merged runs (as `Experiment.optuna`)."""
    return run_optuna_search(exp.merged_run, seed_config(exp.cfg, seed), out, **kwargs)


def _records(res):
    return [(t["number"], t["state"], t["ratio"], t["value"]) for t in res["trials"]]


def test_search_writes_results_and_resumes_without_redoing_trials(exp, tmp_path):
    out = tmp_path / "optuna"
    first = search(exp, 42, out, n_trials=2)
    assert first["n_finished"] == 2 and first["trials_run_this_call"] == 2 and first["stopped_by"] == "n_trials"
    c = exp.cfg.controller
    for t in first["trials"]:
        assert c.p_min <= t["ratio"] <= c.p_max
        assert t["state"] in ("complete", "pruned") and t["duration_s"] > 0
        assert manifest_complete(t["dir"]) and (Path(t["dir"]) / "adapter" / "adapter_config.json").is_file()
        assert set(t["intermediate"]) <= {1, 2}  # one report per epoch (2 epochs)
    complete = [t for t in first["trials"] if t["state"] == "complete"]
    best = min(complete, key=lambda t: t["value"])
    assert first["best_ratio"] == best["ratio"] == first["p_star"] and first["best_val_loss"] == best["value"]
    assert first["best_adapter"] == str(trial_dir(out, best["number"]) / "adapter")
    assert (out / "study.db").is_file() and manifest_complete(out)
    assert read_json(out / "result.json")["best_ratio"] == first["best_ratio"]
    stamps = {t["number"]: (Path(t["dir"]) / "result.json").stat().st_mtime_ns for t in first["trials"]}

    # Already enough finished trials: nothing runs.
    again = search(exp, 42, out, n_trials=2)
    assert again["trials_run_this_call"] == 0 and _records(again) == _records(first)

    # A budget that is already spent starts nothing either (a study with finished trials).
    broke = search(exp, 42, out, n_trials=5, budget_s=1e-9)
    assert broke["trials_run_this_call"] == 0 and broke["stopped_by"] == "budget"

    # More trials: only the missing one runs; the finished ones are kept as they were.
    more = search(exp, 42, out, n_trials=3)
    assert more["trials_run_this_call"] == 1 and more["n_finished"] == 3
    assert _records(more)[:2] == _records(first)
    for number, stamp in stamps.items():
        assert (trial_dir(out, number) / "result.json").stat().st_mtime_ns == stamp


def test_budget_still_runs_one_trial_on_a_new_study(exp, tmp_path):
    res = search(exp, 42, tmp_path / "optuna", n_trials=4, budget_s=1e-9)
    assert res["trials_run_this_call"] == 1 and res["n_finished"] == 1 and res["stopped_by"] == "budget"


def test_budget_rules_fit_never_overspends_spend_stops_nearest_the_budget():
    # 10 s budget, trials of 4 s: fit runs 2 (a third would end at 12 s); spend runs 3, since 2 s,
    # half a trial, were left after the second.
    def trials(rule, cost=4.0, budget=10.0):
        spent = 0.0
        while budget_allows(spent, cost, budget, rule):
            spent += cost
        return spent
    assert trials("fit") == 8.0 and trials("spend") == 12.0
    assert trials("fit", cost=3.0) == 9.0 and trials("spend", cost=3.0) == 9.0  # 1 s left < half a trial
    assert trials("spend", cost=6.0) == 12.0 and trials("fit", cost=6.0) == 6.0
    assert not budget_allows(10.0, 0.0, 10.0, "spend")  # a spent budget starts nothing


def test_cpu_clock_budget_records_each_trials_cost_and_the_spend(exp, tmp_path):
    res = search(exp, 42, tmp_path / "optuna", n_trials=6, budget_s=1e-9, budget_clock="cpu", budget_rule="spend")
    assert res["trials_run_this_call"] == 1 and res["stopped_by"] == "budget"
    assert res["budget_clock"] == "cpu" and res["budget_rule"] == "spend"
    (trial,) = res["trials"]
    assert trial["cpu_s"] > 0 and res["spent_s"] >= trial["cpu_s"]
    with pytest.raises(ValueError, match="budget_clock"):
        search(exp, 42, tmp_path / "other", n_trials=1, budget_s=1.0, budget_clock="gpu")


def test_interrupted_trial_is_failed_and_its_ratio_retried(exp, tmp_path):
    import optuna

    out = tmp_path / "optuna"
    out.mkdir()
    study = optuna.create_study(storage=f"sqlite:///{out / 'study.db'}", study_name=STUDY_NAME, direction="minimize")
    dead = study.ask()  # a trial a killed process left RUNNING
    dead.suggest_float("ratio", 0.1, 0.8)
    ratio = dead.params["ratio"]
    trial_dir(out, dead.number).mkdir()
    res = search(exp, 42, out, n_trials=1)
    states = {t["number"]: t for t in res["trials"]}
    assert states[dead.number]["state"] == "fail" and not trial_dir(out, dead.number).exists()
    retried = [t for t in res["trials"] if t["state"] in ("complete", "pruned")]
    assert len(retried) == 1 and retried[0]["ratio"] == ratio


def test_other_recipe_on_the_same_study_is_refused(exp, tmp_path):
    out = tmp_path / "optuna"
    search(exp, 42, out, n_trials=1)
    with pytest.raises(ValueError, match="another recipe or seed"):
        search(exp, 7, out, n_trials=2)


class _FakeTrial:
    def __init__(self, prune_at: int | None) -> None:
        self.prune_at, self.reports, self._epoch = prune_at, [], 0

    def report(self, value, step):
        self.reports.append((step, value))
        self._epoch = step

    def should_prune(self):
        return self.prune_at is not None and self._epoch >= self.prune_at


def test_epoch_reporter_reports_best_so_far_and_stops():
    trial = _FakeTrial(prune_at=2)
    hook = EpochReporter(trial)
    for epoch, val in [(1, 2.0), (2, 2.5)]:
        state = SimpleNamespace(epoch=epoch, extra={"val_loss": val}, stop=False)
        hook.on_epoch_end(state)
    assert trial.reports == [(1, 2.0), (2, 2.0)]  # best so far, not the epoch's own value
    assert hook.pruned and hook.pruned_at == 2 and state.stop


def test_pruned_trial_stops_training_after_that_epoch(exp, tmp_path):
    """The hook really reaches the training loop of merged_finetune: pruning at epoch 1 ends a
    2-epoch run after its first epoch."""
    cfg = seed_config(exp.cfg, 42)
    assert cfg.train.epochs == 2
    trial = _FakeTrial(prune_at=1)
    hook = EpochReporter(trial)
    res = exp.merged_run(cfg, tmp_path / "trial", ratio=0.5, kind="optuna_trial", hooks=[hook])
    assert hook.pruned_at == 1 and len(res["epochs"]) == 1 and [s for s, _ in trial.reports] == [1]
    full = exp.merged_run(cfg, tmp_path / "full", ratio=0.5, kind="optuna_trial",
                          hooks=[EpochReporter(_FakeTrial(prune_at=None))])
    assert len(full["epochs"]) == 2


def test_missing_optuna_is_one_clear_line(exp, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    with pytest.raises(OptunaNotInstalledError) as e:
        search(exp, 42, tmp_path / "optuna", n_trials=1)
    msg = str(e.value)
    assert "pip install 'grasp-lora[optuna]'" in msg and "\n" not in msg
    assert isinstance(e.value, ValueError)  # the CLI prints such errors as one line
    assert not (tmp_path / "optuna").exists()
