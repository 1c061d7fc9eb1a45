"""The summarisation half on real text (issue 26): the XL-Sum workflow end to end on real articles.

Per target language (en -> ar, en -> zh): XSum English articles as the source pool and XL-Sum
Arabic or Chinese as the target pool (`--data`, the folder holding `english_dev.jsonl`,
`arabic_dev.jsonl` and `chinese_simplified_dev.jsonl`), Gemma 3 270M, sizes that fit those pools
(target train 40 / val 20 / micro-dev 16 / test 20; source train 100 / val 10), articles cut to
`--article-tokens` (the recipe key `data.max_article_tokens`, recorded in the report). The whole
pipeline runs: both adapters, every baseline, the default controller and its final run, the
8-point grid, evaluation (ROUGE-L, BLEU-4, BERTScore) and the report. Each stage's wall-clock and
CPU time is recorded; the systems table is read from the run's `results.json`.

`--longer-budget N` evaluates two systems again (target-only LoRA and GRASP, same adapters) with
articles cut at N tokens instead, to state what the shorter budget costs in ROUGE-L at generation
time (their training used the shorter budget).

    python -m benchmarks.bench_summaries --data ../shared/data/summaries --langs ar --seeds 42 --threads 1

Nothing is copied into the repository (the runs live under benchmarks/results/scratch/, which git
ignores).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from benchmarks import _common as C

REPO = Path(__file__).resolve().parents[1]
FILES = {"en": "english_dev.jsonl", "ar": "arabic_dev.jsonl", "zh": "chinese_simplified_dev.jsonl"}
RECIPES = {"ar": REPO / "configs" / "xlsum_ar.yaml", "zh": REPO / "configs" / "xlsum_zh.yaml"}
SIZES = ["data.source_sizes={train: 100, val: 10, micro_dev: 0, test: 0}",
         "data.target_sizes={train: 40, val: 20, micro_dev: 16, test: 20}"]
CPU_RECIPE = ["train.lr=1e-3", "train.grad_accum=4", "train.epochs=2", "train.patience=2",
              "controller.score_batch_size=1", "generation.batch_size=4", "data.split_by=context"]


def data_files(data: Path, lang: str) -> tuple[Path, Path]:
    files = []
    for code in ("en", lang):
        f = data / FILES[code]
        if not f.is_file():
            raise SystemExit(f"{f}: not found (pass the folder holding {', '.join(FILES.values())} as --data)")
        files.append(f)
    return files[0], files[1]


def lang_config(args, lang: str, extra: list[str] = ()):
    from grasp_lora.config import load_config

    source, target = data_files(args.data, lang)
    overrides = [f"model.name={args.model}", f"data.source_data={source}", f"data.target_data={target}",
                 f"data.max_article_tokens={args.article_tokens}", f"pipeline.seeds={json.dumps(args.seeds)}",
                 f"generation.max_new_tokens={args.max_new_tokens}", *SIZES, *CPU_RECIPE, *args.overrides, *extra]
    return load_config(RECIPES[lang], overrides)


def run_language(args, lang: str) -> dict[str, Any]:
    """The whole pipeline for one language, each stage timed; the report's tables."""
    from grasp_lora.io import read_json
    from grasp_lora.pipeline import STAGES, Experiment

    exp = Experiment(lang_config(args, lang), root=args.work / f"{lang}_{args.article_tokens}",
                     progress=not args.quiet, log=C._log(args.quiet))
    exp.start()
    stages = {}
    try:
        for stage in STAGES:
            wall, cpu = time.perf_counter(), time.process_time()
            getattr(exp, stage)()
            stages[stage] = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    finally:
        exp.release_unit_lock()
    return {"lang": lang, "article_tokens": args.article_tokens, "stages": stages, "run_dir": str(exp.root),
            **run_tables(exp.root)}


def run_tables(run_dir: Path) -> dict[str, Any]:
    """What the report needs from a finished run folder: the systems table, the grid's curve, the
    controller's answer, each system's cost and the runtime comparison."""
    from grasp_lora.io import read_json

    results = read_json(run_dir / "results.json")
    summary = run_dir / "grid" / "summary.json"  # RunLayout.grid_summary_path (no config at hand here)
    grid = read_json(summary) if summary.exists() else None
    return {"rows": results["rows"], "runtime": results.get("runtime"), "controller": results.get("controller"),
            "costs": results.get("costs"), "stage1_minutes": results.get("stage1_minutes"),
            "grid": None if grid is None else {"selected_ratio": grid["selected_ratio"], "per_ratio": [
                {"ratio": p["ratio"], "mean_val_loss": p["mean_val_loss"]} for p in grid["per_ratio"]]}}


def longer_budget(args, lang: str, tokens: int) -> dict[str, Any]:
    """Target-only LoRA and GRASP's final adapter evaluated with articles cut at `tokens`."""
    from benchmarks.bench_real_data import evaluate_adapter
    from grasp_lora.pipeline import Experiment

    exp = Experiment(lang_config(args, lang), root=args.work / f"{lang}_{args.article_tokens}", progress=not args.quiet,
                     log=C._log(args.quiet))
    longer = Experiment(lang_config(args, lang, [f"data.max_article_tokens={tokens}"]), root=exp.root,
                        progress=not args.quiet, log=C._log(args.quiet))
    out = {}
    for name, adapter in [("target_only", exp.adapter_dir(lang)),
                          ("grasp", exp.seed_dir(args.seeds[0]) / "final" / "adapter")]:
        out[name] = {}
        for label, e in [(args.article_tokens, exp), (tokens, longer)]:
            wall = time.perf_counter()
            m = evaluate_adapter(e, adapter, args.work / f"{lang}_{args.article_tokens}" / "budget" / f"{name}_{label}")
            out[name][str(label)] = {**C.headline_metrics(m), "wall_s": time.perf_counter() - wall}
    return out


def markdown(entry: dict[str, Any]) -> str:
    """One language's BENCHMARKS.md tables: systems, the grid's curve and the controller, stage times."""
    costs = {c["family"]: c for c in entry.get("costs") or []}
    lines = ["| system | prune % | ROUGE-L | BLEU-4 | BERTScore-F1 | training min | eval min |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in entry["rows"]:
        ratio = (r.get("ratio") or {}).get("mean")
        m = [(r["metrics"].get(k) or {}).get("mean") for k in ("rouge_l", "bleu4", "bertscore")]
        c = costs.get(r["family"], {})
        cells = ["–" if ratio is None else f"{100 * ratio:.1f}", *["–" if v is None else f"{v:.2f}" for v in m],
                 f"{c.get('minutes', 0.0):.1f}", f"{c.get('eval_minutes', 0.0):.1f}"]
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    if entry.get("grid"):
        g = entry["grid"]
        p_stars = ", ".join(f"{c['p_star']:.3f} (seed {c['seed']}, {c.get('rounds')} rounds)" for c in entry.get("controller") or [])
        lines += ["", "| prune ratio | " + " | ".join(f"{p['ratio']:g}" for p in g["per_ratio"]) + " |",
                  "|---|" + "---:|" * len(g["per_ratio"]),
                  "| validation loss | " + " | ".join(
                      (f"**{p['mean_val_loss']:.4f}**" if p["ratio"] == g["selected_ratio"] else f"{p['mean_val_loss']:.4f}")
                      for p in g["per_ratio"]) + " |",
                  "", f"Grid best {g['selected_ratio']:g}; GRASP's p\\* {p_stars}."]
    rt = entry.get("runtime") or {}
    if rt.get("grid") and rt.get("grasp"):
        lines.append(f"Grid search {rt['grid']['minutes']:.1f} min ({rt['grid']['runs']} runs) against GRASP "
                     f"{rt['grasp']['minutes']:.1f} min (controller + final run): speed-up {rt['speedup']:.2f}×.")
    lines += ["", "| stage | wall s | CPU s |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['wall_s']:.0f} | {v['cpu_s']:.0f} |" for k, v in entry["stages"].items()]
    if entry.get("longer_budget"):
        lines += ["", "| system | article tokens | ROUGE-L | BLEU-4 | BERTScore-F1 | eval wall s |", "|---|---:|---:|---:|---:|---:|"]
        for name, by_budget in entry["longer_budget"].items():
            for tokens, m in by_budget.items():
                lines.append(f"| {name} | {tokens} | {m.get('rouge_l', float('nan')):.2f} | {m.get('bleu4', float('nan')):.2f} | "
                             f"{m.get('bertscore', m.get('bertscore_f1', float('nan'))):.2f} | {m['wall_s']:.0f} |")
    return "\n".join(lines)


def print_language(entry: dict[str, Any]) -> None:
    print(f"\n== en -> {entry['lang']} (articles cut at {entry['article_tokens']} tokens)")
    keys = [k for k in ("rouge_l", "bleu4", "bertscore") if any(k in r["metrics"] for r in entry["rows"])]
    C.print_table(["system", "prune ratio", *keys],
                  [[r["label"], (r.get("ratio") or {}).get("mean"), *[(r["metrics"].get(k) or {}).get("mean") for k in keys]]
                   for r in entry["rows"]])
    C.print_table(["stage", "wall s", "cpu s"], [[k, v["wall_s"], v["cpu_s"]] for k, v in entry["stages"].items()])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="folder with english_dev.jsonl, arabic_dev.jsonl, ...")
    ap.add_argument("--langs", default="ar,zh")
    ap.add_argument("--seeds", default="42")
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--article-tokens", type=int, default=256, help="data.max_article_tokens of the runs")
    ap.add_argument("--max-new-tokens", type=int, default=48, help="one-sentence summaries")
    ap.add_argument("--longer-budget", type=int, default=None, metavar="TOKENS",
                    help="also evaluate target-only LoRA and GRASP with articles cut at TOKENS")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--work", type=Path, default=C.SCRATCH_DIR / "summaries")
    ap.add_argument("--out", type=Path, default=C.RESULTS_DIR / "bench_summaries.json")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--summarize", action="store_true",
                    help="run nothing: re-read the run folders named in --out and print BENCHMARKS.md's tables")
    args = ap.parse_args(argv)
    args.seeds = [int(x) for x in args.seeds.split(",") if x]
    if args.summarize:
        report = json.loads(args.out.read_text())
        for key, entry in report.get("languages", {}).items():
            entry.update(run_tables(Path(entry["run_dir"])))
            print(f"\n### en -> {entry['lang']} (articles cut at {entry['article_tokens']} tokens)\n\n{markdown(entry)}")
        C.write_report(json.loads(json.dumps(report, default=str)), args.out)
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    C.ignore_scratch(args.work)
    header = C.run_header("bench_summaries", args)
    for lang in [x for x in args.langs.split(",") if x]:
        entry = run_language(args, lang)
        if args.longer_budget:
            entry["longer_budget"] = longer_budget(args, lang, args.longer_budget)
        print_language(entry)
        # Re-read just before writing: one process per language may share the report file.
        report = json.loads(args.out.read_text()) if args.out.exists() else {}
        report.update(header)
        report.setdefault("languages", {})[f"{lang}_{args.article_tokens}"] = entry
        C.write_report(json.loads(json.dumps(report, default=str)), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
