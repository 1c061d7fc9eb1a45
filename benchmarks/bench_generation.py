"""Generation throughput: batched KV-cache greedy decoding vs the authors' setting.

The authors' scripts decode one example at a time without a KV cache (`use_cache=False`, batch
1): every new token re-runs the whole prompt. grasp-lora decodes length-sorted, left-padded
batches with the cache. This script times both (and batch 1 with the cache, to separate the two
effects) through `generate_predictions` itself, on QA-length prompts, and checks that the greedy
outputs agree.

    python benchmarks/bench_generation.py                      # gemma-3-270m, 32 prompts
    python benchmarks/bench_generation.py --model tiny-llama --n 8

Prompts: the bundled demo QA passages joined until a context reaches --context-chars characters
(MLQA contexts are paragraphs of several hundred characters), the question of the first one.
Tokens/s counts generated tokens (up to and including EOS) over the time spent in `generate`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


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
    t0 = time.perf_counter()
    preds = generate_predictions(
        model, tok, args.task, args.lang, rows, workdir / f"{name}.jsonl", batch_size=batch_size,
        max_new_tokens=args.max_new_tokens, max_total=args.max_total, progress=not args.quiet,
        use_cache=use_cache, stats=stats,
    )
    wall = time.perf_counter() - t0
    out = {
        "setting": name, "batch_size": batch_size, "use_cache": use_cache,
        "sequences": stats["sequences"], "new_tokens": stats["new_tokens"], "prompt_tokens": stats["prompt_tokens"],
        "generate_seconds": round(stats["seconds"], 4), "wall_seconds": round(wall, 4),
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
    ap.add_argument("--skip-authors", action="store_true", help="skip the slow batch-1 no-cache run")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/bench_generation.json")
    args = ap.parse_args(argv)

    from grasp_lora.io import environment_info, write_json

    model, tok = load(args.model, args.dtype, args.device)
    rows = benchmark_rows(args.task, args.lang, args.n, args.context_chars)
    settings = [("batched_kv_cache", args.batch_size, True), ("batch1_kv_cache", 1, True)]
    if not args.skip_authors:
        settings.append(("authors_batch1_no_cache", 1, False))

    results, predictions = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        # Warm-up (kernels, allocator, lazy imports) outside the timed runs.
        run_setting(model, tok, rows[:2], args, batch_size=2, use_cache=True, workdir=workdir, name="warmup")
        for name, bs, cache in settings:
            res, preds = run_setting(model, tok, rows, args, batch_size=bs, use_cache=cache, workdir=workdir, name=name)
            results.append(res)
            predictions[name] = preds

    ref = predictions["batched_kv_cache"]
    for res in results:
        p = predictions[res["setting"]]
        res["same_predictions_as_batched"] = round(sum(p[k] == ref[k] for k in ref) / len(ref), 4)
    base = next((r for r in results if r["setting"] == "authors_batch1_no_cache"), None)
    for res in results:
        res["speedup_vs_authors"] = (
            round(res["tokens_per_s"] / base["tokens_per_s"], 2) if base and base["tokens_per_s"] and res["tokens_per_s"] else None
        )

    dev = next(model.parameters())
    report = {
        "benchmark": "generation", "model": args.model, "task": args.task, "lang": args.lang, "n": args.n,
        "max_new_tokens": args.max_new_tokens, "max_total": args.max_total, "context_chars": args.context_chars,
        "dtype": str(dev.dtype), "device": str(dev.device), "results": results, "environment": environment_info(),
    }
    header = f"{'setting':<26}{'batch':>6}{'cache':>7}{'new tok':>9}{'seconds':>10}{'tok/s':>10}{'speed-up':>10}{'same':>7}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['setting']:<26}{r['batch_size']:>6}{str(r['use_cache']):>7}{r['new_tokens']:>9}"
              f"{r['generate_seconds']:>10.2f}{r['tokens_per_s'] or 0:>10.1f}"
              f"{(r['speedup_vs_authors'] or float('nan')):>10.2f}{r['same_predictions_as_batched']:>7.2f}")
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
