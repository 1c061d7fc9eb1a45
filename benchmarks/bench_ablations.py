"""Ablations on the demo recipe, over several seeds (mean ± std):

  fidelity    `controller.fidelity` authors vs fixed (each: controller run, final run at its p*,
              test metrics; authors also implies p* by best_trial and >= 1 entry pruned per tensor)
  scaling     `merge.scaling` none (c = 1, the authors) vs lora (c = alpha / r), fidelity fixed
  rule        p* by `final` vs `best_trial` on the SAME fidelity-fixed controller runs (a final
              run at the best_trial ratio when it differs)
  importance  `prune.importance_inputs` train_forward vs full_pass: two final runs at the fixed
              controller's p*; mask agreement (per step on the train_forward run, both norm
              sources on the same weights; and between the two runs' final masks), run time
              and test metrics of both

Everything lives under <scratch>/ablations-<config hash>/ with the pipeline's manifests, so an
interrupted invocation resumes where it stopped when run again with the same options.

    python -m benchmarks.bench_ablations                                  # gemma-3-270m, demo, 3 seeds
    python -m benchmarks.bench_ablations --model tiny-llama --smoke --seeds 42,1337
    python -m benchmarks.bench_ablations --ablations importance --seeds 42 --set eval.bertscore=false
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks import _common as C

ABLATIONS = ("fidelity", "scaling", "rule", "importance")


def p_star_from_history(cfg, history_path: Path, rule: str) -> float:
    """p* of a finished controller run under either rule (the controller's own code on its history)."""
    from grasp_lora.controller.grpo import GRPOController
    from grasp_lora.io import read_jsonl

    ctl = GRPOController(cfg.controller)
    ctl.history = read_jsonl(history_path) if history_path.exists() else []
    return ctl.p_star(rule)


def controller_variant(parent, cfg, root: Path, seeds: list[int], evaluate: bool) -> dict[int, dict[str, Any]]:
    """grasp + final (+ evaluate) for every seed in a child experiment; per-seed summary."""
    from grasp_lora.io import read_json

    exp = C.child_experiment(parent, cfg, root, fresh=False)
    t0 = time.perf_counter()
    exp.grasp()
    exp.final()
    if evaluate:
        exp.evaluate(only_systems=[f"grasp_seed{s}" for s in seeds])
    out = {}
    for s in seeds:
        g = read_json(exp.grasp_dir(s) / "result.json")
        f = read_json(exp.seed_dir(s) / "final" / "result.json")
        hist = exp.grasp_dir(s) / "history.jsonl"
        rec = {"p_star": g["p_star"], "rule": g["p_star_rule"], "rounds": g["rounds"],
               "p_star_final_rule": p_star_from_history(cfg, hist, "final"),
               "p_star_best_trial_rule": p_star_from_history(cfg, hist, "best_trial"),
               "controller_s": g["wall_clock_s"], "final_s": f["wall_clock_s"], "val_loss": f["best_val_loss"],
               "real_sparsity": f["real_sparsity"], "merge_c": f.get("merge_c"), "history": str(hist)}
        metrics = exp.system_dir(f"grasp_seed{s}") / "metrics.json"
        if metrics.exists():
            rec["test"] = C.headline_metrics(read_json(metrics))
        out[s] = rec
    print(f"   {root.name}: {time.perf_counter() - t0:.1f}s")
    return out


def rule_variant(parent, cfg, root: Path, seeds: list[int], fixed: dict[int, dict[str, Any]], evaluate: bool):
    """Final runs at the best_trial p* of the fixed controller runs (reusing final-rule results
    when both rules give the same ratio)."""
    from grasp_lora.io import manifest_complete, read_json
    from grasp_lora.config import seed_config

    exp = C.child_experiment(parent, replace(cfg, controller=replace(cfg.controller, p_star_rule="best_trial")),
                             root, fresh=False)
    out = {}
    for s in seeds:
        p_bt = fixed[s]["p_star_best_trial_rule"]
        if abs(p_bt - fixed[s]["p_star"]) < 1e-12:
            out[s] = {**fixed[s], "p_star": p_bt, "rule": "best_trial", "same_ratio_as_final_rule": True}
            continue
        final_dir = exp.seed_dir(s) / "final"
        if not manifest_complete(final_dir):
            exp.merged_run(seed_config(exp.cfg, s), final_dir, ratio=p_bt, kind="final")
        f = read_json(final_dir / "result.json")
        rec = {"p_star": p_bt, "rule": "best_trial", "same_ratio_as_final_rule": False, "final_s": f["wall_clock_s"],
               "val_loss": f["best_val_loss"], "real_sparsity": f["real_sparsity"]}
        if evaluate:
            exp.evaluate(only_systems=[f"grasp_seed{s}"])
            rec["test"] = C.headline_metrics(read_json(exp.system_dir(f"grasp_seed{s}") / "metrics.json"))
        out[s] = rec
    return out


def importance_variant(parent, cfg, root: Path, seeds: list[int], fixed: dict[int, dict[str, Any]], evaluate: bool):
    """train_forward (with per-step agreement against full_pass) vs full_pass final runs at p*."""
    import torch

    from grasp_lora.evaluation.run import evaluate_system
    from grasp_lora.io import read_json, write_json
    from grasp_lora.config import seed_config
    from grasp_lora.pruning.masks import mask_agreement

    exp = C.child_experiment(parent, cfg, root, fresh=False)
    lang = cfg.data.target_lang
    encoder = None
    out = {}
    for s in seeds:
        scfg = seed_config(cfg, s)
        p = fixed[s]["p_star"]
        rec: dict[str, Any] = {"p_star": p}
        masks = {}
        for kind in ("train_forward", "full_pass"):
            d = exp.seed_dir(s) / kind
            res_path, mask_path = d / "result.json", d / "masks.pt"
            if not (res_path.exists() and mask_path.exists()):
                res = C.fixed_ratio_run(exp, scfg, p, importance_inputs=kind, agreement=kind == "train_forward",
                                        export_dir=d / "adapter")
                torch.save(res.pop("masks"), mask_path)
                write_json(res_path, res)
            res = read_json(res_path)
            masks[kind] = torch.load(mask_path)
            rec[kind] = {"wall_s": res["wall_s_plain"], "steps": res["steps"], "val_loss": res["best_val_loss"],
                         "real_sparsity": res["real_sparsity"], "pruning_s": res["timings"].get("pruning", 0.0)}
            if "agreement" in res:
                rec["agreement_same_run"] = C.summarize_agreement(res["agreement"])
            if evaluate:
                metrics_path = d / "system" / "metrics.json"
                if not metrics_path.exists():
                    if encoder is None and cfg.eval.bertscore:
                        encoder = exp.bertscore_encoder()
                    model, tok = exp.base_model()
                    evaluate_system(scfg, model, tok, d / "adapter", exp.rows(lang, "test"), d / "system",
                                    encoder=encoder, progress=exp.progress)
                rec[kind]["test"] = C.headline_metrics(read_json(metrics_path))
        rec["agreement_final_masks"] = mask_agreement(masks["train_forward"], masks["full_pass"])
        rec["speedup_train_forward"] = C.ratio(rec["full_pass"]["wall_s"], rec["train_forward"]["wall_s"])
        out[s] = rec
    return out


def agg(values) -> dict[str, Any]:
    return C.mean_std(values)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_common_args(ap, "bench_ablations")
    ap.add_argument("--seeds", default="42,1337,9001", help="comma-separated seeds (default %(default)s)")
    ap.add_argument("--ablations", default=",".join(ABLATIONS), help="subset of: " + ", ".join(ABLATIONS))
    ap.add_argument("--skip-eval", action="store_true", help="no generation / test metrics (val loss only)")
    args = ap.parse_args(argv)
    C.setup(args)
    wanted = [a.strip() for a in args.ablations.split(",") if a.strip()]
    for a in wanted:
        if a not in ABLATIONS:
            ap.error(f"--ablations: unknown {a!r} (known: {', '.join(ABLATIONS)})")

    from grasp_lora.config import config_hash, with_variant

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    cfg = C.build_config(args, [f"pipeline.seeds=[{', '.join(map(str, seeds))}]", "pipeline.baselines=[]",
                                 "pipeline.controller_per_seed=true"])  # as recorded: a controller per seed
    parent = C.base_experiment(cfg, args)
    root = parent.root / f"ablations-{config_hash(cfg)[:8]}"
    evaluate = not args.skip_eval
    report: dict[str, Any] = C.run_header("ablations", args)
    report.update(model=args.model, recipe=args.recipe, seeds=seeds, scratch=str(parent.root), folder=str(root),
                  config=cfg.to_dict(), ablations=wanted)

    # the paper's controller (fidelity fixed), as the ablations were measured, whatever the package default
    ctl_fixed = replace(cfg, controller=with_variant(cfg.controller, "paper"))
    results: dict[str, dict[int, dict[str, Any]]] = {}
    print("== fidelity fixed (the default; base of every ablation)")
    results["fixed"] = controller_variant(parent, ctl_fixed, root / "fixed", seeds, evaluate)
    if "fidelity" in wanted:
        print("== fidelity authors")
        authors = replace(cfg, controller=with_variant(cfg.controller, "authors"))
        results["authors"] = controller_variant(parent, authors, root / "authors", seeds, evaluate)
    if "scaling" in wanted:
        other = "lora" if cfg.merge.scaling == "none" else "none"
        print(f"== merge.scaling {other}")
        results[f"scaling_{other}"] = controller_variant(
            parent, replace(ctl_fixed, merge=replace(cfg.merge, scaling=other)), root / f"scaling_{other}", seeds, evaluate)
    if "rule" in wanted:
        print("== p* rule best_trial on the fixed controller runs")
        results["rule_best_trial"] = rule_variant(parent, ctl_fixed, root / "rule_best_trial", seeds, results["fixed"],
                                                  evaluate)
    importance = None
    if "importance" in wanted:
        print("== importance inputs: train_forward vs full_pass at the fixed p*")
        importance = importance_variant(parent, ctl_fixed, root / "importance", seeds, results["fixed"], evaluate)

    # ---- tables -------------------------------------------------------------------------------
    metric_keys = sorted({k for v in results.values() for r in v.values() for k in r.get("test", {})})
    rows, summary = [], {}
    labels = {"fixed": "fidelity fixed (default)", "authors": "fidelity authors", "scaling_lora": "merge.scaling lora",
              "scaling_none": "merge.scaling none", "rule_best_trial": "fixed runs, p* by best_trial"}
    for name, per_seed in results.items():
        rs = list(per_seed.values())
        s = {"p_star": agg(r["p_star"] for r in rs), "val_loss": agg(r["val_loss"] for r in rs),
             "real_sparsity": agg(r.get("real_sparsity") for r in rs),
             **{k: agg(r.get("test", {}).get(k) for r in rs) for k in metric_keys}}
        summary[name] = s
        rows.append([labels.get(name, name), C.fmt_ms(s["p_star"], ".3f"), C.fmt_ms(s["val_loss"], ".4f"),
                     *[C.fmt_ms(s[k]) for k in metric_keys]])
    print()
    text = C.print_table(["variant", "p*", "val loss", *metric_keys], rows)
    tables = [text]
    if "fidelity" in wanted or "rule" in wanted:
        prow = []
        for name in ("fixed", "authors"):
            if name in results:
                rs = list(results[name].values())
                prow.append([labels[name], C.fmt_ms(agg(r["p_star_final_rule"] for r in rs), ".3f"),
                             C.fmt_ms(agg(r["p_star_best_trial_rule"] for r in rs), ".3f")])
        print()
        tables.append(C.print_table(["controller runs", "p* (final rule)", "p* (best_trial rule)"], prow))
    if importance is not None:
        rs = list(importance.values())
        irows = []
        for kind in ("train_forward", "full_pass"):
            irows.append([kind, C.fmt_ms(agg(r[kind]["wall_s"] for r in rs)), C.fmt_ms(agg(r[kind]["val_loss"] for r in rs), ".4f"),
                          *[C.fmt_ms(agg(r[kind].get("test", {}).get(k) for r in rs)) for k in metric_keys]])
        print()
        tables.append(C.print_table(["importance inputs", "run s", "val loss", *metric_keys], irows))
        same = agg(r["agreement_same_run"]["entries_mean"] for r in rs)
        same_j = agg(r["agreement_same_run"]["pruned_jaccard_mean"] for r in rs)
        fin = agg(r["agreement_final_masks"]["entries"] for r in rs)
        fin_j = agg(r["agreement_final_masks"]["pruned"] for r in rs)
        speed = agg(r["speedup_train_forward"] for r in rs)
        line = (f"mask agreement, same run (mean over steps): entries {C.fmt_ms(same, '.4f')}, pruned Jaccard "
                f"{C.fmt_ms(same_j, '.4f')}; final masks of the two runs: entries {C.fmt_ms(fin, '.4f')}, pruned "
                f"Jaccard {C.fmt_ms(fin_j, '.4f')}; train_forward is {C.fmt_ms(speed)}x faster per run")
        print(line)
        tables.append(line)
        summary["importance"] = {"agreement_same_run_entries": same, "agreement_same_run_pruned_jaccard": same_j,
                                 "agreement_final_entries": fin, "agreement_final_pruned_jaccard": fin_j,
                                 "speedup_train_forward": speed}
    report.update(per_seed={k: v for k, v in results.items()}, importance=importance, summary=summary,
                  table="\n\n".join(tables))
    C.write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
