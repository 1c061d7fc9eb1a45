"""Does GRASP find what the grid finds? The paper's protocol on real QA data (XQuAD, MLQA layout).

Per target language (en -> ar, en -> zh):
  - data: the English source pool comes from the first `--source-articles` articles of XQuAD, the
    target pool from the remaining ones, so the source adapter never sees a translation of a
    target question; the paper's low-resource sizes (train 50 / val 50 / micro-dev 16), 60 test;
  - cached once (`--phase grid`): splits, both stage-1 adapters, the full 8-point grid for every
    seed, and the test scores of the grid's selected ratio (lowest mean validation loss over the
    seeds, METHOD.md, "Final run and grid search");
  - per controller variant (`--phase variants`): ONE controller run (controller seed 42), then the
    final run at p* for every seed, evaluated on test. A variant therefore costs one controller
    run plus N final runs; everything else is read from the cache.

Per variant and (language, seed) it prints p*, the final run's validation loss, regret (that loss
minus the best validation loss of the seed's grid), test EM / F1 / BERTScore and the cost of the
experiment (1 controller run + N final runs) against the grid (8 x N runs), in wall-clock and in
process CPU time (the latter is robust to other work on a shared machine).

    python -m benchmarks.bench_real_data --data ../shared/data/xquad --langs ar --seeds 42 --phase grid
    python -m benchmarks.bench_real_data --data ../shared/data/xquad --langs ar --seeds 42 \
        --variants paper,std_adv --phase variants

Processes running side by side write separate `--out` files; `--summarize` merges them and prints the
issue's goals per variant (hits over the (language, seed) cases, mean test F1 against the grid's, cost):

    python -m benchmarks.bench_real_data --summarize benchmarks/results/bench_real_data_*.json

The XQuAD files are read from `--data`; nothing is copied into the repository (the cache lives under
benchmarks/results/scratch/, which git ignores).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks import _common as C

RECIPE = Path(__file__).resolve().parent / "real_data.yaml"

# Named controller variants: a package variant (grasp_lora/controller/variants.py) plus explicit
# overrides, so that a name keeps the meaning BENCHMARKS.md reports under it whatever the package's
# default (tests/test_bench_real_data.py checks each one's keys). `paper` is METHOD.md, "The GRASP
# controller", `authors` the released scripts, `dense_ahead20_std` the uncapped lookahead
# controller (the default from 2026-12-02 to 2026-12-05); `dense_run` and `dense_run_std` the
# defaults before it. The harness's recipe has K = 10, the presets' lookahead unit.
VARIANTS: dict[str, list[str]] = {
    "paper": ["controller.variant=paper"],
    "authors": ["controller.variant=authors"],
    "std_adv": ["controller.variant=paper", "controller.advantage=standardized"],
    # the masked run, each mask trained under for 5 steps before it is scored
    "lookahead": ["controller.variant=masked_lookahead", "controller.lookahead_steps=5"],
    "lookahead_std": ["controller.variant=masked_lookahead", "controller.lookahead_steps=5",
                      "controller.advantage=standardized"],
    "dense_run": ["controller.variant=dense", "controller.advantage=centered"],
    "dense_run_std": ["controller.variant=dense"],
    # the dense run, each mask trained under for 20 steps before it is scored, the whole schedule
    "dense_ahead20_std": ["controller.variant=dense_lookahead"],
    # the package's default since 2026-12-05 (K-step lookahead, stopped within 3 grid points)
    "default": ["controller.variant=dense_lookahead_budget"],
}


def subset_files(data_dir: Path, langs: list[str], source_articles: int, out: Path) -> dict[str, Path]:
    """XQuAD en (first articles) and each target language (the other articles) as MLQA JSON files."""
    from grasp_lora.io import atomic_write_text

    files = {}
    for lang in ["en", *langs]:
        src = data_dir / f"xquad.{lang}.dev.json"
        if not src.is_file():
            raise SystemExit(f"{src}: not found (pass the folder holding xquad.{{en,ar,zh}}.dev.json as --data)")
        doc = json.loads(src.read_text(encoding="utf-8"))
        articles = doc["data"][:source_articles] if lang == "en" else doc["data"][source_articles:]
        dst = out / f"xquad.{lang}.{'source' if lang == 'en' else 'target'}.json"
        if not dst.exists():
            atomic_write_text(dst, json.dumps({"version": doc.get("version"), "data": articles}, ensure_ascii=False))
        files[lang] = dst
    return files


def lang_config(args, lang: str, files: dict[str, Path], seeds: list[int], extra: list[str] = ()):
    from grasp_lora.config import load_config

    overrides = [
        f"model.name={args.model}",
        f"data.target_lang={lang}",
        f"data.source_data={files['en']}",
        f"data.target_data={files[lang]}",
        f"pipeline.seeds={json.dumps(seeds)}",
        *args.overrides,
        *extra,
    ]
    return load_config(RECIPE, overrides)


def evaluate_adapter(exp, adapter: Path, out: Path) -> dict[str, Any]:
    """Test metrics of one adapter (cached in `out`)."""
    from grasp_lora.evaluation.run import evaluate_system
    from grasp_lora.io import manifest_complete, read_json, write_manifest

    if manifest_complete(out):
        return read_json(out / "metrics.json")
    model, tok = exp.base_model()
    encoder = exp.bertscore_encoder() if exp.cfg.eval.bertscore else None
    metrics = evaluate_system(exp.cfg, model, tok, adapter, exp.rows(exp.cfg.data.target_lang, "test"), out,
                              encoder=encoder, progress=exp.progress)
    write_manifest(out, stage="bench_eval", adapter=str(adapter))
    return metrics


def base_experiment(args, lang: str, files):
    from grasp_lora.pipeline import Experiment

    cfg = lang_config(args, lang, files, args.seeds)
    exp = Experiment(cfg, root=args.work / lang, progress=not args.quiet, log=C._log(args.quiet))
    exp.prepare()
    exp.adapters()
    return exp


def run_grid(args, lang: str, files, train: bool = True) -> dict[str, Any] | None:
    """The grid of every seed (trained here when `train`, else read if complete), its selected
    ratio and the test scores of every seed's run at that ratio."""
    from grasp_lora.io import manifest_complete
    from grasp_lora.search.grid import point_dir

    exp = base_experiment(args, lang, files)
    if train:
        exp.grid()
    elif not all(manifest_complete(point_dir(exp.seed_dir(s) / "grid", r)) for s in args.seeds for r in exp.cfg.grid.ratios):
        return None
    selection = exp.collect()
    out = {"selected_ratio": selection["selected_ratio"], "per_ratio": selection["per_ratio"], "seeds": {}}
    for seed in args.seeds:
        per_seed = selection["per_seed"][str(seed)]
        adapter = point_dir(exp.seed_dir(seed) / "grid", selection["selected_ratio"]) / "adapter"
        metrics = evaluate_adapter(exp, adapter, args.work / lang / "eval" / f"grid_seed{seed}_{selection['selected_ratio']:.2f}")
        out["seeds"][seed] = {"best_ratio": per_seed["best_ratio"], "best_val_loss": per_seed["best_val_loss"],
                              "points": per_seed["points"], "test": C.headline_metrics(metrics)}
    return out


def grid_columns(grid: dict[str, Any], seed_grid: dict[str, Any], val_loss: float) -> dict[str, Any]:
    """A final run's columns against its seed's grid: regret, the seed's best ratio, the grid's
    selected ratio and its test scores, and the grid's cost."""
    return {"regret": val_loss - seed_grid["best_val_loss"], "grid_best_ratio": seed_grid["best_ratio"],
            "grid_selected_ratio": grid["selected_ratio"], "grid_test": seed_grid["test"],
            "grid_wall_s": sum(p["wall_clock_s"] for p in seed_grid["points"]),
            "grid_cpu_s": sum(p.get("cpu_s") or 0.0 for p in seed_grid["points"])}


def run_variant(args, lang: str, files, name: str, grid: dict[str, Any] | None) -> dict[str, Any]:
    """One controller run and a final run per seed; regret and grid columns when the grid is complete."""
    from grasp_lora.io import read_json

    parent = base_experiment(args, lang, files)
    cfg = lang_config(args, lang, files, args.seeds, VARIANTS[name])
    exp = C.child_experiment(parent, cfg, args.work / lang / "variants" / name, fresh=False)
    exp.grasp()
    exp.final()
    controller = read_json(exp.grasp_dir() / "result.json")
    rows = []
    for seed in args.seeds:
        final = read_json(exp.seed_dir(seed) / "final" / "result.json")
        metrics = evaluate_adapter(exp, exp.seed_dir(seed) / "final" / "adapter", exp.root / "eval" / f"seed{seed}")
        row = {"seed": seed, "p_star": controller["p_star"], "val_loss": final["best_val_loss"],
               "test": C.headline_metrics(metrics), "final_wall_s": final["wall_clock_s"], "final_cpu_s": final.get("cpu_s"),
               "regret": None, "grid_best_ratio": None, "grid_test": {}, "grid_wall_s": None, "grid_cpu_s": None}
        if grid is not None:
            row.update(grid_columns(grid, grid["seeds"][seed], final["best_val_loss"]))
        rows.append(row)
    cost = {
        "grasp_wall_s": controller["wall_clock_s"] + sum(r["final_wall_s"] for r in rows),
        "grasp_cpu_s": (controller.get("cpu_s") or 0.0) + sum(r["final_cpu_s"] or 0.0 for r in rows),
        "grid_wall_s": None if grid is None else sum(r["grid_wall_s"] for r in rows),
        "grid_cpu_s": None if grid is None else sum(r["grid_cpu_s"] for r in rows),
        "controller_wall_s": controller["wall_clock_s"],
    }
    history = [json.loads(l) for l in (exp.grasp_dir() / "history.jsonl").read_text().splitlines() if l.strip()]
    return {"variant": name, "overrides": VARIANTS[name], "controller": controller, "rows": rows, "cost": cost,
            "diagnosis": diagnose(history, cfg.controller.p_init),
            "trajectory": [{k: h[k] for k in ("round", "p_c", "mu", "sigma", "candidates", "rewards", "committed_ratio")}
                           for h in history]}


def diagnose(history: list[dict[str, Any]], p_init: float) -> dict[str, Any]:
    """What drove the controller: how often the lowest candidate won, how reward relates to the
    ratio within a round, how large rewards are, and how far mu and p_c moved."""
    import statistics

    if not history:
        return {}
    low_wins, corrs, below, above = 0, [], [], []
    prev_pc = p_init
    for h in history:
        cands, rewards = h["candidates"], h["rewards"]
        low_wins += int(min(range(len(cands)), key=lambda i: cands[i]) == max(range(len(rewards)), key=lambda i: rewards[i]))
        if len(set(cands)) > 1 and len(set(rewards)) > 1:
            corrs.append(statistics.correlation(cands, rewards))
        for c, r in zip(cands, rewards):
            (below if c < prev_pc else above).append(r)
        prev_pc = h["p_c"]
    commits = [h["committed_ratio"] for h in history if h["committed_ratio"] is not None]
    return {
        "rounds": len(history),
        "lowest_candidate_won": low_wins / len(history),
        "corr_ratio_reward": statistics.fmean(corrs) if corrs else None,
        "mean_abs_reward": statistics.fmean(abs(r) for h in history for r in h["rewards"]),
        "mean_reward_below_pc": statistics.fmean(below) if below else None,
        "mean_reward_above_pc": statistics.fmean(above) if above else None,
        "commits": len(commits),
        "mu": [p_init, history[-1]["mu"]],
        "p_c": [p_init, history[-1]["p_c"]],
    }


def print_grid(lang: str, grid: dict[str, Any]) -> None:
    print(f"\n== grid, en -> {lang}: selected ratio {grid['selected_ratio']:.2f} (lowest mean val loss)")
    ratios = [p["ratio"] for p in grid["per_ratio"]]
    rows = [[f"seed {s}"] + [p["val_loss"] for p in g["points"]] + [g["best_ratio"], g["test"].get("f1")]
            for s, g in grid["seeds"].items()]
    rows.append(["mean"] + [p["mean_val_loss"] for p in grid["per_ratio"]] + [grid["selected_ratio"], None])
    C.print_table(["", *[f"{r:.1f}" for r in ratios], "best", "test F1 @sel"], rows)


def print_variants(lang: str, results: list[dict[str, Any]]) -> None:
    print(f"\n== controller variants, en -> {lang}")
    rows = []
    for v in results:
        for r in v["rows"]:
            rows.append([v["variant"], r["seed"], r["p_star"], r["grid_best_ratio"], r["val_loss"], r["regret"],
                         r["test"].get("exact_match"), r["test"].get("f1"), r["test"].get("bertscore_f1", r["test"].get("bertscore")),
                         r["grid_test"].get("f1"),
                         C.ratio(v["cost"]["grasp_wall_s"], v["cost"]["grid_wall_s"]),
                         C.ratio(v["cost"]["grasp_cpu_s"], v["cost"]["grid_cpu_s"])])
    C.print_table(["variant", "seed", "p*", "grid best", "val loss", "regret", "EM", "F1", "BERTScore",
                   "grid F1", "cost/grid (wall)", "cost/grid (cpu)"], rows)
    print()
    diag = [[v["variant"], d.get("lowest_candidate_won"), d.get("corr_ratio_reward"), d.get("mean_abs_reward"),
             d.get("mean_reward_below_pc"), d.get("mean_reward_above_pc"), d.get("commits"),
             f"{d['mu'][0]:.3f}->{d['mu'][1]:.3f}", f"{d['p_c'][0]:.3f}->{d['p_c'][1]:.3f}"]
            for v in results for d in [v.get("diagnosis") or {}] if d]
    C.print_table(["variant", "lowest won", "corr(rho, r)", "mean |r|", "r below p_c", "r above p_c", "commits",
                   "mu", "p_c"], diag)


GRID_STEP = 0.1  # spacing of the 8-point grid: "within one grid step" of its best ratio
REGRET_GOAL = 0.02  # issue 12's goal on the final run's validation loss


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Languages of several result files in one: per language the grid with the most seeds, per
    (variant, seed) the last row (a later file wins), the controller of the last file."""
    merged: dict[str, Any] = {}
    for report in reports:
        for lang, entry in report.get("languages", {}).items():
            m = merged.setdefault(lang, {"grid": None, "variants": {}})
            grid = entry.get("grid")
            if grid is not None and (m["grid"] is None or len(grid["seeds"]) >= len(m["grid"]["seeds"])):
                m["grid"] = grid
            for name, v in entry.get("variants", {}).items():
                mv = m["variants"].setdefault(name, {"variant": name, "controller": v["controller"], "rows": {}})
                mv["controller"] = v["controller"]
                for row in v["rows"]:
                    mv["rows"][str(row["seed"])] = row
    # The grid columns come from the merged grid: it has the most seeds, so its selected ratio (and
    # the test scores taken there) is the protocol's; rows run before their grid was complete get them too.
    for m in merged.values():
        for v in m["variants"].values():
            for key, row in v["rows"].items():
                g = (m["grid"] or {}).get("seeds", {}).get(key)
                if g is not None:
                    v["rows"][key] = {**row, **grid_columns(m["grid"], g, row["val_loss"])}
    return merged


def case(lang: str, seed: int, p_star: float, best_ratio: float, regret: float) -> dict[str, Any]:
    """One (language, seed) case; a hit when regret <= REGRET_GOAL or p* is within one grid step of the best."""
    hit = regret <= REGRET_GOAL or abs(p_star - best_ratio) <= GRID_STEP + 1e-9
    return {"lang": lang, "seed": seed, "p_star": p_star, "grid_best": best_ratio, "regret": regret, "hit": hit}


def scoreboard(merged: dict[str, Any]) -> list[dict[str, Any]]:
    """Per variant, over every (language, seed) case that has a grid: the issue's three goals.

    - a case is a hit when regret <= REGRET_GOAL or p* is within one grid step of the seed's best ratio;
    - test F1: the variant's mean over the cases against the mean of the grid's run at its selected ratio;
    - cost per language: (1 controller run + the final runs) / (the grid points of those seeds), CPU time.
    """
    import statistics

    out = []
    names = sorted({n for m in merged.values() for n in m["variants"]})
    for name in names:
        cases, f1, grid_f1, costs = [], [], [], {}
        for lang, m in sorted(merged.items()):
            v = m["variants"].get(name)
            if v is None:
                continue
            rows = [r for r in v["rows"].values() if r.get("regret") is not None]
            for r in sorted(rows, key=lambda r: r["seed"]):
                cases.append(case(lang, r["seed"], r["p_star"], r["grid_best_ratio"], r["regret"]))
                f1.append(r["test"].get("f1"))
                grid_f1.append(r["grid_test"].get("f1"))
            if rows:
                grasp = (v["controller"].get("cpu_s") or 0.0) + sum(r["final_cpu_s"] or 0.0 for r in rows)
                costs[lang] = grasp / sum(r["grid_cpu_s"] for r in rows)
        if cases:
            out.append({"variant": name, "cases": cases, "hits": sum(c["hit"] for c in cases),
                        "mean_regret": statistics.fmean(c["regret"] for c in cases),
                        "mean_test_f1": statistics.fmean(f1), "mean_grid_test_f1": statistics.fmean(grid_f1),
                        "cost_over_grid_cpu": costs})
    # Reference row: the grid's own selected ratio (lowest mean over seeds) scored like a controller.
    # Its regret against each seed's best point is the floor that seed noise alone puts under any
    # single ratio chosen for all seeds, since each seed's best is the minimum of 8 noisy losses.
    cases, f1 = [], []
    for lang, m in sorted(merged.items()):
        g = m["grid"]
        if g is None or len(g["seeds"]) < 2:
            continue
        for seed, gs in sorted(g["seeds"].items()):
            loss = next(p["val_loss"] for p in gs["points"] if abs(p["ratio"] - g["selected_ratio"]) < 1e-9)
            cases.append(case(lang, int(seed), g["selected_ratio"], gs["best_ratio"], loss - gs["best_val_loss"]))
            f1.append(gs["test"].get("f1"))
    if cases:
        out.append({"variant": "grid's selected ratio (reference)", "cases": cases, "hits": sum(c["hit"] for c in cases),
                    "mean_regret": statistics.fmean(c["regret"] for c in cases), "mean_test_f1": statistics.fmean(f1),
                    "mean_grid_test_f1": statistics.fmean(f1), "cost_over_grid_cpu": {}})
    return out


def print_scoreboard(board: list[dict[str, Any]]) -> None:
    print("\n== against issue 12's goals (hit: regret <= 0.02 or p* within one grid step of the seed's best)")
    C.print_table(["variant", "lang", "seed", "p*", "seed's best ratio", "regret", "hit"],
                  [[b["variant"], c["lang"], c["seed"], c["p_star"], c["grid_best"], c["regret"], c["hit"]]
                   for b in board for c in b["cases"]])
    print()
    C.print_table(["variant", "cases", "hits", "mean regret", "mean test F1", "grid's mean test F1", "cost/grid (cpu)"],
                  [[b["variant"], len(b["cases"]), b["hits"], b["mean_regret"], b["mean_test_f1"], b["mean_grid_test_f1"],
                    ", ".join(f"{k} {x:.2f}" for k, x in b["cost_over_grid_cpu"].items())] for b in board])


def add_cache_args(ap: argparse.ArgumentParser) -> None:
    """The options that locate and build the harness's cache, shared with the scripts that read it."""
    ap.add_argument("--source-articles", type=int, default=8)
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--work", type=Path, default=C.SCRATCH_DIR / "real_data")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quiet", action="store_true")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="folder with xquad.{en,ar,zh}.dev.json (required unless --summarize)")
    ap.add_argument("--langs", default="ar,zh")
    ap.add_argument("--seeds", default="42,1337,9001")
    ap.add_argument("--variants", default="paper")
    ap.add_argument("--phase", choices=["grid", "variants", "all"], default="all",
                    help="grid: adapters + grid (+ its test scores); variants: controller variants only (reads the "
                         "grid if finished); all: both")
    add_cache_args(ap)
    ap.add_argument("--out", default=str(C.RESULTS_DIR / "bench_real_data.json"))
    ap.add_argument("--summarize", nargs="+", type=Path, metavar="JSON",
                    help="run nothing: merge these result files (one per process) and print the goals' scoreboard")
    args = ap.parse_args(argv)
    if args.summarize:
        board = scoreboard(merge_reports([json.loads(f.read_text()) for f in args.summarize]))
        print_scoreboard(board)
        C.write_report({"benchmark": "bench_real_data --summarize", "files": [str(f) for f in args.summarize],
                        "scoreboard": board}, args.out)
        return 0
    if args.data is None:
        ap.error("--data is required (the folder holding xquad.{en,ar,zh}.dev.json)")
    args.langs = [x for x in args.langs.split(",") if x]
    args.seeds = [int(x) for x in args.seeds.split(",") if x]
    variants = [x for x in args.variants.split(",") if x]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown} (known: {', '.join(VARIANTS)})")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    C.ignore_scratch(args.work)  # a --work outside the repository's scratch dir is the user's to manage
    files = subset_files(args.data, args.langs, args.source_articles, args.work / "xquad")

    out_path = Path(args.out)
    report = json.loads(out_path.read_text()) if out_path.exists() else {}
    report.update(C.run_header("bench_real_data", args) | {"args": {**vars(args), "work": str(args.work),
                                                                     "data": str(args.data)}})
    for lang in args.langs:
        # --phase variants trains no grid point (another process may be running the grid): it
        # reads the grid when every point is finished and leaves the regret columns empty otherwise.
        grid = run_grid(args, lang, files, train=args.phase in ("grid", "all"))
        entry = report.setdefault("languages", {}).setdefault(lang, {})
        if grid is not None:
            print_grid(lang, grid)
            entry["grid"] = grid
        if args.phase in ("variants", "all"):
            results = [run_variant(args, lang, files, v, grid) for v in variants]
            for v in results:
                entry.setdefault("variants", {})[v["variant"]] = v
            print_variants(lang, list(entry["variants"].values()))
        C.write_report(json.loads(json.dumps(report, default=str)), out_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
