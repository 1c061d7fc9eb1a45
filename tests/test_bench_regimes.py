"""The regime suite's bookkeeping (no model): regimes and variants parse, the scoreboard's schema,
the hit rule, the 3-point grid read from the 8-point one, cost in grid points."""

import pytest

from benchmarks.bench_regimes import GRID, GRID3, REGIMES, VARIANTS, case, summarize
from grasp_lora.config import load_config


def test_every_regime_and_variant_parses_with_p_max_at_the_grids_top():
    assert GRID[0] == 0.1 and GRID[-1] == 0.95 and len(GRID) == 8 and set(GRID3) <= set(GRID)
    for name, regime in REGIMES.items():
        for variant in VARIANTS.values():
            cfg = load_config(regime["recipe"], [*regime["overrides"], "controller.p_max=0.95", *variant])
            assert cfg.controller.p_max == 0.95, name


def seed_grid(curve, cpu=10.0):
    points = [{"ratio": r, "val_loss": v, "cpu_s": cpu} for r, v in zip(GRID, curve)]
    best = min(points, key=lambda p: p["val_loss"])
    return {"best_ratio": best["ratio"], "best_val_loss": best["val_loss"], "points": points, "test": {"f1": 40.0}}


@pytest.mark.parametrize("p_star, val_loss, hit", [
    (0.5, 1.00, True),    # the seed's best ratio
    (0.65, 1.10, True),   # one grid step (0.15) away, whatever the regret
    (0.8, 1.02, True),    # regret at the goal
    (0.8, 1.03, False),
])
def test_a_hit_is_low_regret_or_one_grid_step_from_the_seeds_best(p_star, val_loss, hit):
    g = seed_grid([1.3, 1.2, 1.1, 1.05, 1.0, 1.1, 1.2, 1.3])
    c = case("42", p_star, g, val_loss)
    assert c["hit"] is hit and c["regret"] == pytest.approx(val_loss - 1.0) and c["seed_best_ratio"] == 0.5


def test_the_scoreboard_has_the_issues_schema_and_reads_the_3_point_grid_from_the_8_point_one():
    curves = {"42": [1.3, 1.2, 1.1, 1.05, 1.0, 1.1, 1.2, 1.3], "7": [1.3, 1.0, 1.1, 1.05, 1.02, 1.1, 1.2, 1.3]}
    grid = {"ratios": GRID, "selected_ratio": 0.5, "seeds": {s: seed_grid(c) for s, c in curves.items()},
            "per_ratio": [{"ratio": r, "mean_val_loss": (a + b) / 2} for r, a, b in zip(GRID, *curves.values())]}
    ctrl = {"seeds": {"42": {"p_star": 0.48, "val_loss": 1.001, "controller_cpu_s": 25.0, "test": {"f1": 41.0}},
                      "7": {"p_star": 0.9, "val_loss": 1.25, "controller_cpu_s": 30.0, "test": {"f1": 39.0}}}}
    board = summarize({"regimes": {"r": {"grid": grid, "controllers": {"v": ctrl}}}}, "v")
    assert board["variant"] == "v" and (board["hits"], board["cases"]) == (1, 2)
    (r,) = board["regimes"]
    assert {"name", "grid_ratios", "best_ratio", "controller_cost_grid_points", "cases"} <= set(r)
    assert r["best_ratio"] == 0.5 and r["grid_ratios"] == GRID
    assert r["controller_cost_grid_points"] == pytest.approx(3.0)  # the dearer seed: 30 CPU s / 10 per point
    assert [set(c) >= {"seed", "p_star", "seed_best_ratio", "regret", "hit"} for c in r["cases"]] == [True, True]
    assert [(c["p_star"], c["hit"]) for c in r["cases"]] == [(0.48, True), (0.9, False)]
    # on the mean curve (best 1.01 at 0.5), linear between grid points: 0.48 -> 1.018, 0.9 -> 1.2667
    assert [c["mean_curve_regret"] for c in r["cases"]] == pytest.approx([0.008, 0.2567], abs=1e-4)
    # the 3-point grid {0.2, 0.5, 0.8}: seed 42 picks 0.5 (its best), seed 7 picks 0.2 (its best)
    assert [(c["p_star"], c["regret"]) for c in r["grid3_cases"]] == [(0.5, 0.0), (0.2, 0.0)]
    assert r["mean_test"] == pytest.approx(40.0) and r["grid_selected_test"] == pytest.approx(40.0)


def test_rule_analysis_reads_other_rules_and_round_caps_off_the_histories():
    from benchmarks.bench_regimes import rule_analysis

    curve = [1.3, 1.2, 1.1, 1.05, 1.0, 1.1, 1.2, 1.3]  # best 0.5
    grid = {"ratios": GRID, "selected_ratio": 0.5, "seeds": {"42": seed_grid(curve)},
            "per_ratio": [{"ratio": r, "mean_val_loss": v} for r, v in zip(GRID, curve)]}
    reward = lambda r: -((r - 0.5) ** 2)  # noqa: E731 the micro-dev agrees with the grid
    traj = [{"round": 1, "p_c": 0.3, "candidates": [0.2, 0.3, 0.4], "rewards": [reward(x) for x in (0.2, 0.3, 0.4)]},
            {"round": 2, "p_c": 0.4, "candidates": [0.35, 0.45, 0.7], "rewards": [reward(x) + 1 for x in (0.35, 0.45, 0.7)]}]
    ctrl = {"seeds": {"42": {"p_star": 0.4, "val_loss": 1.05, "trajectory": traj}}}
    (row,) = rule_analysis({"regimes": {"r": {"grid": grid, "controllers": {"v": ctrl}}}}, "v")
    assert row["interp_check"] == pytest.approx(0.0)  # the grid's own 0.4 point
    assert row["rules"]["final@1"]["p_star"] == 0.3 and row["rules"]["final@2"]["p_star"] == 0.4
    assert row["rules"]["best_trial@1"]["p_star"] == 0.4 and row["rules"]["best_trial@2"]["p_star"] == 0.45
    assert row["rules"]["fit@2"]["p_star"] == pytest.approx(0.5)  # the quadratic's vertex, offsets absorbed
    assert row["rules"]["fit@2"]["regret"] == pytest.approx(0.0) and row["rules"]["fit@2"]["hit"]
    assert row["rules"]["fit@1"]["p_star"] == pytest.approx(0.4)  # never beyond the candidates seen


def test_noise_ceiling_picks_from_the_other_seeds_and_counts_constant_and_random_rules():
    from benchmarks.bench_regimes import noise_ceiling

    # seeds 1 and 2 are best at 0.2; seed 3 is best at 0.8, where the others are poor
    curves = {"1": [1.2, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6], "2": [1.2, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6],
              "3": [1.5, 1.4, 1.3, 1.2, 1.1, 1.05, 1.0, 1.3]}
    grid = {"ratios": GRID, "seeds": {s: seed_grid(c) for s, c in curves.items()}}
    ceiling = noise_ceiling({"regimes": {"r": {"grid": grid}}})
    others = {c["seed"]: c for c in ceiling["other_seeds_best"]["per_case"]}
    # seed 1 learns 0.2 from seeds 2 and 3 (mean curve best at 0.2): a hit; seed 3 learns 0.2: regret 0.4
    assert others[1]["p_star"] == 0.2 and others[1]["hit"]
    assert others[3]["p_star"] == 0.2 and not others[3]["hit"] and others[3]["regret"] == pytest.approx(0.4)
    assert ceiling["other_seeds_best"]["hits"] == 2
    # 0.2 hits seeds 1 and 2 only; 0.8 hits seed 3 only (regret 0.5 elsewhere)
    assert ceiling["constant_0.2"]["hits"] == 2 and ceiling["constant_0.8"]["hits"] == 1
    # seeds 1 and 2: hits at 0.1, 0.2, 0.3 (one step) -> 3/8 each; seed 3: 0.65, 0.8, 0.95 -> 3/8
    assert ceiling["random"]["hits"] == pytest.approx(3 * 3 / 8)


def test_the_half_fidelity_rule_picks_by_each_grid_points_first_epoch(tmp_path):
    import json

    from benchmarks.bench_regimes import noise_ceiling

    final = [1.3, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6]   # best at 0.2 after two epochs
    first = [1.9, 1.8, 1.7, 1.6, 1.5, 1.4, 1.2, 1.3]   # but 0.8 looked best after one
    g = seed_grid(final)
    for point, half in zip(g["points"], first):
        folder = tmp_path / f"p{point['ratio']}"
        (folder / "adapter").mkdir(parents=True)
        events = [{"event": "step", "step": 1, "loss": 2.0}, {"event": "epoch", "epoch": 1, "val_loss": half},
                  {"event": "epoch", "epoch": 2, "val_loss": 0.0}]
        (folder / "train_log.jsonl").write_text("\n".join(json.dumps(e) for e in events))
        point["adapter"] = str(folder / "adapter")
    ceiling = noise_ceiling({"regimes": {"r": {"grid": {"ratios": GRID, "seeds": {"42": g}}}}})
    (c,) = ceiling["grid_after_epoch_1"]["per_case"]
    assert c["p_star"] == 0.8 and not c["hit"] and c["regret"] == pytest.approx(0.5)
    # without train logs (a cache cleared) the rule is left out rather than guessed
    for point in g["points"]:
        point["adapter"] = str(tmp_path / "gone" / "adapter")
    assert "grid_after_epoch_1" not in noise_ceiling({"regimes": {"r": {"grid": {"ratios": GRID, "seeds": {"42": g}}}}})
