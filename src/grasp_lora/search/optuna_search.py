"""Optuna search over the prune ratio: a stronger baseline than the grid (optional dependency).

Each trial is one grid point: the fixed-ratio merged fine-tune of METHOD.md, "Final run and grid search"
(`training.finetune.merged_finetune`, the same recipe, seed and folders layout as a grid point)
at a ratio proposed by TPE in the controller's bounds [p_min, p_max]; its objective is the best
validation loss, the grid's selection rule. The best trial's adapter is the method's result (it
is already the "final run" at that ratio, so no extra run is needed).

Sampler: TPE (seeded; the first `startup_trials` trials are random, then TPE).

Pruner: HyperbandPruner over epochs (min_resource 1, max_resource = train.epochs, reduction
factor 3), fed the best validation loss so far after every epoch through a training-loop hook
(`on_epoch_end`, the loop's hook protocol). Why Hyperband and not WilcoxonPruner: what a trial
spends is training epochs, and the only learning-curve signal the recipe produces is the
per-epoch validation loss; successive halving on that curve stops a poor ratio after its first
epoch(s) and saves the remaining training. WilcoxonPruner compares per-example losses of a
*finished* solution across instances; our per-example losses exist only once training is done,
so it could only save validation forwards (a few percent of a trial), not training.

Storage: SQLite at <out_dir>/study.db, loaded if it exists, so a killed search resumes: finished
trials (complete or pruned) are kept, a trial left running by a dead process is marked failed and
its ratio re-queued. `n_trials` is the total of finished trials wanted; `budget_s` (seconds of
this call, on `budget_clock`: "wall" or "cpu", this process's CPU time) bounds the trials started,
judged by the median cost of the finished trials, with at least one trial always run.
`budget_rule` says how: "fit" starts a trial only if it is expected to end within the budget (the
search never overspends, and on average leaves half a trial unspent); "spend" starts one while at
least half a trial's cost is left (the search ends as near its budget as whole trials allow, over or
under, so a comparison at equal cost gives Optuna all of it). Results: <out_dir>/result.json and a
manifest; trial i lives in <out_dir>/trial_<i>/ (adapter/, result.json, train_log.jsonl).

Single process: the trial hook reports to the study from the process it runs in.

    from grasp_lora.config import seed_config
    from grasp_lora.search.optuna_search import run_optuna_search
    res = run_optuna_search(exp.merged_run, seed_config(exp.cfg, 42), exp.seed_dir(42) / "optuna", n_trials=8)
    res["best_ratio"], res["best_adapter"]
"""

from __future__ import annotations

import logging
import math
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Optional

from grasp_lora.config import Config, config_hash
from grasp_lora.io import write_json, write_manifest
from grasp_lora.training.finetune import TrainAtRatio

logger = logging.getLogger(__name__)

STUDY_NAME = "grasp-lora-ratio"


class OptunaSearchError(ValueError):
    """The search could not produce a result (no validation loss, no completed trial)."""


class OptunaNotInstalledError(ImportError, ValueError):
    """optuna is missing; the message is one line saying how to install it."""


def _import_optuna():
    try:
        import optuna
    except ImportError:
        raise OptunaNotInstalledError(
            "optuna is not installed: the Optuna search is an optional extra (pip install 'grasp-lora[optuna]')"
        ) from None
    return optuna


def trial_dir(out_dir: str | Path, number: int) -> Path:
    return Path(out_dir) / f"trial_{number:03d}"


class EpochReporter:
    """Training-loop hook: after every epoch, report the best validation loss so far to the trial
    (step = epoch) and stop the run when the pruner says so."""

    def __init__(self, trial) -> None:
        self.trial = trial
        self.best = math.inf
        self.pruned_at: Optional[int] = None

    @property
    def pruned(self) -> bool:
        return self.pruned_at is not None

    def on_epoch_end(self, state) -> None:
        val = state.extra.get("val_loss")
        if val is None:
            return
        self.best = min(self.best, float(val))
        self.trial.report(self.best, step=int(state.epoch))
        if self.trial.should_prune():
            self.pruned_at = int(state.epoch)
            state.stop = True  # the loop ends after this epoch (best epoch still restored)


BUDGET_CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def budget_allows(spent: float, expected: float, budget: float, rule: str) -> bool:
    """Whether a search that has spent `spent` of `budget` starts a trial expected to cost
    `expected`: "fit" only when it should end within the budget; "spend" while at least half of it
    is left (overspending by at most half a trial, as it underspends by at most half a trial)."""
    if spent >= budget:
        return False
    if rule == "fit":
        return spent + expected <= budget
    return budget - spent >= expected / 2.0


def _cost(t, clock: str) -> Optional[float]:
    """A finished trial's cost on the budget's clock (wall-clock from Optuna's own timestamps
    for trials stored before the cost was recorded)."""
    stored = t.user_attrs.get(f"{clock}_s")
    if stored is not None:
        return float(stored)
    return _duration(t) if clock == "wall" else None


def _duration(t) -> Optional[float]:
    if t.datetime_start is None or t.datetime_complete is None:
        return None
    return (t.datetime_complete - t.datetime_start).total_seconds()


def _trial_record(t, out: Path) -> dict[str, Any]:
    return {
        "number": t.number,
        "state": t.state.name.lower(),
        "ratio": t.params.get("ratio"),
        "value": t.value if t.values else None,
        "intermediate": {int(k): v for k, v in sorted(t.intermediate_values.items())},
        "duration_s": _duration(t),
        "dir": str(trial_dir(out, t.number)),
        **{k: v for k, v in t.user_attrs.items()},
    }


def run_optuna_search(
    train_at: TrainAtRatio,
    cfg: Config,
    out_dir: str | Path,
    n_trials: int,
    budget_s: Optional[float] = None,
    *,
    budget_clock: str = "wall",
    budget_rule: str = "fit",
    startup_trials: int = 3,
    reduction_factor: int = 3,
    log: Callable[[str], None] = logger.info,
) -> dict[str, Any]:
    """TPE + Hyperband search of the prune ratio in [controller.p_min, controller.p_max].

    `cfg` is one seed's recipe (`config.seed_config`); its train.seed seeds the sampler. Each
    trial is `train_at(cfg, trial folder, ratio=..., kind="optuna_trial", hooks=[reporter])`,
    which needs a non-empty validation split. Returns (and writes to out_dir/result.json) the best
    ratio, its validation loss and adapter, every trial, and why the search stopped ("n_trials"
    or "budget")."""
    optuna = _import_optuna()
    from optuna.trial import TrialState

    if n_trials < 1:
        raise ValueError(f"n_trials: must be >= 1, got {n_trials}")
    if budget_s is not None and budget_s <= 0:
        raise ValueError(f"budget_s: must be > 0 or None, got {budget_s}")
    if budget_clock not in BUDGET_CLOCKS:
        raise ValueError(f"budget_clock: one of {sorted(BUDGET_CLOCKS)}, got {budget_clock!r}")
    if budget_rule not in ("fit", "spend"):
        raise ValueError(f"budget_rule: 'fit' or 'spend', got {budget_rule!r}")
    clock = BUDGET_CLOCKS[budget_clock]
    seed = cfg.train.seed
    c = cfg.controller

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(out / 'study.db').resolve()}"
    pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, cfg.train.epochs),
                                            reduction_factor=reduction_factor)
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, direction="minimize", pruner=pruner,
                                load_if_exists=True)
    recipe = config_hash(cfg)
    stored = study.user_attrs.get("config_hash")
    if stored is None:
        study.set_user_attr("config_hash", recipe)
        study.set_user_attr("bounds", [c.p_min, c.p_max])
        study.set_user_attr("seed", seed)
    elif stored != recipe:
        raise ValueError(f"{out / 'study.db'}: the stored study was run with another recipe or seed "
                         f"(config hash {stored} vs {recipe}); use a new out_dir")
    # A seeded sampler; offset by the trials already stored so that a resumed search does not
    # replay the random start-up draws of the first process.
    study.sampler = optuna.samplers.TPESampler(seed=seed + 7919 * len(study.trials), n_startup_trials=startup_trials)

    # Trials a dead process left running: fail them and retry their ratios first.
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)
        shutil.rmtree(trial_dir(out, t.number), ignore_errors=True)
        if "ratio" in t.params:
            study.enqueue_trial({"ratio": t.params["ratio"]})
            log(f"       optuna: trial {t.number} was interrupted; ratio {t.params['ratio']:.4f} re-queued")

    done_states = (TrialState.COMPLETE, TrialState.PRUNED)
    started, started_clock = time.perf_counter(), clock()
    stopped_by = "n_trials"
    ran = 0
    while True:
        finished = study.get_trials(deepcopy=False, states=done_states)
        if len(finished) >= n_trials:
            break
        if budget_s is not None and finished:
            costs = [_cost(t, budget_clock) for t in finished]
            complete = [c for t, c in zip(finished, costs) if t.state == TrialState.COMPLETE and c is not None]
            known = complete or [c for c in costs if c is not None]
            if not budget_allows(clock() - started_clock, statistics.median(known) if known else 0.0, budget_s, budget_rule):
                stopped_by = "budget"
                break
        trial = study.ask()
        ratio = trial.suggest_float("ratio", c.p_min, c.p_max)
        tdir = trial_dir(out, trial.number)
        log(f"[run]  optuna trial {trial.number} (seed {seed}): ratio {ratio:.4f}")
        hook = EpochReporter(trial)
        trial_started = clock()
        try:
            res = train_at(cfg, tdir, ratio=ratio, kind="optuna_trial", hooks=[hook])
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        trial.set_user_attr(f"{budget_clock}_s", clock() - trial_started)
        trial.set_user_attr("real_sparsity", res["real_sparsity"])
        trial.set_user_attr("best_epoch", res["best_epoch"])
        trial.set_user_attr("epochs_run", len(res["epochs"]))
        trial.set_user_attr("wall_clock_s", res["wall_clock_s"])
        if hook.pruned:
            trial.set_user_attr("pruned_at_epoch", hook.pruned_at)
            study.tell(trial, state=TrialState.PRUNED)
            log(f"       pruned after epoch {hook.pruned_at} (best val loss so far {hook.best:.4f})")
        else:
            if res["best_val_loss"] is None:
                study.tell(trial, state=TrialState.FAIL)
                raise OptunaSearchError(f"optuna trial {trial.number}: no validation loss (empty val split?)")
            study.tell(trial, res["best_val_loss"])
            log(f"       val loss {res['best_val_loss']:.4f}")
        ran += 1

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise OptunaSearchError(f"{out}: no Optuna trial completed (all were pruned or failed)")
    best = study.best_trial
    trials = [_trial_record(t, out) for t in study.get_trials(deepcopy=False)]
    summary = {
        "method": "optuna",
        "best_ratio": best.params["ratio"],
        "p_star": best.params["ratio"],
        "best_val_loss": best.value,
        "best_trial": best.number,
        "best_adapter": str(trial_dir(out, best.number) / "adapter"),
        "n_trials_requested": n_trials,
        "n_finished": sum(1 for t in trials if t["state"] in ("complete", "pruned")),
        "n_complete": sum(1 for t in trials if t["state"] == "complete"),
        "n_pruned": sum(1 for t in trials if t["state"] == "pruned"),
        "trials_run_this_call": ran,
        "stopped_by": stopped_by,
        "budget_s": budget_s,
        "budget_clock": budget_clock,
        "budget_rule": budget_rule,
        "spent_s": clock() - started_clock,
        "wall_clock_s": time.perf_counter() - started,
        "total_trial_s": sum(t["duration_s"] or 0.0 for t in trials if t["state"] in ("complete", "pruned")),
        "bounds": [c.p_min, c.p_max],
        "sampler": f"TPE(seed={seed}, n_startup_trials={startup_trials})",
        "pruner": f"Hyperband(min_resource=1, max_resource={max(1, cfg.train.epochs)}, reduction_factor={reduction_factor}) "
                  "on the best val loss after each epoch",
        "seed": seed,
        "study": STUDY_NAME,
        "storage": storage,
        "trials": trials,
    }
    write_json(out / "result.json", summary)
    write_manifest(out, stage="optuna", config=cfg.to_dict(), **{k: v for k, v in summary.items() if k != "trials"})
    return summary
