"""Controller overhead: the share of a controller run spent in GRPO rounds, how it scales with the
number of candidates C, the round interval K and the micro-dev size M, and how close a round gets
to its FLOPs floor.

A round scores the micro-dev set C + 1 times (L0 with the committed mask, then each candidate), so

    floor FLOPs  = (C + 1) x [2 x N x T_microdev + 2 x d x V x targets_microdev (+ LoRA path)]
    floor time   = floor FLOPs / (measured dense fp32 matmul FLOP/s, torch.matmul n x n)

(N = non-embedding parameters, T = micro-dev tokens without padding, d x V = the LM head applied at
the target tokens; attention-score FLOPs not counted). Also reported: the measured time of one
micro-dev scoring on the merged model x (C + 1), which separates the controller's own
bookkeeping (importance sort, masks, stash/restore) from forward-pass efficiency. Goal: round
time within 1.2x of the floor.

Configurations: the recipe's (C, K, M) and one-at-a-time variations from --candidates,
--every-k and --micro-dev; each is a real controller run (`search.grasp.run_grasp_search`),
alternated over --repeats, medians.

    python -m benchmarks.bench_controller --max-steps 40                 # gemma-3-270m, demo recipe
    python -m benchmarks.bench_controller --model tiny-llama --smoke --candidates 2,3 --every-k 2,4 --micro-dev 2,4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks import _common as C


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_common_args(ap, "bench_controller")
    ap.add_argument("--candidates", default="2,3,5", help="values of C to try (default %(default)s)")
    ap.add_argument("--every-k", default="5,10,20", help="values of K to try (default %(default)s)")
    ap.add_argument("--micro-dev", default="4,8,16", help="micro-dev sizes M to try (default %(default)s)")
    ap.add_argument("--max-steps", type=int, default=None, help="cap optimizer steps per controller run (default: whole run)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per configuration, alternated (default %(default)s)")
    ap.add_argument("--matmul-n", type=int, default=2048, help="matrix size of the FLOP/s measurement (default %(default)s)")
    ap.add_argument("--score-repeats", type=int, default=5, help="timed micro-dev scorings per M (default %(default)s)")
    args = ap.parse_args(argv)
    C.setup(args)

    cs, ks, ms = ints(args.candidates), ints(args.every_k), ints(args.micro_dev)
    probe = C.build_config(args)
    need = max(ms + [probe.controller.micro_dev_size])
    extra = []
    if probe.data.target_sizes is None or probe.data.target_sizes.micro_dev < need:
        extra.append(f"data.target_sizes.micro_dev={need}")
    cfg = C.build_config(args, extra)
    exp = C.base_experiment(cfg, args)
    c0 = cfg.controller
    base = (c0.candidates, c0.every_k_steps, c0.micro_dev_size)
    configs = [base]
    for cand in cs:
        configs.append((cand, base[1], base[2]))
    for k in ks:
        configs.append((base[0], k, base[2]))
    for m in ms:
        configs.append((base[0], base[1], m))
    configs = list(dict.fromkeys(configs))  # unique, in order

    from grasp_lora.models.merged import merge_adapters
    from grasp_lora.search.grasp import run_grasp_search
    from grasp_lora.training.loop import micro_dev_loss_fn

    lang = cfg.data.target_lang
    train_rows, val_rows, micro_rows = exp.rows(lang, "train"), exp.rows(lang, "val"), exp.rows(lang, "micro_dev")
    report: dict[str, Any] = C.run_header("controller", args)
    report.update(model=args.model, recipe=args.recipe, scratch=str(exp.root), micro_dev_available=len(micro_rows),
                  flop_formulas=C.FLOP_FORMULAS)

    # The machine's dense matmul rate, and the model's dimensions.
    mm = C.matmul_flops_per_s(args.matmul_n)
    print(f"dense fp32 matmul ({args.matmul_n}^2): {mm['flops_per_s'] / 1e9:.1f} GFLOP/s")
    merged, _ = exp.base_model()
    merge_adapters(merged, [str(d) for d in exp.source_target_adapters], scaling=cfg.merge.scaling)
    dims = C.model_dims(merged)
    lora = C.lora_dims(merged)

    # One micro-dev scoring per M, measured on the merged model (median of --score-repeats).
    scoring: dict[int, dict[str, Any]] = {}
    for m in sorted({cfg_[2] for cfg_ in configs}):
        examples = C.encode_rows(exp, cfg, micro_rows[:m])
        tokens, targets = C.token_counts(examples)
        head = C.scoring_head_positions(examples, c0.score_batch_size)
        score = micro_dev_loss_fn(merged, examples, c0.score_batch_size)
        score()  # warm-up
        times = []
        for _ in range(args.score_repeats):
            t0 = time.perf_counter()
            score()
            times.append(time.perf_counter() - t0)
        flops = C.forward_flops(dims, tokens, targets, lora)
        scoring[m] = {"examples": len(examples), "tokens": tokens, "target_tokens": targets, "head_positions_computed": head,
                      "flops": flops, "floor_s": flops / mm["flops_per_s"], "measured_s": statistics.median(times),
                      "measured_all_s": times}
    del merged

    # Controller runs, alternated.
    runs: dict[tuple, list[dict[str, Any]]] = {cf: [] for cf in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for cf in (configs if rep % 2 == 0 else list(reversed(configs))):
                cand, k, m = cf
                rcfg = replace(cfg, controller=replace(c0, candidates=cand, every_k_steps=k, micro_dev_size=m),
                               train=replace(cfg.train, max_steps=args.max_steps))
                model, tok = exp.base_model()
                out = Path(tmp) / f"C{cand}_K{k}_M{m}_rep{rep}"
                t0 = time.perf_counter()
                res = run_grasp_search(rcfg, model, tok, exp.source_target_adapters, train_rows, val_rows, micro_rows,
                                       out, progress=not args.quiet)
                wall = time.perf_counter() - t0
                t = res["timings"]
                rounds = res["rounds"]
                rec = {"wall_s": wall, "rounds": rounds, "steps": res["steps"], "timings": t,
                       "rounds_s": t.get("controller_rounds", 0.0),
                       "round_s": t.get("controller_rounds", 0.0) / rounds if rounds else None,
                       "round_share": t.get("controller_rounds", 0.0) / wall if wall else None}
                runs[cf].append(rec)
                print(f"rep {rep + 1} C={cand} K={k} M={m}: {wall:.1f}s, {rounds} rounds, "
                      f"round {C.fmt(rec['round_s'], '.3f')}s, share {C.fmt(rec['round_share'], '.3f')}")

    rows, results = [], []
    for cf in configs:
        cand, k, m = cf
        sc = scoring[m]
        round_s = C.median(r["round_s"] for r in runs[cf])
        floor = (cand + 1) * sc["floor_s"]
        measured_floor = (cand + 1) * sc["measured_s"]
        res = {"C": cand, "K": k, "M": m, "runs": runs[cf], "rounds": runs[cf][0]["rounds"],
               "steps": runs[cf][0]["steps"], "wall_s": C.median(r["wall_s"] for r in runs[cf]),
               "round_s": round_s, "round_share": C.median(r["round_share"] for r in runs[cf]),
               "flops_floor_s": floor, "round_over_flops_floor": C.ratio(round_s, floor),
               "scoring_floor_s": measured_floor, "round_over_scoring_floor": C.ratio(round_s, measured_floor),
               "goal_within_1_2x": bool(round_s is not None and round_s <= 1.2 * floor)}
        results.append(res)
        rows.append([f"C={cand} K={k} M={m}", res["steps"], res["rounds"], res["wall_s"], res["round_share"], round_s,
                     floor, res["round_over_flops_floor"], measured_floor, res["round_over_scoring_floor"]])
    print()
    text = C.print_table(["config", "steps", "rounds", "run s", "round share", "round s", "FLOP floor s", "x floor",
                          "(C+1) scorings s", "x scorings"], rows)
    print(f"\nFLOP floor: {C.FLOP_FORMULAS['forward']} per scoring; {C.FLOP_FORMULAS['legend']}")
    print(f"N = {dims['non_embedding_params']:,}, d = {dims['d_model']}, V = {dims['vocab']:,}, L = {lora:,}; "
          f"matmul {mm['flops_per_s'] / 1e9:.1f} GFLOP/s; goal: round time <= 1.2 x FLOP floor")
    report.update(matmul=mm, dims=dims, lora_L=lora, scoring=scoring, configs=results, table=text)
    C.write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
