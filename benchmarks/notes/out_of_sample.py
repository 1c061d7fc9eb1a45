"""Out-of-sample reading of the regime suite (benchmarks/notes/2026-12-07-out-of-sample.md).

Reads the cached regime-suite results (`benchmarks/results/bench_regimes_<regime>.json`), trains
nothing, and prints the tables of BENCHMARKS.md "Is the controller's pick as good as a grid's?":

- leave-one-seed-out (LOSO) mean-curve regret: each case (regime, seed) is judged on the mean
  validation curve of the regime's *other two* seeds (linear between grid points), so no method is
  judged on the runs it picked from;
- paired differences against GRASP with a percentile bootstrap 95% CI over the 15 cases;
- test F1 of GRASP's final run minus the grid's run at its selected ratio, with the same bootstrap;
- cost as the user pays it, in grid points of CPU time of the regime.

    .venv/bin/python benchmarks/notes/out_of_sample.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parents[1] / "results"
REGIMES = ["demo", "demo_lr3e-3", "demo_lora_scaling", "demo_few_source", "demo_qkv_mlp"]
SEEDS = ["42", "1337", "9001"]
VARIANT = "ahead_k_budget3"  # the default controller (dense_lookahead_budget) on these recipes
GRID3 = (0.2, 0.5, 0.8)
BOOT, BOOT_SEED = 10_000, 0


def ci(diffs: np.ndarray) -> tuple[float, float]:
    """Percentile bootstrap 95% CI of the mean, resampling cases."""
    rng = np.random.default_rng(BOOT_SEED)
    means = diffs[rng.integers(0, len(diffs), (BOOT, len(diffs)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def ci_by_regime(diffs: np.ndarray) -> tuple[float, float]:
    """The same, resampling whole regimes (a regime's three seeds share its curves, so its cases are
    not independent of each other)."""
    by_regime = diffs.reshape(len(REGIMES), len(SEEDS))
    rng = np.random.default_rng(BOOT_SEED)
    means = by_regime[rng.integers(0, len(REGIMES), (BOOT, len(REGIMES)))].mean(axis=(1, 2))
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def sign_p(diffs: np.ndarray) -> float:
    """Two-sided sign test of the paired differences, ties dropped."""
    from scipy.stats import binomtest

    nonzero = diffs[diffs != 0]
    return float(binomtest(int((nonzero > 0).sum()), len(nonzero)).pvalue) if len(nonzero) else 1.0


def main() -> None:
    regret: dict[str, list[float]] = {k: [] for k in ("GRASP", "3-point grid", "Optuna", "own 8-point grid",
                                                      "constant 0.4")}
    cost: dict[str, list[float]] = {"GRASP": [], "3-point grid": []}
    cost3: dict[str, list[float]] = {"GRASP": [], "3-point grid": []}  # three seeds, the paper's protocol
    f1_diff = []
    for name in REGIMES:
        reg = json.loads((RESULTS / f"bench_regimes_{name}.json").read_text())["regime"]
        grid = reg["grid"]
        ratios = np.array(grid["ratios"])
        losses = np.array([p["val_losses"] for p in grid["per_ratio"]])  # ratio x seed
        point_cpu = np.mean([p["cpu_s"] for s in SEEDS for p in grid["seeds"][s]["points"]])
        finals = sum(reg["controllers"][VARIANT]["seeds"][s]["final_cpu_s"] for s in SEEDS) / point_cpu
        grid3 = sum(p["cpu_s"] for s in SEEDS for p in grid["seeds"][s]["points"] if p["ratio"] in GRID3) / point_cpu
        for j, seed in enumerate(SEEDS):
            curve = losses[:, [k for k in range(len(SEEDS)) if k != j]].mean(axis=1)
            own = losses[:, j]
            ctrl = reg["controllers"][VARIANT]["seeds"][seed]
            picks = {
                "GRASP": ctrl["p_star"],
                "3-point grid": min(GRID3, key=lambda r: own[list(ratios).index(r)]),
                "Optuna": reg["optuna"][seed]["best_ratio"],
                "own 8-point grid": float(ratios[np.argmin(own)]),
                "constant 0.4": 0.4,
            }
            for k, r in picks.items():
                regret[k].append(float(np.interp(r, ratios, curve) - curve.min()))
            cost["GRASP"].append((ctrl["controller_cpu_s"] + ctrl["final_cpu_s"]) / point_cpu)
            cost["3-point grid"].append(sum(p["cpu_s"] for p in grid["seeds"][seed]["points"]
                                            if p["ratio"] in GRID3) / point_cpu)
            # one controller run (this seed's) shared by the three seeds' final runs
            cost3["GRASP"].append(ctrl["controller_cpu_s"] / point_cpu + finals)
            cost3["3-point grid"].append(grid3)
            f1_diff.append(ctrl["test"]["f1"] - grid["seeds"][seed]["test"]["f1"])

    grasp = np.array(regret["GRASP"])
    print(f"{len(grasp)} cases; LOSO mean-curve regret (lower is better); difference = GRASP minus the method")
    print("| method | LOSO regret | GRASP minus it | 95% CI (cases) | 95% CI (regimes) | sign test p | cases GRASP lower |")
    print("|---|---:|---:|---|---|---:|---:|")
    for k, v in regret.items():
        v = np.array(v)
        if k == "GRASP":
            print(f"| {k} | {v.mean():.3f} | – | – | – | – | – |")
            continue
        d = grasp - v
        lo, hi = ci(d)
        rlo, rhi = ci_by_regime(d)
        print(f"| {k} | {v.mean():.3f} | {d.mean():+.3f} | [{lo:+.3f}, {hi:+.3f}] | [{rlo:+.3f}, {rhi:+.3f}] | "
              f"{sign_p(d):.2f} | {(d < 0).sum()} of {len(d)} |")
    d = np.array(f1_diff)
    lo, hi = ci(d)
    rlo, rhi = ci_by_regime(d)
    print(f"\ntest F1, GRASP minus the grid's selected ratio: {d.mean():+.2f}, 95% CI [{lo:+.2f}, {hi:+.2f}]; "
          f"by regime [{rlo:+.2f}, {rhi:+.2f}]; GRASP higher in {(d > 0).sum()}, lower in {(d < 0).sum()}, "
          f"equal in {(d == 0).sum()}")
    for k, v in cost.items():
        print(f"cost, one seed, {k}: {min(v):.2f}-{max(v):.2f} grid points (mean {np.mean(v):.2f})")
    for k, v in cost3.items():
        print(f"cost, three seeds, {k}: {min(v):.2f}-{max(v):.2f} grid points (mean {np.mean(v):.2f}; "
              f"the 8-point grid: 24)")


if __name__ == "__main__":
    main()
