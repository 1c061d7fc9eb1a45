"""Which reward ranks prune ratios the way the grid does? A probe at the controller's first decision.

The controller run is rebuilt exactly (merged adapters, batch 1 x accumulation 1, the recipe's
seed) and trained dense for `--at` optimizer steps (K = 10: the state of round 1, before any mask).
At that state every ratio of the grid is scored on the 16 micro-dev examples by:
  - the immediate reward (the paper's): the mask applied to the current weights, then scored;
  - the lookahead reward with n steps (`controller.reward: lookahead`): the mask applied, the
    factors trained n optimizer steps under it on n training examples (the same for every ratio),
    then scored; weights and optimizer state are restored after each ratio.
Each reward is L_ref - L(ratio), L_ref being the dense model scored the same way (dense and n steps
trained for lookahead). The grid's final validation loss at each ratio (the target the controller
should find) is printed beside it, with the Spearman correlation of each reward with -val loss.

    OMP_NUM_THREADS=1 python -m benchmarks.probe_rewards --data ../shared/data/xquad --lang zh

It reads the real-data harness's cache (splits, stage-1 adapters, grid); run
`bench_real_data.py --phase grid` for the language first.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from benchmarks import _common as C
from benchmarks import bench_real_data as R


def spearman(xs: list[float], ys: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(xs, ys).statistic)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--lang", default="ar")
    ap.add_argument("--seed", type=int, default=42, help="the grid seed whose curve is shown")
    ap.add_argument("--at", type=int, default=10, help="dense optimizer steps before the probe (K)")
    ap.add_argument("--lookahead", default="5,20", help="lookahead step counts to probe")
    R.add_cache_args(ap)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    args.seeds = [args.seed]
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from grasp_lora.controller.scorers import build_scorer
    from grasp_lora.io import manifest_complete, read_json
    from grasp_lora.config import controller_config, with_variant
    from grasp_lora.pruning.state import MaskState
    from grasp_lora.search.grid import point_dir
    from grasp_lora.training.finetune import setup_merged_training
    from grasp_lora.training.loop import micro_dev_loss_fn, train

    files = R.subset_files(args.data, [args.lang], args.source_articles, args.work / "xquad")
    exp = R.base_experiment(args, args.lang, files)
    cfg = controller_config(exp.cfg)
    c, lang = cfg.controller, cfg.data.target_lang
    ratios = list(cfg.grid.ratios)
    grid = {}
    for r in ratios:
        d = point_dir(exp.seed_dir(args.seed) / "grid", r)
        if manifest_complete(d):
            grid[r] = read_json(d / "result.json")["best_val_loss"]

    model, tok = exp.base_model()
    _, groups, (train_set, _val, micro_set) = setup_merged_training(
        cfg, model, tok, exp.source_target_adapters, exp.rows(lang, "train"), exp.rows(lang, "val"),
        exp.rows(lang, "micro_dev")[: c.micro_dev_size])
    ref: dict = {}

    class KeepOptimizer:
        def on_train_start(self, state) -> None:
            ref["optimizer"] = state.optimizer

        def on_optimizer_step(self, state) -> None:
            ref["optimizer"] = state.optimizer

    train(model, train_set, None, replace(cfg.train, grad_accum=c.grad_accum, max_steps=args.at),
          hooks=[KeepOptimizer()], grad_accum=c.grad_accum, progress=not args.quiet, seed=cfg.train.seed,
          desc="probe")
    ms = MaskState(groups)
    evaluate = micro_dev_loss_fn(model, micro_set, c.score_batch_size)
    rewards: dict[str, dict[float, float]] = {}
    immediate = build_scorer(with_variant(c, "dense"), ms, evaluate, lambda: ref["optimizer"])
    dense = immediate.committed_loss()
    immediate.refresh_importance()
    rewards["immediate"] = {r: dense - immediate.candidate_loss(r) for r in ratios}
    for n in [int(x) for x in args.lookahead.split(",") if x]:
        scorer = build_scorer(with_variant(c, "dense_lookahead", lookahead_steps=n), ms, evaluate,
                              lambda: ref["optimizer"], model=model, train_set=train_set,
                              targets_only=cfg.train.targets_only_head)
        base = scorer.committed_loss()  # dense, trained n steps (draws the examples every ratio uses)
        scorer.refresh_importance()
        rewards[f"lookahead_{n}"] = {r: base - scorer.candidate_loss(r) for r in ratios}

    names = list(rewards)
    print(f"\n{lang} (grid seed {args.seed}), rewards at step {args.at} (dense micro-dev loss {dense:.4f})")
    print("ratio  " + "  ".join(f"{n:>13}" for n in names) + "  grid val loss")
    for r in ratios:
        print(f"{r:5.2f}  " + "  ".join(f"{rewards[n][r]:+13.4f}" for n in names)
              + f"  {grid.get(r, float('nan')):13.4f}")
    corr = {}
    if len(grid) == len(ratios):
        corr = {n: spearman([rewards[n][r] for r in ratios], [-grid[r] for r in ratios]) for n in names}
        print("Spearman(reward, -grid val loss): " + ", ".join(f"{n} {v:+.2f}" for n, v in corr.items()))
    out = Path(args.out or C.RESULTS_DIR / f"probe_rewards_{lang}.json")
    report = C.run_header("probe_rewards", args) | {
        "lang": lang, "at_step": args.at, "dense_loss": dense, "ratios": ratios,
        "rewards": {n: [rewards[n][r] for r in ratios] for n in names},
        "grid_val_loss": [grid.get(r) for r in ratios], "spearman_vs_neg_grid_loss": corr}
    C.write_report(json.loads(json.dumps(report, default=str)), out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
