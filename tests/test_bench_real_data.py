"""The real-data harness's bookkeeping (no model, no data): named variants, the hit rule, merging
result files from processes that ran side by side."""

import pytest

from benchmarks.bench_real_data import RECIPE, VARIANTS, case, merge_reports
from grasp_lora.config import load_config


# What BENCHMARKS.md (and benchmarks/notes/) report under each harness name: how the controller run
# trains, its reward, lookahead steps (lookahead reward only), advantage, p* rule and budget, as the
# runs recorded them. A change of package default must not change any of these.
REPORTED = {
    "paper": ("fixed", True, "immediate", None, "centered", "final", None),
    "authors": ("authors", True, "immediate", None, "centered", "best_trial", None),
    "std_adv": ("fixed", True, "immediate", None, "standardized", "final", None),
    "lookahead": ("fixed", True, "lookahead", 5, "centered", "final", None),
    "lookahead_std": ("fixed", True, "lookahead", 5, "standardized", "final", None),
    "dense_run": ("fixed", False, "immediate", None, "centered", "final", None),
    "dense_run_std": ("fixed", False, "immediate", None, "standardized", "final", None),
    "dense_ahead20_std": ("fixed", False, "lookahead", 20, "standardized", "final", None),
    "default": ("fixed", False, "lookahead", 10, "standardized", "final", 3.0),
}


def settings(c):
    return (c.fidelity, c.train_under_mask, c.reward, c.lookahead_steps if c.reward == "lookahead" else None,
            c.advantage, c.p_star_rule, c.budget_grid_points)


def test_every_named_variant_is_a_package_variant_and_resolves_to_what_benchmarks_reports():
    assert set(VARIANTS) == set(REPORTED)
    for name, overrides in VARIANTS.items():
        # a package variant plus explicit overrides, never a key left to the default
        assert overrides[0].startswith("controller.variant="), name
        assert all("null" not in o for o in overrides), name
        assert settings(load_config(RECIPE, overrides).controller) == REPORTED[name], name


def test_the_pinned_names_would_have_caught_the_drift_of_unnamed_variants():
    """Spelled as keys over the default (as they were), the dense runs took the default's budget of 3
    grid points when it came, and no longer named the uncapped runs BENCHMARKS.md reports."""
    unnamed = {"dense_run": ["controller.train_under_mask=false", "controller.reward=immediate",
                             "controller.advantage=centered"],
               "dense_ahead20_std": ["controller.train_under_mask=false", "controller.reward=lookahead",
                                     "controller.lookahead_steps=20", "controller.advantage=standardized"]}
    for name, overrides in unnamed.items():
        assert settings(load_config(RECIPE, overrides).controller) != REPORTED[name], name


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
