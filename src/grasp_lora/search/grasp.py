"""The controller run (METHOD.md, "The GRASP controller"): merged adapters trained at batch 1 x
accumulation 1 while the GRPO controller learns a global prune ratio online; its output is p*, the
rule that chose it, and the history of every round.

Several processes (METHOD.md, "The GRASP controller", Several processes): every process trains on
its share of each batch and runs every controller round itself. The candidates come from the
controller's own generator, seeded identically everywhere; the micro-dev losses are computed on
shards and all-reduced, so every process sees the same numbers; the weights are identical (gradients are summed over
processes), hence so is the importance and every mask. At the end the processes compare digests
of their history and committed masks and fail loudly if they differ; rank 0 alone writes.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from grasp_lora.config import Config
from grasp_lora.io import Timer, read_jsonl, write_json, write_manifest


class EmptyMicroDevError(ValueError):
    pass


def run_grasp_search(
    cfg: Config,
    model,
    tokenizer,
    adapter_dirs: Sequence[str | Path],
    train_rows: list[dict],
    val_rows: list[dict],
    micro_dev_rows: list[dict],
    out_dir: str | Path,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    from grasp_lora import distributed as dist
    from grasp_lora.controller.budget import round_cap, rounds_within_budget
    from grasp_lora.controller.grpo import GRPOController
    from grasp_lora.controller.hook import GRPOHook
    from grasp_lora.controller.scorers import build_scorer
    from grasp_lora.training.finetune import setup_merged_training
    from grasp_lora.pruning.state import MaskState
    from grasp_lora.training.loop import micro_dev_loss_fn, train

    c = cfg.controller
    micro_dev_rows = micro_dev_rows[: c.micro_dev_size]
    if not micro_dev_rows:
        raise EmptyMicroDevError(
            "the micro-dev split is empty: the controller scores candidates on it "
            "(set data.target_sizes.micro_dev >= 1 and re-run prepare)"
        )
    out = Path(out_dir)
    history_path = out / "history.jsonl"

    def fresh_folder() -> None:
        out.mkdir(parents=True, exist_ok=True)
        if history_path.exists():  # a previous, interrupted attempt: the run restarts from scratch
            history_path.unlink()

    dist.run_on_main(fresh_folder, f"controller run: prepare {out}")
    timer = Timer()
    started, cpu_started = time.perf_counter(), time.process_time()
    task, lang = cfg.data.task, cfg.data.target_lang
    info, groups, (train_set, val_set, micro_set) = setup_merged_training(
        cfg, model, tokenizer, adapter_dirs, train_rows, val_rows, micro_dev_rows)

    mask_state = MaskState(groups)
    controller = GRPOController(c)
    optimizer_ref: dict[str, Any] = {}
    evaluate_loss = micro_dev_loss_fn(model, micro_set, c.score_batch_size)  # sharded + all-reduced
    scorer = build_scorer(c, mask_state, evaluate_loss, lambda: optimizer_ref.get("optimizer"), model=model,
                          train_set=train_set, targets_only=cfg.train.targets_only_head)
    budget_rounds = None if c.budget_grid_points is None else rounds_within_budget(
        c.budget_grid_points, n_train=len(train_set), n_val=len(val_set), epochs=cfg.train.epochs,
        every_k_steps=c.every_k_steps, candidates=c.candidates, micro_dev=len(micro_set),
        lookahead_steps=c.lookahead_steps if c.reward == "lookahead" else 0, rounds_at=c.rounds_at)
    max_rounds = round_cap(c.max_rounds, budget_rounds)
    hook = GRPOHook(controller, scorer, mask_state, history_path=history_path, max_rounds=max_rounds)

    class _OptimizerRef:  # hands the loop's optimizer to the scorer (it zeroes moments of pruned entries)
        def on_train_start(self, state) -> None:
            optimizer_ref["optimizer"] = state.optimizer

        def on_optimizer_step(self, state) -> None:
            optimizer_ref["optimizer"] = state.optimizer

    train_cfg = replace(cfg.train, grad_accum=c.grad_accum)
    result = train(
        model, train_set, val_set, train_cfg, hooks=[_OptimizerRef(), hook], grad_accum=c.grad_accum,
        log_path=out / "train_log.jsonl", progress=progress, timer=timer, seed=cfg.train.seed, desc="controller",
    )

    rule = c.p_star_rule
    p_star = controller.p_star(rule)
    digests = dist.agree_on_digest(_state_digest(controller, mask_state, p_star), "controller run: history and masks")
    total = time.perf_counter() - started
    summary = {
        "p_star": p_star,
        "p_star_rule": rule,
        "fidelity": c.fidelity,
        "advantage": c.advantage,
        "reward": c.reward,
        "lookahead_steps": c.lookahead_steps if c.reward == "lookahead" else None,
        # masks trained ahead, and losses reused instead of training a ratio twice in a round
        "lookaheads": scorer.lookaheads,
        "lookaheads_reused": scorer.reused,
        "train_under_mask": c.train_under_mask,
        "rounds_at": c.rounds_at,
        "variant": c.variant,
        "rounds": len(controller.history),
        # the cap on rounds (controller.max_rounds, or the rounds within controller.budget_grid_points)
        "max_rounds": max_rounds,
        "budget_rounds": budget_rounds,
        "stopped_by_round_cap": max_rounds is not None and len(controller.history) >= max_rounds,
        "final_p_c": controller.p_c,
        "mu": controller.policy.mu,
        "sigma": controller.policy.sigma,
        "best_val_loss": result.best_val_loss,
        "steps": result.steps,
        "merge_c": info.scaling,
        "seed": cfg.train.seed,
        "controller_seed": c.seed,
        "timings": timer.timings,
        "wall_clock_s": total,
        "cpu_s": time.process_time() - cpu_started,  # all threads; unaffected by other processes
        "controller_round_share": timer.timings.get("controller_rounds", 0.0) / total if total else 0.0,
    }
    if dist.world_size() > 1:
        summary.update(processes=dist.world_size(), rank_digests=digests)

    def write() -> None:
        history = read_jsonl(history_path) if history_path.exists() else []
        write_json(out / "result.json", summary)
        try:
            from grasp_lora.plots import plot_trajectory

            plot_trajectory(history, out / "trajectory.png", p_star=p_star, title=f"GRASP controller ({task} {lang})")
        except ImportError:  # matplotlib is a dependency; a broken install should not lose the run
            pass
        write_manifest(out, stage="grasp", config=cfg.to_dict(), adapters=[str(d) for d in adapter_dirs], **summary)

    dist.run_on_main(write, f"controller run: write {out}")
    return summary


def _state_digest(controller: Any, mask_state: Any, p_star: float) -> str:
    """What must agree across processes after a run: every history record, p*, the committed
    masks and the factors themselves (exact bytes; floats go through repr, which is exact)."""
    import json

    from grasp_lora import distributed as dist

    history = json.dumps([controller.history, p_star], sort_keys=True).encode()
    return dist.tensors_digest([*mask_state.masks, *mask_state.factors], extra=history)
