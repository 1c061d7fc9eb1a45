"""Training throughput with and without the targets-only LM head.

The targets-only head asks the model for logits only at the positions whose next token is a
label (the answer), instead of at every prompt position; for a QA example that is a few tokens
out of a few hundred, and the LM head over a 262k vocabulary (Gemma 3) is the biggest matmul of a
small model. This script runs the one training loop (PEFT LoRA, the paper's r/alpha/modules,
batch 1, no accumulation) over the same examples in both modes and reports tokens/s, peak memory
and the first-epoch loss (the two must agree: same objective, same shuffle, same init).

    python -m benchmarks.bench_training                        # gemma-3-270m, 32 examples
    python -m benchmarks.bench_training --model tiny-llama --n 8
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from benchmarks import _common as C
from benchmarks.bench_generation import benchmark_rows, load


def run_mode(model, examples, targets_only: bool, args) -> dict[str, Any]:
    from peft import get_peft_model

    from grasp_lora.config import Config
    from grasp_lora.io import Timer
    from grasp_lora.training.adapters import peft_lora_config
    from grasp_lora.training.loop import train

    cfg = Config()
    cfg.train.epochs = 1
    cfg.train.grad_accum = 1
    cfg.train.batch_size = args.batch_size
    cfg.train.targets_only_head = targets_only
    torch.manual_seed(cfg.train.seed)
    peft_model = get_peft_model(model, peft_lora_config(cfg))
    timer = Timer()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with C.CpuWallTimer() as t:
        result = train(peft_model, examples, None, cfg.train, progress=not args.quiet, timer=timer)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    peft_model.unload()  # the next mode starts from the same frozen base
    seconds = timer.timings["training"]
    tokens = sum(len(ex["input_ids"]) for ex in examples)
    targets = sum(sum(1 for x in ex["labels"] if x != -100) for ex in examples)
    out = {
        "targets_only_head": targets_only, "examples": len(examples), "optimizer_steps": result.steps,
        "tokens": tokens, "target_tokens": targets, "train_seconds": round(seconds, 4), "wall_seconds": round(t.wall_s, 4), "cpu_seconds": round(t.cpu_s, 4),
        "tokens_per_s": round(tokens / seconds, 1), "examples_per_s": round(len(examples) / seconds, 3),
        "train_loss": result.epochs[0]["train_loss"],
    }
    if torch.cuda.is_available():
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--n", type=int, default=32, help="training examples (one epoch)")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--task", default="mlqa", choices=["mlqa", "xlsum"])
    ap.add_argument("--lang", default="en")
    ap.add_argument("--context-chars", type=int, default=800)
    ap.add_argument("--max-length", type=int, default=4096)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3,
                    help="alternated runs per mode; the speed-up is the median of per-repeat ratios")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/bench_training.json")
    args = ap.parse_args(argv)

    from grasp_lora.data.tokenize import encode_for_training

    model, tok = load(args.model, args.dtype, args.device)
    rows = benchmark_rows(args.task, args.lang, args.n + 2, args.context_chars)
    examples = [encode_for_training(tok, args.task, args.lang, r, args.max_length) for r in rows]
    warmup, examples = examples[:2], examples[2:]

    # Warm-up outside the timed runs (kernels, allocator, first-call overheads).
    run_mode(model, warmup, True, argparse.Namespace(**{**vars(args), "quiet": True}))
    # Alternate the modes (full, targets-only, full, ...) so each pair saw about the same load on a
    # shared machine; the speed-up is the median of the per-pair ratios, printed with its range.
    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for rep in range(args.repeats):
        for mode in (False, True):
            r = run_mode(model, examples, mode, args)
            r["repeat"] = rep
            runs[mode].append(r)
            if not args.quiet:
                print(f"repeat {rep + 1}/{args.repeats} targets_only={mode}: {r['train_seconds']:.2f} s "
                      f"(cpu {r['cpu_seconds']:.1f} s)", flush=True)
    results = []
    for mode in (False, True):
        med = C.median(r["train_seconds"] for r in runs[mode])
        res = {k: v for k, v in runs[mode][0].items() if k not in ("train_seconds", "wall_seconds", "cpu_seconds", "repeat")}
        res["train_seconds_median"] = round(med, 4)
        res["tokens_per_s_median"] = round(res["tokens"] / med, 1)
        res["train_seconds_repeats"] = [r["train_seconds"] for r in runs[mode]]
        res["cpu_seconds_repeats"] = [r["cpu_seconds"] for r in runs[mode]]
        res["train_loss_repeats"] = [r["train_loss"] for r in runs[mode]]
        results.append(res)
    full, sliced = results
    speedup = C.paired_ratios(full["train_seconds_repeats"], sliced["train_seconds_repeats"])
    loss_gap = max(abs(a["train_loss"] - b["train_loss"]) for a, b in zip(runs[False], runs[True]))

    dev = next(model.parameters())
    report = {
        **C.run_header("training", args), "model": args.model, "task": args.task, "lang": args.lang, "n": args.n,
        "batch_size": args.batch_size, "repeats": args.repeats, "context_chars": args.context_chars, "dtype": str(dev.dtype),
        "device": str(dev.device), "results": results, "speedup_targets_only": speedup,
        "train_loss_abs_diff": loss_gap,
    }
    header = f"{'head':<14}{'examples':>9}{'tokens':>9}{'targets':>9}{'median s':>10}{'tok/s':>10}{'loss':>10}"
    print(header)
    print("-" * len(header))
    for r in results:
        name = "targets only" if r["targets_only_head"] else "full logits"
        print(f"{name:<14}{r['examples']:>9}{r['tokens']:>9}{r['target_tokens']:>9}{r['train_seconds_median']:>10.2f}"
              f"{r['tokens_per_s_median']:>10.1f}{r['train_loss']:>10.4f}"
              + (f"  peak {r['peak_memory_gib']} GiB" if "peak_memory_gib" in r else ""))
    print(f"speed-up of the targets-only head: {C.fmt_ratio(speedup)}; train-loss difference {loss_gap:.2e}")
    C.write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
