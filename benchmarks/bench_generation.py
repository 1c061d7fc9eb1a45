"""Generation throughput: batched KV-cache greedy decoding vs the authors' setting.

The authors' scripts decode one example at a time without a KV cache (`use_cache=False`, batch
1): every new token re-runs the whole prompt. grasp-lora decodes length-sorted, left-padded
batches with the cache. This script times both (and batch 1 with the cache, to separate the two
effects) through `generate_predictions` itself, on QA-length prompts, and checks that the greedy
outputs agree.

    python -m benchmarks.bench_generation                      # gemma-3-270m, 32 prompts
    python -m benchmarks.bench_generation --model tiny-llama --n 8

Prompts: the bundled demo QA passages joined until a context reaches --context-chars characters
(MLQA contexts are paragraphs of several hundred characters), the question of the first one.
Tokens/s counts generated tokens (up to and including EOS) over the time spent in `generate`.
Timing: `--repeats` rounds, each running every setting back to back (A B C A B C ...); a
speed-up is the median of the per-round ratios, with its min-max range; CPU seconds (all
threads) sit next to wall-clock in the JSON so contention on a shared machine is visible.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks import _common as C


def benchmark_rows(task: str, lang: str, n: int, context_chars: int = 800) -> list[dict[str, Any]]:
    """`n` deterministic rows of realistic length built from the bundled demo pool."""
    from grasp_lora.data.demo import demo_pool

    pool = demo_pool(task, lang)
    field = "context" if task == "mlqa" else "article"
    rows = []
    for i in range(n):
        row = dict(pool[i % len(pool)])
        row["id"] = f"bench-{i:04d}"
        parts, j = [row[field]], i + 1
        while sum(len(p) for p in parts) < context_chars:
            parts.append(pool[j % len(pool)][field])
            j += 1
        row[field] = " ".join(parts)
        rows.append(row)
    return rows


def load(model_name: str, dtype: str, device: str):
    from grasp_lora.config import ModelConfig
    from grasp_lora.models.loading import load_model

    return load_model(ModelConfig(name=model_name, dtype=dtype, device=device))


def run_setting(model, tok, rows, args, *, batch_size: int, use_cache: bool, workdir: Path, name: str) -> dict[str, Any]:
    from grasp_lora.evaluation.generate import generate_predictions

    stats: dict[str, Any] = {}
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    out_file = workdir / f"{name}.jsonl"
    out_file.unlink(missing_ok=True)  # generate_predictions resumes from an existing file
    with C.CpuWallTimer() as t:
        preds = generate_predictions(
            model, tok, args.task, args.lang, rows, out_file, batch_size=batch_size,
            max_new_tokens=args.max_new_tokens, max_total=args.max_total, progress=not args.quiet,
            use_cache=use_cache, stats=stats,
        )
    out = {
        "setting": name, "batch_size": batch_size, "use_cache": use_cache,
        "sequences": stats["sequences"], "new_tokens": stats["new_tokens"], "prompt_tokens": stats["prompt_tokens"],
        "generate_seconds": round(stats["seconds"], 4), "wall_seconds": round(t.wall_s, 4),
        "cpu_seconds": round(t.cpu_s, 4),
        "tokens_per_s": round(stats["new_tokens"] / stats["seconds"], 2) if stats["seconds"] > 0 else None,
    }
    if torch.cuda.is_available():
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return out, preds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--n", type=int, default=32, help="number of prompts")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--task", default="mlqa", choices=["mlqa", "xlsum"])
    ap.add_argument("--lang", default="en")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: the task's limit (QA 64)")
    ap.add_argument("--max-total", type=int, default=2200)
    ap.add_argument("--context-chars", type=int, default=800)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3,
                    help="alternated repeats of every setting; speed-ups are the median of per-repeat ratios")
    ap.add_argument("--skip-authors", action="store_true", help="skip the slow batch-1 no-cache run")
    ap.add_argument("--skip-batch1", action="store_true", help="skip the batch-1 KV-cache run (the headline does not need it)")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/bench_generation.json")
    args = ap.parse_args(argv)

    model, tok = load(args.model, args.dtype, args.device)
    rows = benchmark_rows(args.task, args.lang, args.n, args.context_chars)
    settings = [("batched_kv_cache", args.batch_size, True)]
    if not args.skip_batch1:
        settings.append(("batch1_kv_cache", 1, True))
    if not args.skip_authors:
        settings.append(("authors_batch1_no_cache", 1, False))

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in settings}
    predictions: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        # Warm-up (kernels, allocator, lazy imports) outside the timed runs.
        run_setting(model, tok, rows[:2], args, batch_size=2, use_cache=True, workdir=workdir, name="warmup")
        for rep in range(args.repeats):
            for name, bs, cache in settings:  # alternated: each repeat runs every setting back to back
                res, preds = run_setting(model, tok, rows, args, batch_size=bs, use_cache=cache, workdir=workdir, name=name)
                res["repeat"] = rep
                runs[name].append(res)
                predictions[name] = preds
                if not args.quiet:
                    print(f"repeat {rep + 1}/{args.repeats} {name}: {res['generate_seconds']:.2f} s "
                          f"(cpu {res['cpu_seconds']:.1f} s)", flush=True)

    ref = predictions["batched_kv_cache"]
    authors = runs.get("authors_batch1_no_cache")
    results = []
    for name, _, _ in settings:
        reps = runs[name]
        secs = [r["generate_seconds"] for r in reps]
        res = {k: v for k, v in reps[0].items() if k not in ("generate_seconds", "wall_seconds", "cpu_seconds", "tokens_per_s", "repeat")}
        res["generate_seconds_median"] = round(C.median(secs), 4)
        res["generate_seconds_repeats"] = secs
        res["cpu_seconds_repeats"] = [r["cpu_seconds"] for r in reps]
        res["tokens_per_s_median"] = round(res["new_tokens"] / res["generate_seconds_median"], 2)
        p = predictions[name]
        res["same_predictions_as_batched"] = round(sum(p[k] == ref[k] for k in ref) / len(ref), 4)
        res["speedup_vs_authors"] = (
            C.paired_ratios([r["generate_seconds"] for r in authors], secs) if authors else None
        )
        results.append(res)

    dev = next(model.parameters())
    report = {
        **C.run_header("generation", args),
        "model": args.model, "task": args.task, "lang": args.lang, "n": args.n, "repeats": args.repeats,
        "max_new_tokens": args.max_new_tokens, "max_total": args.max_total, "context_chars": args.context_chars,
        "dtype": str(dev.dtype), "device": str(dev.device), "threads": torch.get_num_threads(), "results": results,
    }
    header = f"{'setting':<26}{'batch':>6}{'cache':>7}{'new tok':>9}{'median s':>10}{'tok/s':>10}{'same':>7}  speed-up vs authors"
    print(header)
    print("-" * len(header))
    for r in results:
        sp = C.fmt_ratio(r["speedup_vs_authors"]) if r["speedup_vs_authors"] else "-"
        print(f"{r['setting']:<26}{r['batch_size']:>6}{str(r['use_cache']):>7}{r['new_tokens']:>9}"
              f"{r['generate_seconds_median']:>10.2f}{r['tokens_per_s_median']:>10.1f}"
              f"{r['same_predictions_as_batched']:>7.2f}  {sp}")
    C.write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
