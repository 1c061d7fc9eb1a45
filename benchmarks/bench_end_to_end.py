"""End to end: GRASP (controller run + final run) vs an N-point grid search, same machine, one script.

The demo recipe (`configs/demo.yaml` + --set overrides) on a scratch run folder: data preparation
and the two stage-1 adapters are done once (and reused by later invocations); then, in a fresh
folder per repeat (symlinked to that data and those adapters, sharing the loaded base model),
`Experiment.grasp() + Experiment.final()` and `Experiment.grid()` are timed, alternating which
goes first. The grid defaults to the paper's 8 points 0.1..0.8 (--grid-ratios to shrink). Finally
the two methods' final models (systems grasp_seed<s> and grid_best_seed<s>) are generated and
scored on the test split with `Experiment.evaluate`.

    python -m benchmarks.bench_end_to_end                              # gemma-3-270m, demo, 8-point grid
    python -m benchmarks.bench_end_to_end --model tiny-llama --smoke --grid-ratios 0.2,0.5
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from benchmarks import _common as C


def parse_ratios(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_common_args(ap, "bench_end_to_end")
    ap.add_argument("--grid-ratios", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8",
                    help="grid points, comma separated (default: %(default)s)")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default: the recipe's pipeline.seeds)")
    ap.add_argument("--repeats", type=int, default=1, help="timed repeats of both methods, alternated (default 1)")
    ap.add_argument("--skip-eval", action="store_true", help="no generation / test metrics")
    args = ap.parse_args(argv)
    C.setup(args)

    ratios = parse_ratios(args.grid_ratios)
    extra = [f"grid.ratios=[{', '.join(str(r) for r in ratios)}]", "grid.enabled=true", "pipeline.baselines=[grid_best]",
             "pipeline.controller_per_seed=true"]  # as recorded: per-seed GRASP vs per-seed grid
    if args.seeds:
        extra.append(f"pipeline.seeds=[{args.seeds}]")
    cfg = C.build_config(args, extra)
    seeds = list(cfg.pipeline.seeds)
    parent = C.base_experiment(cfg, args)
    report: dict[str, Any] = C.run_header("end_to_end", args)
    report.update(model=args.model, recipe=args.recipe, grid_ratios=ratios, seeds=seeds, scratch=str(parent.root),
                  config=cfg.to_dict())

    from grasp_lora.io import read_json

    reps: list[dict[str, Any]] = []
    child = None
    for rep in range(args.repeats):
        child = C.child_experiment(parent, cfg, parent.root / "end_to_end" / f"rep{rep}")
        order = ["grasp", "grid"] if rep % 2 == 0 else ["grid", "grasp"]
        rec: dict[str, Any] = {"rep": rep, "order": order}
        for method in order:
            t0 = time.perf_counter()
            if method == "grasp":
                child.grasp()
                child.final()
            else:
                child.grid()
            rec[f"{method}_s"] = time.perf_counter() - t0
            print(f"rep {rep + 1}: {method} {rec[f'{method}_s']:.1f}s")
        per_seed = {}
        for s in seeds:
            sd = child.seed_dir(s)
            g = read_json(child.grasp_dir(s) / "result.json")
            f = read_json(sd / "final" / "result.json")
            grid = read_json(sd / "grid" / "summary.json")
            per_seed[s] = {
                "p_star": g["p_star"], "p_star_rule": g["p_star_rule"], "rounds": g["rounds"],
                "controller_s": g["wall_clock_s"], "controller_round_share": g.get("controller_round_share"),
                "final_s": f["wall_clock_s"], "final_best_val_loss": f["best_val_loss"],
                "grid_best_ratio": grid["best_ratio"], "grid_points": grid["points"],
                "grid_best_val_loss": min(p["val_loss"] for p in grid["points"]),
                "grid_runs_s": grid["total_wall_clock_s"],
            }
        rec["per_seed"] = per_seed
        reps.append(rec)

    grasp_s = C.median(r["grasp_s"] for r in reps)
    grid_s = C.median(r["grid_s"] for r in reps)
    speedup = C.ratio(grid_s, grasp_s)
    last = reps[-1]["per_seed"]

    metrics: dict[str, dict[str, float]] = {}
    if not args.skip_eval and child is not None:
        systems = [f"{fam}_seed{s}" for s in seeds for fam in ("grasp", "grid_best")]
        t0 = time.perf_counter()
        child.evaluate(only_systems=systems)
        report["evaluate_s"] = time.perf_counter() - t0
        for name in systems:
            metrics[name] = C.headline_metrics(read_json(child.system_dir(name) / "metrics.json"))

    keys = sorted({k for m in metrics.values() for k in m})
    rows = []
    for s in seeds:
        p = last[s]
        rows.append([f"GRASP seed {s}", grasp_s, 2, p["p_star"], p["final_best_val_loss"],
                     *[metrics.get(f"grasp_seed{s}", {}).get(k) for k in keys]])
        rows.append([f"grid seed {s}", grid_s, len(ratios), p["grid_best_ratio"], p["grid_best_val_loss"],
                     *[metrics.get(f"grid_best_seed{s}", {}).get(k) for k in keys]])
    print()
    text = C.print_table(["method", "seconds", "runs", "ratio", "val loss", *keys], rows)
    print(f"\nGRASP (controller + final) {grasp_s:.1f}s vs {len(ratios)}-point grid {grid_s:.1f}s: "
          f"speed-up {speedup:.2f}x (median of {args.repeats}; the paper reports 3.9-7.5x)")
    report.update(repeats=reps, grasp_s=grasp_s, grid_s=grid_s, speedup=speedup, test_metrics=metrics, table=text)
    C.write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
