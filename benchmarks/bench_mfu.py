"""Model FLOPs utilisation (MFU) on the CPU: achieved model FLOP/s of adapter training, of a
controller run and of a fixed-ratio run, over the machine's dense fp32 matmul FLOP/s.

Peak: torch.matmul of two n x n fp32 matrices (2 n^3 FLOPs), median of --matmul-repeats, for each
--matmul-n; the largest rate is the reference.

Model FLOPs are counted from what the model really processed (a forward pre-hook on the model the
loop calls: tokens without padding and LM-head positions, split into training forwards and no-grad
forwards such as validation and controller scoring):

    training forward+backward (frozen backbone): 4 N T + 4 d V P + 6 L T
    no-grad forward:                             2 N T + 2 d V P + 2 L T

N = non-embedding parameters, T = tokens, P = LM-head positions (target tokens with the
targets-only head), d x V = the LM head, L = sum over LoRA modules of r (d_in + d_out). The
frozen backbone needs activation gradients (2) but no weight gradients; attention-score FLOPs are
not counted, so MFU is slightly understated for long sequences. Time: the whole `train` call
(optimizer, pruning, controller bookkeeping and validation included).

    python -m benchmarks.bench_mfu                                        # gemma-3-270m, demo recipe
    python -m benchmarks.bench_mfu --model tiny-llama --smoke --matmul-n 512
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from typing import Any

from benchmarks import _common as C


def adapter_training(exp, cfg, examples, args) -> dict[str, Any]:
    """Stage-1 training (PEFT LoRA, the recipe's r/alpha/modules, batch and accumulation)."""
    import torch
    from peft import get_peft_model

    from grasp_lora.io import Timer
    from grasp_lora.training.adapters import peft_lora_config
    from grasp_lora.training.loop import train

    model, _ = exp.base_model()
    torch.manual_seed(cfg.train.seed)
    pm = get_peft_model(model, peft_lora_config(cfg))
    dims = C.model_dims(model)
    lora = C.lora_dims(pm)
    counter = C.TokenCounter(pm)
    timer = Timer()
    tcfg = replace(cfg.train, epochs=1, max_steps=args.steps)
    t0 = time.perf_counter()
    res = train(pm, examples, None, tcfg, hooks=[], progress=not args.quiet, timer=timer, seed=cfg.train.seed,
                desc="adapter")
    wall = time.perf_counter() - t0
    counter.remove()
    return {"wall_s": wall, "steps": res.steps, "counts": counter.counts, "flops": counter.flops(dims, lora),
            "timings": timer.timings, "dims": dims, "lora_L": lora}


def controller_run(exp, cfg, args) -> dict[str, Any]:
    from grasp_lora.search.grasp import run_grasp_search

    lang = cfg.data.target_lang
    model, tok = exp.base_model()
    counter = C.TokenCounter(model)
    rcfg = replace(cfg, train=replace(cfg.train, max_steps=args.controller_steps))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = run_grasp_search(rcfg, model, tok, exp.source_target_adapters, exp.rows(lang, "train"),
                               exp.rows(lang, "val"), exp.rows(lang, "micro_dev"), tmp, progress=not args.quiet)
        wall = time.perf_counter() - t0
    counter.remove()
    dims, lora = C.model_dims(model), C.lora_dims(model)
    return {"wall_s": wall, "steps": res["steps"], "rounds": res["rounds"], "counts": counter.counts,
            "flops": counter.flops(dims, lora), "timings": res["timings"], "lora_L": lora}


def fixed_ratio(exp, cfg, args) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    class Count:  # a training-loop hook: attaches the counter to the merged model before the first step
        def on_train_start(self, state) -> None:
            seen["counter"] = C.TokenCounter(state.model)
            seen["dims"], seen["lora"] = C.model_dims(state.model), C.lora_dims(state.model)

    res = C.fixed_ratio_run(exp, cfg, args.ratio, max_steps=args.steps, hooks=[Count()])
    counter = seen["counter"]
    counter.remove()
    return {"wall_s": res["wall_s"], "steps": res["steps"], "counts": counter.counts,
            "flops": counter.flops(seen["dims"], seen["lora"]), "timings": res["timings"], "lora_L": seen["lora"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_common_args(ap, "bench_mfu")
    ap.add_argument("--matmul-n", default="1024,2048,4096", help="square matmul sizes, comma separated (default %(default)s)")
    ap.add_argument("--matmul-repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=None, help="cap optimizer steps of adapter training / fixed-ratio run "
                                                          "(default: one epoch / the whole run)")
    ap.add_argument("--controller-steps", type=int, default=None, help="cap optimizer steps of the controller run")
    ap.add_argument("--ratio", type=float, default=0.5, help="ratio of the fixed-ratio run (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per workload, alternated; medians (default 1)")
    ap.add_argument("--skip", default="", help="comma-separated workloads to skip: adapter, controller, fixed_ratio")
    args = ap.parse_args(argv)
    C.setup(args)

    cfg = C.build_config(args)
    exp = C.base_experiment(cfg, args)
    report: dict[str, Any] = C.run_header("mfu", args)
    report.update(model=args.model, recipe=args.recipe, scratch=str(exp.root), flop_formulas=C.FLOP_FORMULAS)

    peaks = [C.matmul_flops_per_s(int(n), args.matmul_repeats) for n in args.matmul_n.split(",") if n.strip()]
    C.print_table(["matmul n", "GFLOP/s"], [[p["n"], p["flops_per_s"] / 1e9] for p in peaks])
    peak = max(p["flops_per_s"] for p in peaks)

    examples = C.encode_rows(exp, cfg, exp.rows(cfg.data.target_lang, "train"))
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    workloads = {
        "adapter": ("adapter training (stage 1, PEFT LoRA)", lambda: adapter_training(exp, cfg, examples, args)),
        "controller": ("controller run (training + rounds + validation)", lambda: controller_run(exp, cfg, args)),
        "fixed_ratio": (f"fixed-ratio run at {args.ratio} (ours)", lambda: fixed_ratio(exp, cfg, args)),
    }
    names = [n for n in workloads if n not in skip]
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for rep in range(args.repeats):
        for n in (names if rep % 2 == 0 else list(reversed(names))):
            r = workloads[n][1]()
            r["flop_per_s"] = r["flops"]["total"] / r["wall_s"]
            r["mfu"] = r["flop_per_s"] / peak
            runs[n].append(r)
            print(f"rep {rep + 1} {n}: {r['wall_s']:.2f}s, {r['flops']['total'] / 1e9:.2f} GFLOP, MFU {r['mfu']:.3f}")

    rows, results = [], {}
    for n in names:
        rs = runs[n]
        best = rs[0]
        med_wall = C.median(r["wall_s"] for r in rs)
        med_rate = C.median(r["flop_per_s"] for r in rs)
        results[n] = {"label": workloads[n][0], "runs": rs, "wall_s": med_wall, "flop_per_s": med_rate,
                      "mfu": med_rate / peak}
        g, ng = best["counts"]["grad"], best["counts"]["nograd"]
        extra = {}
        if n == "controller":
            rounds_s = C.median(r["timings"].get("controller_rounds", 0.0) for r in rs)
            extra["rounds_s"] = rounds_s
        rows.append([workloads[n][0], g["tokens"], g["head_positions"], ng["tokens"], ng["head_positions"],
                     best["flops"]["total"] / 1e9, med_wall, med_rate / 1e9, med_rate / peak])
        results[n].update(extra)
    print()
    text = C.print_table(["workload", "train tok", "train head", "no-grad tok", "no-grad head", "GFLOP", "seconds",
                          "GFLOP/s", "MFU"], rows)
    dims = C.model_dims(exp.base.master)
    print(f"\npeak (dense fp32 matmul) {peak / 1e9:.1f} GFLOP/s; N = {dims['non_embedding_params']:,}, "
          f"d = {dims['d_model']}, V = {dims['vocab']:,}")
    print(f"training FLOPs = {C.FLOP_FORMULAS['training']}; no-grad forward FLOPs = {C.FLOP_FORMULAS['forward']}")
    print(C.FLOP_FORMULAS["legend"])
    report.update(matmul=peaks, peak_flops_per_s=peak, dims=dims, workloads=results, table=text)
    C.write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
