"""The regime suite's bookkeeping (no model): regimes and variants parse, the scoreboard's schema,
the hit rule, the 3-point grid read from the 8-point one, cost in grid points; suite v2's regimes,
plan, per-case method answers and scoreboard (pairs, leave-one-seed-out regret, cost) from fake
case records."""

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


# ---- suite v2 ---------------------------------------------------------------------------------


def test_suite_v2_has_six_regimes_four_seeds_and_every_case_its_own_split_and_judging_set():
    from benchmarks.bench_regimes import EXTRA_V2, REGIMES_V2, SEEDS_V2, SUITE_V2, regime_v2_config

    assert len(SUITE_V2) >= 6 and len(SEEDS_V2) >= 4 and len(set(SEEDS_V2)) == len(SEEDS_V2)
    # v1's regimes with a ratio effect (best low, middle, high) and real XQuAD both ways; then real
    # summaries, the paper's lr and lots of data, defined and runnable after the suite
    assert SUITE_V2 == ["demo", "demo_lr3e-3", "demo_few_source", "demo_lora_scaling", "xquad_ar", "xquad_zh"]
    assert sum("data" in REGIMES_V2[r] for r in SUITE_V2) >= 2 and "demo_qkv_mlp" not in REGIMES_V2
    assert set(SUITE_V2) | set(EXTRA_V2) | {"summaries_ar"} == set(REGIMES_V2)
    for name in REGIMES_V2:
        for seed in SEEDS_V2[:2]:
            cfg = regime_v2_config(name, seed)
            assert cfg.data.seed == seed and cfg.pipeline.seeds == [seed] and cfg.pipeline.controller_per_seed, name
            assert cfg.grid.ratios == GRID and cfg.controller.p_max == 0.95 and cfg.pipeline.baselines == ["adaptive_merge"]
            assert cfg.controller.p_init == 0.4 and not cfg.eval.bertscore
            t = cfg.data.target_sizes
            if name.startswith("summaries"):  # the pools (99 / 106 pairs) allow neither 200 nor 50
                assert t.train + t.val + t.micro_dev + t.test <= {"summaries_ar": 99, "summaries_zh": 106}[name]
                assert t.test >= 47 and cfg.data.task == "xlsum"
            else:
                assert t.test >= 200 and t.val >= 50, name
            if name.startswith("demo"):
                assert t.train + t.val + t.micro_dev + t.test <= 360  # the demo pool
            if name.startswith("xquad"):
                assert cfg.data.split_by == "context" and cfg.data.target_lang == name[-2:]
    assert regime_v2_config("demo_lr1e-4", 42).train.lr == 1e-4
    assert regime_v2_config("demo_more_data", 42).data.target_sizes.train == 96
    # the committed suite's regimes stay reachable unchanged (the demo as v1 measured it)
    assert REGIMES["demo"]["overrides"] == [] and "demo_qkv_mlp" in REGIMES


def test_every_variant_is_a_package_variant_plus_explicit_overrides_and_the_default_is_grasp():
    from benchmarks.bench_regimes import REGIMES_V2, method_name, regime_v2_config

    for label, overrides in VARIANTS.items():
        assert overrides[0].startswith("controller.variant=") and not any(o.endswith("=null") for o in overrides), label
        for name in REGIMES_V2:
            assert regime_v2_config(name, 42, overrides).controller.variant == overrides[0].split("=", 1)[1]
    assert VARIANTS["default"] == ["controller.variant=dense_lookahead_budget"]
    assert method_name("default") == "grasp" and method_name("paper") == "paper"
    cfg = regime_v2_config("xquad_ar", 42, VARIANTS["default"])
    assert cfg.controller.every_k_steps == 5 and cfg.controller.lookahead_steps == 5  # K steps, as the demo


def test_the_demo_regimes_draw_their_own_split_per_seed_from_the_bundled_pool(tmp_path):
    from benchmarks.bench_regimes import regime_v2_config
    from grasp_lora.data.prepare import load_split, prepare_data

    ids = {}
    for seed in (42, 1337):
        cfg = regime_v2_config("demo_more_data", seed)
        prepare_data(cfg, tmp_path / str(seed))
        splits = {s: [r["id"] for r in load_split(tmp_path / str(seed), "ar", s)] for s in ("train", "val", "test")}
        assert [len(v) for v in splits.values()] == [96, 50, 200]
        assert not set(splits["test"]) & (set(splits["train"]) | set(splits["val"]))
        ids[seed] = splits
    assert ids[42]["test"] != ids[1337]["test"] and ids[42]["train"] != ids[1337]["train"]


def test_the_plan_estimates_each_regime_from_the_committed_grid_points(capsys):
    import json

    from benchmarks import _common as C
    from benchmarks.bench_regimes import SEEDS_V2, SUITE_V2, forward_equivalents, grid_point_cpu_s, main, regime_plan

    demo = regime_plan("demo", SEEDS_V2)
    measured = grid_point_cpu_s(json.loads((C.RESULTS_DIR / "bench_regimes_demo.json").read_text())["regime"]["grid"])
    assert demo["measured_point_cpu_s"] == pytest.approx(measured)
    # v2's point: the measured one scaled by forward-equivalents (train 32 x 2 epochs x 2 + val 50 x 2 against val 12)
    assert demo["point_cpu_s"] == pytest.approx(measured * forward_equivalents(32, 50, 2) / forward_equivalents(32, 12, 2))
    assert demo["cpu_hours"] == pytest.approx(demo["case_cpu_s"] * 4 / 3600)
    assert regime_plan("demo_lr1e-4", SEEDS_V2)["point_cpu_s"] == pytest.approx(5 * demo["point_cpu_s"])  # 10 epochs
    for name in SUITE_V2:  # every calibration file is committed and read
        p = regime_plan(name, SEEDS_V2)
        assert 30 < p["point_cpu_s"] < 2000 and p["cpu_hours"] > 0
    assert main(["--plan"]) == 0
    out = capsys.readouterr().out
    assert "xquad_ar" in out and "CPU hours" in out and "24 cases" in out


def fake_case(regime, seed, curve, grasp_ratio, np_val=1.5, real=False):
    """A case record as the phases write it: 8 grid points (test loss = val loss + 0.1), the
    no-pruning run, GRASP (0.1 lower test loss than the 3-point grid's pick, F1 2 points higher),
    the paper variant and Optuna."""
    key = lambda r: f"seed_{seed}/grid/point_{r:.4f}"  # noqa: E731
    points = [{"ratio": r, "val_loss": v, "cpu_s": 10.0, "key": key(r), "test": {"loss": v + 0.1, "n": 2, "losses": [v, v + 0.2]}}
              for r, v in zip(GRID, curve)]
    points[0]["val_check"] = -1e-6 * seed
    g3 = min((p for p in points if p["ratio"] in GRID3), key=lambda p: p["val_loss"])
    metrics = {p["key"]: {"f1": 50.0 - 10 * p["val_loss"], "exact_match": 1.0} for p in points}
    metrics.update({"baselines/adaptive_merge": {"f1": 30.0}, "variants/default/final": {"f1": metrics[g3["key"]]["f1"] + 2},
                    "optuna/trial_001": {"f1": 40.0}})
    return {"regime": regime, "seed": seed, "suite": "v2", "real_data": real, "task": "mlqa", "metric": "f1", "p_init": 0.4,
            "test_ids": ["a", "b"], "grid": {"ratios": GRID, "points": points},
            "no_pruning": {"ratio": 0.0, "val_loss": np_val, "cpu_s": 10.0, "key": "baselines/adaptive_merge",
                           "test": {"loss": np_val + 0.1}},
            "controllers": {"default": {"p_star": grasp_ratio, "val_loss": 1.0, "controller_cpu_s": 25.0, "final_cpu_s": 10.0,
                                        "key": "variants/default/final", "test": {"loss": g3["test"]["loss"] - 0.1}},
                            "paper": {"p_star": 0.3, "val_loss": 1.1, "controller_cpu_s": 40.0, "final_cpu_s": 10.0,
                                      "key": "variants/paper/final", "test": {"loss": 1.3}}},
            "optuna": {"best_ratio": 0.5, "best_val_loss": 1.0, "cpu_s": 30.0, "budget_cpu_s": 35.0, "n_finished": 3,
                       "key": "optuna/trial_001", "test": {"loss": 1.2}},
            "metrics": metrics}


SAME = [1.3, 1.2, 1.1, 1.05, 1.0, 1.1, 1.2, 1.3]       # best at 0.5
LOW = [1.2, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6]         # best at 0.2
HIGH = [1.5, 1.4, 1.3, 1.2, 1.1, 1.05, 1.0, 1.3]       # best at 0.8


def fake_cases():
    return ([fake_case("r_same", s, SAME, 0.45) for s in (1, 2, 3)]
            + [fake_case("r_split", 1, LOW, 0.2, real=True), fake_case("r_split", 2, LOW, 0.2, real=True),
               fake_case("r_split", 3, HIGH, 0.8, real=True)])


def test_each_methods_answer_is_read_off_the_case_record():
    from benchmarks.bench_regimes import case_methods

    m = case_methods(fake_case("r", 3, HIGH, 0.8))
    assert set(m) == {"grasp", "paper", "grid3", "grid8", "optuna", "constant", "no_pruning"}
    assert (m["grid8"]["ratio"], m["grid8"]["cpu_s"]) == (0.8, 80.0)          # the 8-point grid's best, 8 runs
    assert (m["grid3"]["ratio"], m["grid3"]["cpu_s"]) == (0.8, 30.0)          # best of {0.2, 0.5, 0.8}, 3 runs
    assert (m["constant"]["ratio"], m["constant"]["val_loss"], m["constant"]["cpu_s"]) == (0.4, 1.2, 10.0)
    assert (m["no_pruning"]["ratio"], m["no_pruning"]["test_loss"]) == (0.0, pytest.approx(1.6))
    assert m["grasp"]["cpu_s"] == 35.0 and m["grasp"]["test_loss"] == pytest.approx(1.0)  # controller + final run
    assert m["grid8"]["test_loss"] == pytest.approx(1.1) and m["grid8"]["test_metric"] == pytest.approx(40.0)
    assert m["grasp"]["test_metric"] == pytest.approx(42.0) and m["paper"]["test_metric"] is None  # not generated
    assert (m["optuna"]["ratio"], m["optuna"]["cpu_s"], m["optuna"]["budget_cpu_s"]) == (0.5, 30.0, 35.0)
    for row in m.values():
        assert {"ratio", "val_loss", "test_loss", "test_metric", "cpu_s"} <= set(row)


def test_the_hedge_returns_the_better_on_validation_of_its_controller_and_the_anchor_and_pays_for_both():
    from benchmarks.bench_regimes import HEDGE_ANCHOR, case_methods, three_seed_cost

    case = fake_case("r", 1, SAME, 0.45)  # SAME: the grid point at 0.2 has val loss 1.2
    short = {"p_star": 0.5, "val_loss": 1.1, "controller_cpu_s": 12.0, "final_cpu_s": 10.0, "key": "variants/short/final",
             "test": {"loss": 1.15}, "rounds": 1}
    case["controllers"]["bounded_short"] = short
    hedged = case_methods(case)["hedged"]
    assert (hedged["ratio"], hedged["val_loss"], hedged["test_loss"]) == (0.5, 1.1, 1.15)  # the controller's run
    assert hedged["cpu_s"] == pytest.approx(12.0 + 10.0 + 10.0)  # controller + final + the anchor's grid point
    assert three_seed_cost("hedged", hedged, 10.0) == pytest.approx(32.0 + 2 * 10.0)
    case["controllers"]["bounded_short"] = short | {"val_loss": 1.3}
    hedged = case_methods(case)["hedged"]
    anchor = [p for p in case["grid"]["points"] if p["ratio"] == HEDGE_ANCHOR][0]
    assert (hedged["ratio"], hedged["val_loss"], hedged["test_loss"]) == (HEDGE_ANCHOR, 1.2, anchor["test"]["loss"])
    assert hedged["test_metric"] == case["metrics"][anchor["key"]]["f1"]
    del case["controllers"]["bounded_short"]
    assert "hedged" not in case_methods(case)


def test_the_v2_scoreboard_has_the_issues_schema_and_its_statistics():
    from benchmarks.bench_regimes import scoreboard_v2

    board = scoreboard_v2(fake_cases(), regime_order=["r_split", "r_same"])
    assert board["default_method"] == "grasp" and board["cases"] == 6
    assert board["methods"] == ["grasp", "grid3", "grid8", "optuna", "constant", "no_pruning", "paper"]
    assert [(r["name"], r["real_data"]) for r in board["regimes"]] == [("r_split", True), ("r_same", False)]
    for r in board["regimes"]:
        for c in r["cases"]:
            assert isinstance(c["seed"], int)
            for row in c["methods"].values():
                assert {"ratio", "val_loss", "test_loss", "test_metric", "cpu_s"} <= set(row)
    # GRASP's test loss is 0.1 below the 3-point grid's in all 6 cases: a clear, significant effect
    (p,) = [p for p in board["pairs"] if (p["a"], p["b"], p["metric"]) == ("grasp", "grid3", "test_loss")]
    assert {"a", "b", "metric", "mean_diff", "ci95", "n", "sign_test_p", "a_better"} <= set(p)
    assert p["mean_diff"] == pytest.approx(-0.1) and p["ci95"] == pytest.approx([-0.1, -0.1]) and p["n"] == 6
    assert p["a_better"] and p["significant"] and p["sign_test_p"] == pytest.approx(2 * 0.5 ** 6)
    assert p["ci95_clustered"] == pytest.approx([-0.1, -0.1])  # regimes resampled: the same constant difference
    (p,) = [p for p in board["pairs"] if (p["a"], p["b"], p["metric"]) == ("grasp", "grid3", "test_metric")]
    assert p["mean_diff"] == pytest.approx(2.0) and p["a_better"]
    # every pair once per metric; the paper variant has no metric, so no metric pairs with it
    assert len([p for p in board["pairs"] if p["metric"] == "test_loss"]) == 7 * 6 // 2
    assert not [p for p in board["pairs"] if p["metric"] == "test_metric" and "paper" in (p["a"], p["b"])]
    # LOSO regret: r_same's seeds agree (judging curve = SAME, ratio 0 at 1.5): grid8 and grid3 pick 0.5 (0),
    # constant 0.4 (0.05), GRASP 0.45 (0.025), no pruning (0.5). r_split: seeds 1 and 2 judged on
    # mean(LOW, HIGH) (min 1.2: 0.2 costs 0), seed 3 on LOW (min 1.0): its own best 0.8 costs 0.5.
    split = {c["seed"]: c["methods"] for c in board["regimes"][0]["cases"]}
    same = {c["seed"]: c["methods"] for c in board["regimes"][1]["cases"]}
    assert [same[s]["grid8"]["loso_regret"] for s in (1, 2, 3)] == pytest.approx([0, 0, 0])
    assert same[1]["constant"]["loso_regret"] == pytest.approx(0.05) and same[1]["grasp"]["loso_regret"] == pytest.approx(0.025)
    assert same[2]["no_pruning"]["loso_regret"] == pytest.approx(0.5)
    assert [split[s]["grid8"]["loso_regret"] for s in (1, 2, 3)] == pytest.approx([0, 0, 0.5])
    assert board["loso_regret"]["grid8"]["mean"] == pytest.approx(0.5 / 6) and board["loso_regret"]["grid8"]["n"] == 6
    lo, hi = board["loso_regret"]["grid8"]["ci95"]
    assert 0 <= lo <= 0.5 / 6 <= hi <= 0.5
    assert board["regimes"][1]["curve_ratios"] == [0.0, *GRID]
    assert board["regimes"][1]["val_check_max_abs"] == pytest.approx(3e-6)
    # hits (secondary): the in-sample grid hits every case; the constant 0.4 only r_same's (one step from 0.5),
    # no pruning none (ratio 0 is a step and more from every best, and 0.3-0.5 worse)
    assert board["hits"]["grid8"] == {"hits": 6, "cases": 6}
    assert board["hits"]["constant"] == {"hits": 3, "cases": 6} and board["hits"]["no_pruning"]["hits"] == 0
    # cost: one seed and three (the paper's protocol: one controller run, three final runs)
    assert board["cost"]["grasp"]["one_seed_cpu_s"] == 35.0 and board["cost"]["grasp"]["three_seeds_cpu_s"] == 55.0
    assert board["cost"]["grid8"]["one_seed_grid_points"] == 8.0 and board["cost"]["grid8"]["three_seeds_grid_points"] == 24.0
    assert board["cost"]["optuna"]["three_seeds_cpu_s"] == 50.0  # its search + two runs at its ratio
    assert board["cost"]["grid3"]["three_seeds_grid_points"] == 9.0


def test_the_v2_summary_reads_the_case_records_and_writes_a_new_scoreboard(tmp_path, capsys):
    import json

    from benchmarks.bench_regimes import main

    records = tmp_path / "records"
    records.mkdir()
    for c in fake_cases():
        (records / f"{c['regime']}_seed{c['seed']}.json").write_text(json.dumps({"case": c}))
    out = tmp_path / "board.json"
    assert main(["--suite", "v2", "--summarize", "--markdown", "--records", str(records), "--out", str(out)]) == 0
    board = json.loads(out.read_text())
    assert board["default_method"] == "grasp" and len(board["regimes"]) == 2 and board["pairs"] and board["loso_regret"]
    text = capsys.readouterr().out
    for title in ("lower test loss", "task metric", "leave-one-seed-out regret", "What does each method cost",
                  "three seeds"):
        assert title in text
    # one regime only
    assert main(["--suite", "v2", "--summarize", "--records", str(records), "--regimes", "r_same", "--out", str(out)]) == 0
    assert [r["name"] for r in json.loads(out.read_text())["regimes"]] == ["r_same"]


def _done_case():
    return {"grid_ratios": GRID, "grid": {"points": [{"ratio": r} for r in GRID]}, "no_pruning": {},
            "controllers": {"default": {}, "paper": {}}, "optuna": {}}


def test_a_case_is_done_only_with_every_grid_point_and_method():
    from benchmarks.bench_regimes import case_done

    assert case_done(_done_case())
    for missing in ("no_pruning", "optuna"):
        assert not case_done({k: v for k, v in _done_case().items() if k != missing})
    short = _done_case() | {"grid": {"points": [{"ratio": r} for r in GRID[:-1]]}}
    assert not case_done(short) and not case_done({})
    assert not case_done(_done_case() | {"controllers": {"default": {}}})


def test_a_case_saved_before_a_key_was_added_keeps_its_settings(tmp_path):
    import yaml

    from benchmarks.bench_regimes import regime_v2_config, settings_changed
    from grasp_lora.config import save_config

    cfg = regime_v2_config("demo", 42)
    save_config(cfg, tmp_path / "config.yaml")
    assert settings_changed(tmp_path / "config.yaml", cfg) == {}
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["data"].pop("prompts") == {}  # written before data.prompts existed
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    assert settings_changed(tmp_path / "config.yaml", cfg) == {}
    assert settings_changed(tmp_path / "config.yaml", regime_v2_config("demo", 42, ["train.lr=2e-3"])) == {
        "train.lr": (0.001, 0.002)}
    assert settings_changed(tmp_path / "missing.yaml", cfg) is None


def test_a_fresh_clone_continues_a_case_from_the_config_its_record_keeps(tmp_path, monkeypatch):
    import argparse
    import json

    import benchmarks.bench_regimes as B
    from grasp_lora.pipeline import Experiment

    monkeypatch.setattr(Experiment, "prepare", lambda self: None)
    monkeypatch.setattr(Experiment, "adapters", lambda self: None)
    monkeypatch.setattr(B, "stage1_digests", lambda exp: {"en": "x", "ar": "y"})
    cfg = B.regime_v2_config("demo", 42)
    saved = cfg.to_dict()
    del saved["controller"]["rounds_at"]  # recorded before the package added the key
    record = {"case": {"config_hash": "an old hash", "config": saved, "stage1_digests": {"en": "x", "ar": "y"}}}
    (tmp_path / "demo_seed42.json").write_text(json.dumps(record))
    args = argparse.Namespace(overrides=[], records=tmp_path, work=tmp_path / "fresh", data=None, summaries_data=None,
                              quiet=True)
    exp, _ = B.case_experiment(args, "demo", 42)  # no cache under work/: the record's config is what is compared
    assert exp.cfg.controller.rounds_at == "during"
    with pytest.raises(SystemExit, match="train.lr"):
        B.case_experiment(argparse.Namespace(**{**vars(args), "overrides": ["train.lr=2e-3"]}), "demo", 42)
    monkeypatch.setattr(B, "stage1_digests", lambda exp: {"en": "other", "ar": "y"})
    with pytest.raises(B.CaseCannotContinue, match="stage-1 adapters"):
        B.case_experiment(args, "demo", 42)


def test_a_claim_belongs_to_one_live_process_and_a_dead_ones_is_taken_over(tmp_path):
    import argparse
    import os
    import subprocess
    import sys

    from benchmarks.bench_regimes import claim

    args = argparse.Namespace(records=tmp_path)
    assert claim(args, "demo", 42) and claim(args, "demo", 42)  # ours, and still ours
    f = tmp_path / ".claims" / "demo_seed42"
    assert f.read_text() == str(os.getpid())
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        f.write_text(str(live.pid))
        assert not claim(args, "demo", 42)  # a live process holds it
    finally:
        live.kill()
        live.wait()
    assert claim(args, "demo", 42) and f.read_text() == str(os.getpid())  # its process is gone: taken over


def test_run_all_continues_each_case_from_its_record_and_starts_only_cases_that_fit_the_deadline(tmp_path, monkeypatch):
    import argparse
    import json
    import time

    import benchmarks.bench_regimes as B

    calls = []
    monkeypatch.setattr(B, "run_case_grid", lambda a, n, s: calls.append(("grid", n, s)))
    monkeypatch.setattr(B, "run_case_controller", lambda a, n, s, v: calls.append((v, n, s)))
    monkeypatch.setattr(B, "run_case_optuna", lambda a, n, s: calls.append(("optuna", n, s)))
    done = _done_case()
    # demo seed 1: grid, default and Optuna recorded (a killed session); seed 2: finished; seed 3: nothing
    (tmp_path / "demo_seed1.json").write_text(json.dumps({"case": {k: v for k, v in done.items() if k != "controllers"}
                                                          | {"controllers": {"default": {}}}}))
    (tmp_path / "demo_seed2.json").write_text(json.dumps({"case": done}))
    args = argparse.Namespace(records=tmp_path, seeds=[1, 2, 3], quiet=True, finish_by=None)
    B.run_all(args, ["demo"], ["default", "paper"])
    assert calls == [("paper", "demo", 1), ("grid", "demo", 3), ("default", "demo", 3), ("paper", "demo", 3),
                     ("optuna", "demo", 3)]
    # a case this process cannot continue (stage 1 came out otherwise) is skipped, the others go on
    calls.clear()

    def refuse(a, n, s, v):
        if s == 1:
            raise B.CaseCannotContinue("demo seed 1: stage 1 differs")
        calls.append((v, n, s))
    monkeypatch.setattr(B, "run_case_controller", refuse)
    (tmp_path / "demo_seed1.json").write_text(json.dumps({"case": {k: v for k, v in done.items() if k != "controllers"}}))
    B.run_all(args, ["demo"], ["default"])
    assert calls == [("grid", "demo", 3), ("default", "demo", 3), ("optuna", "demo", 3)]
    monkeypatch.setattr(B, "run_case_controller", lambda a, n, s, v: calls.append((v, n, s)))
    calls.clear()
    (tmp_path / "demo_seed1.json").write_text(json.dumps({"case": {k: v for k, v in done.items() if k != "controllers"}
                                                          | {"controllers": {"default": {}}}}))
    # an hour left: the missing controller of seed 1 fits, a whole case (seed 3) does not
    est1 = B.case_estimate_s("demo", json.loads((tmp_path / "demo_seed1.json").read_text())["case"], ["default", "paper"])
    est3 = B.case_estimate_s("demo", {}, ["default", "paper"])
    assert est1 < 3600 < est3
    B.run_all(argparse.Namespace(records=tmp_path, seeds=[1, 2, 3], quiet=True, finish_by=time.time() + 3600), ["demo"])
    assert calls == [("paper", "demo", 1)]
    assert B.clock_time("23:59") > time.time()
    with pytest.raises(argparse.ArgumentTypeError):
        B.clock_time("7pm")


def test_the_cli_keeps_the_suites_apart():
    from benchmarks.bench_regimes import main

    with pytest.raises(SystemExit):
        main(["--regimes", "demo_more_data"])  # a v2 regime in v1
    with pytest.raises(SystemExit):
        main(["--phase", "metric", "--regimes", "demo"])  # v2's phase
    with pytest.raises(SystemExit):
        main(["--suite", "v2", "--regimes", "demo_qkv_mlp", "--phase", "grid"])  # v1 only
    with pytest.raises(SystemExit):
        main(["--phase", "all", "--regimes", "demo"])  # v2's phase
    with pytest.raises(SystemExit):
        main(["--suite", "v2", "--phase", "all", "--controller-set", "controller.sigma_init=0.2"])  # its own controllers
    with pytest.raises(SystemExit):
        main(["--suite", "v2", "--phase", "all", "--controllers", "bounded,nope"])  # an unknown design


def test_a_later_phase_refuses_settings_other_than_the_cases_own(tmp_path):
    import argparse
    import json

    from benchmarks.bench_regimes import case_experiment

    args = argparse.Namespace(overrides=["train.lr=2e-3"], records=tmp_path, work=tmp_path, data=None, summaries_data=None,
                              quiet=True)
    (tmp_path / "demo_seed42.json").write_text(json.dumps({"case": {"config_hash": "0123456789abcdef"}}))
    with pytest.raises(SystemExit, match="other settings"):
        case_experiment(args, "demo", 42)
    assert not (tmp_path / "v2").exists()  # refused before any work
