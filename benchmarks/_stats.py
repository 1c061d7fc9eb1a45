"""Statistics of the regime suite's judge (benchmarks/bench_regimes.py, suite v2): pure functions of
numbers, no model, no files.

- `bootstrap_ci`: a seeded percentile bootstrap 95% CI of a mean (resampling the values, i.e. the
  cases, with replacement);
- `cluster_bootstrap_ci`: the same, resampling whole clusters (regimes) with replacement, then the
  cases within each drawn cluster: the interval when cases of one regime are alike;
- `sign_test`: the two-sided sign test of paired differences (`scipy.stats.binomtest`, ties dropped);
- `paired_comparison`: both, plus the mean paired difference a - b, for two methods scored on the
  same cases;
- `interp_on_grid` / `curve_regret`: a ratio's value on a curve known at grid ratios (linear between
  grid points, the end values beyond them) and its distance from the curve's minimum;
- `loso_regrets`: leave-one-seed-out regret: each seed's pick judged on the mean curve of the
  OTHER seeds, so no method is judged on the runs it picked from.
"""

from __future__ import annotations

import math
from typing import Any, Hashable, Mapping, Optional, Sequence

import numpy as np

N_RESAMPLES = 10_000
BOOT_SEED = 0


def _clean(values: Sequence[Optional[float]]) -> np.ndarray:
    return np.array([float(v) for v in values if v is not None and not math.isnan(float(v))], dtype=float)


def bootstrap_ci(values: Sequence[Optional[float]], confidence: float = 0.95, n_resamples: int = N_RESAMPLES,
                 seed: int = BOOT_SEED) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of `values` (None / NaN dropped), from a seeded numpy
    generator, so the same values always give the same interval. One value: (v, v); none: (nan, nan)."""
    x = _clean(values)
    if len(x) == 0:
        return (math.nan, math.nan)
    if len(x) == 1:
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_resamples, len(x)))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def cluster_bootstrap_ci(values: Sequence[Optional[float]], clusters: Sequence[Hashable], confidence: float = 0.95,
                         n_resamples: int = N_RESAMPLES, seed: int = BOOT_SEED) -> tuple[float, float]:
    """Two-stage percentile bootstrap CI of the mean of `values`: each resample draws as many
    clusters as there are, with replacement, then within each drawn cluster as many of its values,
    with replacement; the statistic is the mean of all values drawn. Wider than `bootstrap_ci`
    when the values of a cluster are alike. Values None / NaN are dropped with their cluster label.
    Fewer than 2 clusters: the within-cluster bootstrap alone."""
    kept = [(float(v), c) for v, c in zip(values, clusters) if v is not None and not math.isnan(float(v))]
    if len(kept) < 2:
        return bootstrap_ci([v for v, _ in kept], confidence, n_resamples, seed)
    groups: dict[Hashable, list[float]] = {}
    for v, c in kept:
        groups.setdefault(c, []).append(v)
    if len(groups) < 2:
        return bootstrap_ci([v for v, _ in kept], confidence, n_resamples, seed)
    arrays = [np.asarray(g, dtype=float) for g in groups.values()]
    rng = np.random.default_rng(seed)
    g = len(arrays)
    slots = rng.integers(0, g, size=(n_resamples, g))  # which cluster fills each of the g draws
    total, count = np.zeros((n_resamples, g)), np.zeros((n_resamples, g))
    for j, x in enumerate(arrays):
        # an independent within-cluster resample for every slot (a cluster drawn twice is resampled twice)
        sums = x[rng.integers(0, len(x), size=(n_resamples, g, len(x)))].sum(axis=-1)
        hit = slots == j
        total += np.where(hit, sums, 0.0)
        count += hit * len(x)
    means = total.sum(axis=1) / count.sum(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def sign_test(diffs: Sequence[Optional[float]]) -> float:
    """Two-sided sign test p-value of paired differences: under H0 a non-zero difference is positive
    with probability 1/2. Zero differences (ties) are dropped; no non-zero difference gives 1.0."""
    from scipy.stats import binomtest

    x = _clean(diffs)
    pos, neg = int((x > 0).sum()), int((x < 0).sum())
    if pos + neg == 0:
        return 1.0
    return float(binomtest(pos, pos + neg, 0.5, alternative="two-sided").pvalue)


def paired_comparison(a: Sequence[Optional[float]], b: Sequence[Optional[float]], higher_is_better: bool = False,
                      n_resamples: int = N_RESAMPLES, seed: int = BOOT_SEED,
                      clusters: Optional[Sequence[Hashable]] = None) -> dict[str, Any]:
    """Method a against method b on the same cases (`a[i]`, `b[i]` from case i; a pair with a
    missing side is dropped). `mean_diff` is the mean of a - b; `ci95` its bootstrap CI over cases;
    `sign_test_p` the sign test of the differences; `a_better` whether the mean difference favours a
    (lower for a loss, higher with `higher_is_better`); `significant` whether the CI excludes 0 (with
    at least 2 pairs: one pair has no spread to resample). With `clusters` (a label per case, e.g.
    its regime) also `ci95_clustered`, the two-stage bootstrap's (`cluster_bootstrap_ci`)."""
    labels = list(clusters) if clusters is not None else [None] * len(a)
    pairs = [(float(x), float(y), c) for x, y, c in zip(a, b, labels)
             if x is not None and y is not None and not math.isnan(float(x)) and not math.isnan(float(y))]
    d = np.array([x - y for x, y, _ in pairs], dtype=float)
    if len(d) == 0:
        return {"mean_diff": None, "ci95": [None, None], "n": 0, "sign_test_p": None, "a_better": None,
                "significant": False, "a_wins": 0, "b_wins": 0, "ties": 0,
                **({"ci95_clustered": [None, None]} if clusters is not None else {})}
    lo, hi = bootstrap_ci(d, n_resamples=n_resamples, seed=seed)
    extra = {}
    if clusters is not None:
        extra["ci95_clustered"] = list(cluster_bootstrap_ci(d, [c for _, _, c in pairs], n_resamples=n_resamples,
                                                            seed=seed))
    mean = float(d.mean())
    a_wins = int((d > 0).sum() if higher_is_better else (d < 0).sum())
    b_wins = int((d < 0).sum() if higher_is_better else (d > 0).sum())
    return {"mean_diff": mean, "ci95": [lo, hi], "n": int(len(d)), "sign_test_p": sign_test(d),
            "a_better": bool(mean > 0 if higher_is_better else mean < 0),
            "significant": bool(len(d) >= 2 and (lo > 0 or hi < 0)), "a_wins": a_wins, "b_wins": b_wins,
            "ties": int(len(d) - a_wins - b_wins), **extra}


def interp_on_grid(ratio: float, ratios: Sequence[float], values: Sequence[float]) -> float:
    """`values` (known at `ratios`) at `ratio`: linear between neighbouring grid ratios, the end
    value beyond either end. The ratios need not be sorted."""
    order = np.argsort(np.asarray(ratios, dtype=float))
    r = np.asarray(ratios, dtype=float)[order]
    v = np.asarray(values, dtype=float)[order]
    if len(r) != len(np.unique(r)):
        raise ValueError(f"interp_on_grid: repeated grid ratios {list(ratios)}")
    return float(np.interp(float(ratio), r, v))


def curve_regret(ratio: float, ratios: Sequence[float], curve: Sequence[float]) -> float:
    """How far `ratio` is from the curve's best: curve(ratio) - min(curve) (>= 0)."""
    return interp_on_grid(ratio, ratios, curve) - float(np.min(np.asarray(curve, dtype=float)))


def loso_regrets(curves: Mapping[Hashable, Sequence[float]], ratios: Sequence[float],
                 picks: Mapping[Hashable, Optional[float]]) -> dict[Hashable, float]:
    """Leave-one-seed-out regret of each seed's pick: `curves[s]` is seed s's curve at `ratios`
    (e.g. validation loss), `picks[s]` the ratio a method returned for seed s. Seed s's pick is
    judged on the mean of the OTHER seeds' curves: regret = mean_curve(pick) - min(mean_curve).
    Seeds without a pick, or without another seed's curve, get no regret."""
    out: dict[Hashable, float] = {}
    for seed, pick in picks.items():
        if pick is None:
            continue
        others = [np.asarray(c, dtype=float) for s, c in curves.items() if s != seed]
        if not others:
            continue
        mean = np.mean(others, axis=0)
        out[seed] = curve_regret(pick, ratios, mean)
    return out
