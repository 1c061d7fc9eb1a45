"""The real-data harness's bookkeeping (no model, no data): named variants, the hit rule, merging
result files from processes that ran side by side."""

import pytest

from benchmarks.bench_real_data import RECIPE, VARIANTS, case, merge_reports
from grasp_lora.config import load_config


def test_every_named_variant_parses_and_keeps_its_meaning_whatever_the_default():
    resolved = {}
    for name, overrides in VARIANTS.items():
        c = load_config(RECIPE, overrides).controller
        resolved[name] = (c.fidelity, c.resolved_advantage(), c.resolved_reward(), c.resolved_train_under_mask(),
                          c.resolved_lookahead_steps() if c.resolved_reward() == "lookahead" else None)
    # each name spells out how its controller run trains, its reward (and lookahead steps) and its
    # advantage, so a change of default cannot change what it names
    for name, o in VARIANTS.items():
        keys = {x.split("=")[0] for x in o}
        assert "controller.advantage" in keys, name
        if "controller.fidelity" not in keys:
            assert {"controller.train_under_mask", "controller.reward"} <= keys, name
        if "controller.reward=lookahead" in o:
            assert "controller.lookahead_steps" in keys, name
    assert resolved["paper"] == ("fixed", "centered", "immediate", True, None)
    assert resolved["authors"] == ("authors", "centered", "immediate", True, None)
    assert resolved["lookahead"] == ("fixed", "centered", "lookahead", True, 5)
    assert resolved["dense_run"] == ("fixed", "centered", "immediate", False, None)
    assert resolved["dense_run_std"] == ("fixed", "standardized", "immediate", False, None)
    assert resolved["dense_ahead20_std"] == ("fixed", "standardized", "lookahead", False, 20)
    # the default controller (every key null) on the harness's recipe (K 10) is dense_ahead20_std with a
    # K-step lookahead and a budget of 3 grid points (the default since 2026-12-05)
    default = load_config(RECIPE, []).controller
    assert (default.fidelity, default.resolved_advantage(), default.resolved_reward(), default.resolved_train_under_mask(),
            default.resolved_lookahead_steps()) == resolved["dense_ahead20_std"][:4] + (10,)
    assert default.resolved_budget_grid_points() == 3.0


@pytest.mark.parametrize("p_star, best, regret, hit", [
    (0.703, 0.8, 0.071, True),    # within one grid step, whatever the regret
    (0.537, 0.8, 0.059, False),
    (0.537, 0.8, 0.020, True),    # regret at the goal
    (0.397, 0.1, 0.021, False),
    (0.2, 0.1, 0.5, True),        # one step below
])
def test_a_case_is_a_hit_by_regret_or_by_ratio(p_star, best, regret, hit):
    assert case("ar", 42, p_star, best, regret)["hit"] is hit


def _grid(seeds, best_loss):
    return {"selected_ratio": 0.8, "per_ratio": {}, "seeds": {
        s: {"best_ratio": 0.8, "best_val_loss": best_loss, "test": {"f1": 40.0},
            "points": [{"wall_clock_s": 10.0, "cpu_s": 20.0}]} for s in seeds}}


def _variant(seed, val_loss, p_star):
    return {"controller": {"p_star": p_star}, "rows": [{"seed": seed, "p_star": p_star, "val_loss": val_loss}]}


def test_merge_keeps_the_grid_with_most_seeds_and_the_last_row_per_seed():
    first = {"languages": {"zh": {"grid": _grid(["42"], 1.0), "variants": {"paper": _variant(42, 1.2, 0.4)}}}}
    later = {"languages": {"zh": {"grid": _grid(["42", "1337"], 0.9),
                                  "variants": {"paper": _variant(1337, 1.1, 0.4)}}}}
    rerun = {"languages": {"zh": {"grid": None, "variants": {"paper": _variant(42, 1.05, 0.4)}}}}
    merged = merge_reports([first, later, rerun])["zh"]
    assert set(merged["grid"]["seeds"]) == {"42", "1337"}
    rows = merged["variants"]["paper"]["rows"]
    assert rows["42"]["val_loss"] == 1.05  # the later file wins
    # regret against the merged grid's seed, for rows from files that had no grid
    assert rows["42"]["regret"] == pytest.approx(1.05 - 0.9)
    assert rows["1337"]["regret"] == pytest.approx(1.1 - 0.9)
    assert rows["42"]["grid_cpu_s"] == 20.0
