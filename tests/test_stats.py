"""The regime suite's statistics (benchmarks/_stats.py) on inputs whose answer is known."""

import math

import numpy as np
import pytest

from benchmarks._stats import (bootstrap_ci, cluster_bootstrap_ci, curve_regret, interp_on_grid, loso_regrets, paired_comparison,
                               sign_test)


def test_the_bootstrap_ci_excludes_zero_for_a_clear_effect_and_includes_it_for_noise():
    rng = np.random.default_rng(1)
    clear = 0.10 + rng.normal(0, 0.02, 30)            # every case improves by about 0.1
    lo, hi = bootstrap_ci(clear)
    assert 0 < lo < 0.10 < hi
    noise = rng.normal(0, 0.05, 30)
    noise = noise - noise.mean()                       # noise around no effect (mean exactly 0)
    lo, hi = bootstrap_ci(noise)
    assert lo < 0 < hi


def test_the_bootstrap_is_seeded_and_handles_one_and_no_value():
    x = [0.3, -0.1, 0.2, 0.05, 0.4]
    assert bootstrap_ci(x) == bootstrap_ci(x)
    assert bootstrap_ci(x, seed=1) != bootstrap_ci(x, seed=2)
    assert bootstrap_ci([0.7]) == (0.7, 0.7)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    assert bootstrap_ci([None, 1.0, float("nan"), 3.0]) == bootstrap_ci([1.0, 3.0])  # missing values dropped
    lo, hi = bootstrap_ci([1.0, 3.0])
    assert 1.0 <= lo <= hi <= 3.0


def test_the_sign_test_drops_ties_and_is_two_sided():
    assert sign_test([1.0] * 10) == pytest.approx(2 * 0.5 ** 10)       # 10 of 10 positive
    assert sign_test([-1.0] * 10) == pytest.approx(2 * 0.5 ** 10)
    assert sign_test([1.0] * 10 + [0.0] * 5) == pytest.approx(2 * 0.5 ** 10)  # ties change nothing
    assert sign_test([1, -1, 1, -1]) == pytest.approx(1.0)
    assert sign_test([0.0, 0.0]) == 1.0 and sign_test([]) == 1.0
    assert sign_test([1, 1, 1, 1, 1, -1]) == pytest.approx(0.21875)      # scipy's binomtest(5, 6)


def test_a_paired_comparison_of_losses_names_the_better_method_and_its_evidence():
    b = [1.0, 1.2, 0.8, 1.5, 0.9, 1.1, 1.3, 1.0, 0.7, 1.4, 1.2, 0.95]
    a = [x - 0.05 for x in b]                             # a is 0.05 lower on every case
    res = paired_comparison(a, b)
    assert res["mean_diff"] == pytest.approx(-0.05) and res["n"] == 12
    assert res["a_better"] and res["significant"] and res["ci95"][1] < 0
    assert res["sign_test_p"] == pytest.approx(2 * 0.5 ** 12) and (res["a_wins"], res["b_wins"]) == (12, 0)
    # the same numbers as a metric (higher is better): b is the better one
    res = paired_comparison(a, b, higher_is_better=True)
    assert not res["a_better"] and res["significant"] and (res["a_wins"], res["b_wins"]) == (0, 12)
    # noise: alternating +-0.05 around b -> CI includes 0, sign test 1
    noisy = [x + (0.05 if i % 2 else -0.05) for i, x in enumerate(b)]
    res = paired_comparison(noisy, b)
    assert res["ci95"][0] < 0 < res["ci95"][1] and not res["significant"] and res["sign_test_p"] == pytest.approx(1.0)


def test_a_paired_comparison_drops_cases_missing_either_side():
    res = paired_comparison([1.0, None, 2.0, float("nan")], [0.5, 1.0, None, 1.0])
    assert res["n"] == 1 and res["mean_diff"] == pytest.approx(0.5) and res["ci95"] == [0.5, 0.5]
    assert res["a_better"] is False and not res["significant"]  # one case: no spread, never significant
    assert paired_comparison([None], [1.0])["n"] == 0


def test_interpolation_on_the_grid_is_linear_between_points_and_flat_beyond():
    ratios, values = [0.1, 0.2, 0.5], [1.0, 2.0, 5.0]
    assert interp_on_grid(0.15, ratios, values) == pytest.approx(1.5)
    assert interp_on_grid(0.35, ratios, values) == pytest.approx(3.5)
    assert interp_on_grid(0.2, ratios, values) == pytest.approx(2.0)
    assert interp_on_grid(0.0, ratios, values) == pytest.approx(1.0) and interp_on_grid(0.9, ratios, values) == 5.0
    assert interp_on_grid(0.15, [0.5, 0.1, 0.2], [5.0, 1.0, 2.0]) == pytest.approx(1.5)  # unsorted grid
    with pytest.raises(ValueError):
        interp_on_grid(0.1, [0.1, 0.1], [1.0, 2.0])


def test_curve_regret_is_zero_at_the_minimum_and_linear_between_points():
    ratios, curve = [0.0, 0.2, 0.4, 0.6], [1.2, 1.0, 1.1, 1.4]
    assert curve_regret(0.2, ratios, curve) == 0.0
    assert curve_regret(0.3, ratios, curve) == pytest.approx(0.05)
    assert curve_regret(0.0, ratios, curve) == pytest.approx(0.2)


def test_leave_one_seed_out_regret_judges_each_pick_on_the_other_seeds_curve():
    ratios = [0.1, 0.2, 0.3, 0.4]
    curves = {1: [1.0, 2.0, 3.0, 4.0],     # best at 0.1
              2: [2.0, 1.0, 3.0, 4.0],     # best at 0.2
              3: [4.0, 3.0, 2.0, 1.0]}     # best at 0.4
    # seed 1 judged on mean(2, 3) = [3, 2, 2.5, 2.5] (min 2 at 0.2); seed 2 on mean(1, 3) = [2.5, 2.5, 2.5, 2.5];
    # seed 3 on mean(1, 2) = [1.5, 1.5, 3, 4] (min 1.5)
    own_best = {1: 0.1, 2: 0.2, 3: 0.4}
    regrets = loso_regrets(curves, ratios, own_best)
    assert regrets == pytest.approx({1: 1.0, 2: 0.0, 3: 2.5})
    # a method that picks the best ratio of the other seeds' mean curve has regret 0 everywhere
    oracle = {1: 0.2, 2: 0.3, 3: 0.15}
    assert loso_regrets(curves, ratios, oracle) == pytest.approx({1: 0.0, 2: 0.0, 3: 0.0})
    # between grid points: seed 1 picking 0.25 is halfway between 2 and 2.5 on its judging curve
    assert loso_regrets(curves, ratios, {1: 0.25})[1] == pytest.approx(0.25)
    # no pick, or no other seed: no regret
    assert loso_regrets(curves, ratios, {1: None}) == {}
    assert loso_regrets({1: curves[1]}, ratios, {1: 0.1}) == {}


def test_the_clustered_interval_is_wider_when_a_clusters_cases_are_alike_and_agrees_when_they_are_not():
    rng = np.random.default_rng(1)
    # 6 clusters whose cases share a cluster effect (SD 1) plus a small case noise (SD 0.1)
    effects = rng.normal(0, 1, 6)
    values = [e + rng.normal(0, 0.1) for e in effects for _ in range(4)]
    labels = [i for i in range(6) for _ in range(4)]
    lo, hi = bootstrap_ci(values)
    clo, chi = cluster_bootstrap_ci(values, labels)
    assert clo <= np.mean(values) <= chi and (chi - clo) > 1.5 * (hi - lo)
    # independent cases: about the same width
    flat = list(rng.normal(0, 1, 24))
    lo, hi = bootstrap_ci(flat)
    clo, chi = cluster_bootstrap_ci(flat, labels)
    assert 0.6 < (chi - clo) / (hi - lo) < 1.6
    # one cluster: the plain bootstrap; seeded: repeatable
    assert cluster_bootstrap_ci(flat, [0] * 24) == bootstrap_ci(flat)
    assert cluster_bootstrap_ci(values, labels) == (clo2 := cluster_bootstrap_ci(values, labels)) and clo2[0] < clo2[1]


def test_paired_comparison_reports_the_clustered_interval_when_given_clusters():
    a, b = [1.0, 2.0, 3.0, 4.0, None], [0.5, 1.0, 3.5, 3.0, 1.0]
    plain = paired_comparison(a, b)
    clustered = paired_comparison(a, b, clusters=["x", "x", "y", "y", "z"])
    assert "ci95_clustered" not in plain and clustered["n"] == 4
    assert {k: v for k, v in clustered.items() if k != "ci95_clustered"} == plain
    lo, hi = clustered["ci95_clustered"]
    assert lo <= clustered["mean_diff"] <= hi
