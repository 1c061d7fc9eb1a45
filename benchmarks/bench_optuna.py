"""GRASP vs an Optuna search (TPE + Hyperband) of the prune ratio at the same wall-clock budget.

Per seed, in a fresh folder that reuses the scratch data and adapters: GRASP runs first
(controller run + final run, timed); then `search.optuna_search.run_optuna_search` gets the same
wall-clock budget (x --budget-factor, or a fixed --budget-s) and starts trials until the next
one would not fit (at least one; at most --max-trials). Optuna's result is its best trial's
adapter (a trial is a full fixed-ratio run, so it needs no extra final run). Both results are
generated and scored on the test split. Reported: chosen ratio, validation loss, test metrics,
time used, trials finished / pruned.

    python -m benchmarks.bench_optuna                                   # gemma-3-270m, demo recipe
    python -m benchmarks.bench_optuna --model tiny-llama --smoke --budget-factor 2
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from benchmarks import _common as C


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_common_args(ap, "bench_optuna")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default: the recipe's pipeline.seeds)")
    ap.add_argument("--budget-s", type=float, default=None, help="Optuna's budget in seconds (default: GRASP's time)")
    ap.add_argument("--budget-factor", type=float, default=1.0, help="budget = factor x GRASP's time (default 1)")
    ap.add_argument("--max-trials", type=int, default=50, help="cap on Optuna trials (default %(default)s)")
    ap.add_argument("--startup-trials", type=int, default=3, help="random trials before TPE (default %(default)s)")
    ap.add_argument("--skip-eval", action="store_true", help="no generation / test metrics")
    args = ap.parse_args(argv)
    C.setup(args)

    from grasp_lora.io import read_json
    from grasp_lora.config import seed_config
    from grasp_lora.search.optuna_search import run_optuna_search

    extra = [f"pipeline.seeds=[{args.seeds}]"] if args.seeds else []
    extra.append("pipeline.controller_per_seed=true")  # as recorded: GRASP vs Optuna per seed
    cfg = C.build_config(args, extra)
    seeds = list(cfg.pipeline.seeds)
    parent = C.base_experiment(cfg, args)
    report: dict[str, Any] = C.run_header("optuna", args)
    report.update(model=args.model, recipe=args.recipe, seeds=seeds, scratch=str(parent.root), config=cfg.to_dict())

    from dataclasses import replace

    per_seed: dict[int, dict[str, Any]] = {}
    encoder = None
    for seed in seeds:
        scfg = replace(cfg, pipeline=replace(cfg.pipeline, seeds=[seed]))
        exp = C.child_experiment(parent, scfg, parent.root / "optuna_vs_grasp" / f"seed{seed}")
        t0 = time.perf_counter()
        exp.grasp()
        exp.final()
        grasp_s = time.perf_counter() - t0
        budget = args.budget_s if args.budget_s is not None else grasp_s * args.budget_factor
        print(f"seed {seed}: GRASP {grasp_s:.1f}s; Optuna budget {budget:.1f}s")
        t0 = time.perf_counter()
        opt = run_optuna_search(exp.merged_run, seed_config(exp.cfg, seed), exp.seed_dir(seed) / "optuna",
                                n_trials=args.max_trials, budget_s=budget, startup_trials=args.startup_trials, log=exp.log)
        optuna_s = time.perf_counter() - t0
        g = read_json(exp.grasp_dir(seed) / "result.json")
        f = read_json(exp.seed_dir(seed) / "final" / "result.json")
        rec: dict[str, Any] = {
            "grasp_s": grasp_s, "optuna_s": optuna_s, "budget_s": budget,
            "grasp": {"p_star": g["p_star"], "rule": g["p_star_rule"], "rounds": g["rounds"],
                      "final_best_val_loss": f["best_val_loss"], "controller_s": g["wall_clock_s"],
                      "final_s": f["wall_clock_s"]},
            "optuna": {k: v for k, v in opt.items() if k not in ("storage",)},
        }
        if not args.skip_eval:
            from grasp_lora.evaluation.run import evaluate_system

            exp.evaluate(only_systems=[f"grasp_seed{seed}"])
            rec["grasp"]["test"] = C.headline_metrics(read_json(exp.system_dir(f"grasp_seed{seed}") / "metrics.json"))
            if encoder is None and cfg.eval.bertscore:
                encoder = exp.bertscore_encoder()
            model, tok = exp.base_model()
            lang = cfg.data.target_lang
            metrics = evaluate_system(scfg, model, tok, opt["best_adapter"], exp.rows(lang, "test"),
                                      exp.system_dir(f"optuna_seed{seed}"), encoder=encoder, progress=exp.progress)
            rec["optuna"]["test"] = C.headline_metrics(metrics)
        per_seed[seed] = rec

    keys = sorted({k for r in per_seed.values() for m in ("grasp", "optuna") for k in r[m].get("test", {})})
    rows = []
    for seed, r in per_seed.items():
        g, o = r["grasp"], r["optuna"]
        rows.append([f"GRASP seed {seed}", r["grasp_s"], "2", g["p_star"], g["final_best_val_loss"],
                     *[g.get("test", {}).get(k) for k in keys]])
        rows.append([f"Optuna seed {seed}", r["optuna_s"], f"{o['n_complete']}+{o['n_pruned']}p", o["best_ratio"],
                     o["best_val_loss"], *[o.get("test", {}).get(k) for k in keys]])
    # mean ± std over seeds, per method: (seconds, ratio, val loss, test metrics)
    fields = {"grasp": ("grasp_s", "p_star", "final_best_val_loss"), "optuna": ("optuna_s", "best_ratio", "best_val_loss")}
    summary = {}
    for m, (secs, ratio, val) in fields.items():
        rs = list(per_seed.values())
        summary[m] = {"seconds": C.mean_std(r[secs] for r in rs), "ratio": C.mean_std(r[m][ratio] for r in rs),
                      "val_loss": C.mean_std(r[m][val] for r in rs),
                      **{k: C.mean_std(r[m].get("test", {}).get(k) for r in rs) for k in keys}}
        s = summary[m]
        rows.append([f"{'GRASP' if m == 'grasp' else 'Optuna'} mean ± std", C.fmt_ms(s["seconds"], ".1f"), "",
                     C.fmt_ms(s["ratio"], ".3f"), C.fmt_ms(s["val_loss"], ".3f"), *[C.fmt_ms(s[k]) for k in keys]])
    print()
    text = C.print_table(["method", "seconds", "runs", "ratio", "val loss", *keys], rows)
    print("runs: GRASP = controller run + final run; Optuna = completed + pruned trials within GRASP's budget")
    report.update(per_seed=per_seed, table=text, summary=summary,
                  time_ratio_optuna_over_grasp=C.median(C.ratio(r["optuna_s"], r["grasp_s"]) for r in per_seed.values()))
    C.write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
