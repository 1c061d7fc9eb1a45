"""The controller replay benchmark: a table of losses replays the real controller exactly where the
losses are what the table says, and the probe run scores the very weights a dense controller run sees."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from benchmarks.bench_controller_replay import (ProbeController, TableScorer, goal_rate, grid_val_loss, probing,
                                                replay, replay_config)
from benchmarks.bench_real_data import RECIPE
from grasp_lora.config import load_config
from grasp_lora.controller import grpo
from grasp_lora.controller.grpo import GRPOController

RATIOS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]


class PiecewiseLinearScorer:
    """A live scorer whose round-t loss is linear between RATIOS (what the table assumes)."""

    def __init__(self, dense, grid_losses):
        self.dense, self.grid_losses, self.round, self.committed = dense, grid_losses, -1, None

    def loss(self, r):
        return float(np.interp(r, [0.0, *RATIOS], [self.dense[self.round], *self.grid_losses[self.round]]))

    def committed_loss(self):
        self.round += 1
        return self.dense[self.round] if self.committed is None else self.loss(self.committed)

    def refresh_importance(self):
        pass

    def candidate_loss(self, r):
        return self.loss(r)

    def commit(self, r):
        self.committed = r
        return r


@pytest.mark.parametrize("variant", ["dense_run", "dense_run_std", "std_lr0.01_c6", "dense_run_best_trial"])
def test_replay_on_a_table_is_the_live_controller_when_losses_are_those_of_the_table(variant):
    rng = np.random.default_rng(0)
    rounds = 8
    dense = list(1.0 + 0.1 * rng.random(rounds))
    grid_losses = [list(d + 0.2 * rng.standard_normal(len(RATIOS))) for d in dense]
    cfg = replay_config(load_config(RECIPE, []).controller, variant)
    live = GRPOController(replace(cfg, seed=3))
    scorer = PiecewiseLinearScorer(dense, grid_losses)
    for t in range(rounds):
        live.run_round(10 * (t + 1), scorer)
    table = [{"step": 10 * (t + 1), "dense_loss": dense[t], "ratios": RATIOS, "losses": grid_losses[t]} for t in range(rounds)]
    p_star, history = replay(table, cfg, 3)
    assert history == live.history
    assert p_star == live.p_star()
    assert any(h["committed_ratio"] is not None for h in history)  # the replay did commit, L0 took p_c's loss


def test_table_scorer_reads_round_by_round_and_interpolates():
    table = [{"dense_loss": 1.0, "ratios": [0.5, 1.0], "losses": [2.0, 3.0]},
             {"dense_loss": 5.0, "ratios": [0.5, 1.0], "losses": [4.0, 3.0]}]
    s = TableScorer(table)
    assert s.committed_loss() == 1.0  # round 1, nothing committed: dense
    assert s.candidate_loss(0.25) == pytest.approx(1.5)
    s.commit(0.75)
    assert s.committed_loss() == pytest.approx(3.5)  # round 2 at the committed ratio
    assert s.candidate_loss(0.5) == 4.0


def test_grid_val_loss_interpolates_between_grid_points():
    g = {"points": [{"ratio": 0.2, "val_loss": 1.2}, {"ratio": 0.1, "val_loss": 1.0}]}
    assert grid_val_loss(g, 0.15) == pytest.approx(1.1)
    assert grid_val_loss(g, 0.9) == pytest.approx(1.2)


def test_goal_rate_counts_controller_seeds_that_miss_at_most_one_case_over_all_languages():
    rows = [{"variant": "v", "lang": "ar", "cases": 3, "hits_per_controller_seed": [3, 3, 0, 2]},
            {"variant": "v", "lang": "zh", "cases": 3, "hits_per_controller_seed": [3, 2, 3, 2]},
            {"variant": "w", "lang": "ar", "p_star_mean": 0.5}]  # no grid: no goal rate
    # controller seed 0: 6 of 6, seed 1: 5 of 6 (goal), seed 2: 3 of 6, seed 3: 4 of 6
    assert goal_rate(rows, "v") == pytest.approx(0.5)
    assert goal_rate(rows, "w") is None and goal_rate(rows, "absent") is None


def test_probing_swaps_the_controller_only_inside():
    with probing([0.3]):
        assert grpo.GRPOController is ProbeController and ProbeController.probe_ratios == (0.3,)
    assert grpo.GRPOController is GRPOController


def test_probe_scores_the_weights_of_the_dense_controller_run(tmp_path, monkeypatch):
    """The dense run's trajectory does not depend on its controller: the probe's round-1 losses at the
    real run's round-1 candidates are the real run's, and both runs validate to the same losses."""
    from grasp_lora.cli import resolve_recipe
    from grasp_lora.pipeline import Experiment
    from grasp_lora.search.grasp import run_grasp_search
    from helpers import TINY_OVERRIDES

    monkeypatch.setenv("GRASP_LORA_CACHE", str(tmp_path / "cache"))
    cfg = load_config(resolve_recipe("demo"), [*TINY_OVERRIDES, "controller.train_under_mask=false",
                                               "controller.reward=immediate"])
    exp = Experiment(cfg, root=tmp_path / "run", progress=False, log=lambda _: None)
    exp.prepare()
    exp.adapters()
    lang = cfg.data.target_lang

    def run(out, cfg=cfg):
        model, tok = exp.base_model()
        run_grasp_search(cfg, model, tok, exp.source_target_adapters, exp.rows(lang, "train"), exp.rows(lang, "val"),
                         exp.rows(lang, "micro_dev"), out, progress=False)
        return ([json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()],
                [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()])

    real, real_log = run(tmp_path / "real")
    with probing(real[0]["candidates"]):
        probed, probe_log = run(tmp_path / "probe")
    assert len(probed) == len(real) > 1
    assert probed[0]["dense_loss"] == real[0]["L0"]
    assert probed[0]["losses"] == real[0]["losses"]
    assert all(h["committed_ratio"] is None for h in probed)
    val = [(r.get("step"), r.get("val_loss")) for r in real_log if "val_loss" in r]
    assert val and val == [(r.get("step"), r.get("val_loss")) for r in probe_log if "val_loss" in r]
    # the lookahead probe trains every scored mask for a few steps and restores all of it: the run's
    # own weights are still the dense run's, its losses are not the immediate ones, and at round 1
    # (no commit yet) they are a real dense-run lookahead controller's
    lookahead = load_config(resolve_recipe("demo"), [*TINY_OVERRIDES, "controller.variant=dense_lookahead",
                                                     "controller.train_under_mask=false", "controller.reward=lookahead",
                                                     "controller.lookahead_steps=2"])  # the whole schedule, as the probe
    real_ahead, _ = run(tmp_path / "real_lookahead", lookahead)
    with probing(real_ahead[0]["candidates"]):
        ahead, ahead_log = run(tmp_path / "lookahead", lookahead)
    assert val == [(r.get("step"), r.get("val_loss")) for r in ahead_log if "val_loss" in r]
    assert all(h["committed_ratio"] is None for h in ahead)
    assert ahead[0]["dense_loss"] == real_ahead[0]["L0"] and ahead[0]["losses"] == real_ahead[0]["losses"]
    assert ahead[0]["losses"] != probed[0]["losses"]
