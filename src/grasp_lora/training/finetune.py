"""Merged-adapter fine-tunes: the final run, grid points and the adaptive-merge baseline (SPEC 3, 4, 6).

All three are the same recipe: reload the frozen backbone and the original (unpruned) source and
target adapters, merge them with every factor trainable, and train on the target language with
the loop of stage 1. A fixed-ratio pruner hook (input-aware importance, re-zero after every
optimizer step) is attached when a ratio is given.

Several processes: every process trains (the loop shards the data and sums gradients), the input
norms of the pruner are summed over processes (each runs the full pass, if configured, over its
shard), so every process prunes the same entries; the processes check that they end with
identical factors, and rank 0 alone exports and writes the manifest.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol, Sequence

from grasp_lora.config import Config
from grasp_lora.io import Timer, write_json, write_manifest


class TrainAtRatio(Protocol):
    """Train at a ratio: one merged fine-tune of a run's adapters pruned at `ratio` (None: not
    pruned) into `out`, returning `merged_finetune`'s summary. What the searches (grid points,
    Optuna trials) and the final run are given instead of the run itself; the pipeline's is
    `stages.StageContext.merged_run`."""

    def __call__(self, cfg: Config, out: Path, *, ratio: float | None, kind: str,
                 hooks: Sequence = ()) -> dict[str, Any]: ...


def attach_fixed_ratio_pruner(model, groups, ratio: float, cfg: Config, train_set: list[dict]):
    """Build the fixed-ratio pruner with the configured source of input norms (summed over
    processes when there are several)."""
    from grasp_lora.distributed import reduce_sum_fn
    from grasp_lora.pruning.input_norms import InputNormAccumulator, LayerInputHooks, find_decoder_layers
    from grasp_lora.pruning.pruner import FixedRatioPruner, FullPassNorms, TrainForwardNorms
    from grasp_lora.training.parallel import shard
    from grasp_lora.training.loss import per_example_losses

    # mask_source: padding must not count in the norms (SPEC 4: non-padding tokens), and with it
    # the statistic does not depend on how examples are batched (or spread over processes).
    hooks = LayerInputHooks(find_decoder_layers(model), InputNormAccumulator(), mask_source=model)
    reduce_sum = reduce_sum_fn()
    if cfg.prune.importance_inputs == "train_forward":
        source = TrainForwardNorms(hooks, reduce_sum)
    else:
        part = shard(train_set)  # this process's part; the statistics are summed afterwards

        # The authors' statistic: an extra no-grad forward over the whole training set per step.
        def full_pass() -> None:
            per_example_losses(model, part, cfg.train.eval_batch_size, targets_only=True)

        source = FullPassNorms(hooks, full_pass, reduce_sum)
    at_least_one = cfg.controller.fidelity == "authors"
    return FixedRatioPruner(groups, ratio, source, at_least_one=at_least_one), hooks


def setup_merged_training(cfg: Config, model, tokenizer, adapter_dirs: Sequence[str | Path], *row_sets):
    """Seed, merge the source and target adapters into `model` (every factor trainable, backbone
    frozen) and encode each row set for the target language: what every merged run starts with."""
    import torch

    from grasp_lora.models.merged import factor_groups, merge_adapters
    from grasp_lora.data.encode import encode_rows

    torch.manual_seed(cfg.train.seed)
    info = merge_adapters(model, [str(d) for d in adapter_dirs], scaling=cfg.merge.scaling)
    encoded = [encode_rows(tokenizer, rows, cfg.data.task, cfg.data.target_lang, cfg.data.max_length)
               for rows in row_sets]
    return info, factor_groups(model), encoded


def merged_finetune(
    cfg: Config,
    model,
    tokenizer,
    adapter_dirs: Sequence[str | Path],
    train_rows: list[dict],
    val_rows: list[dict],
    out_dir: str | Path,
    *,
    ratio: float | None,
    kind: str,
    base_model_name: str,
    progress: bool = True,
    hooks: Sequence = (),
) -> dict[str, Any]:
    """Train merged adapters (optionally pruned at `ratio`) and export a PEFT adapter to out_dir/adapter.

    `hooks` are extra training-loop hooks (for example Optuna's per-epoch reporter), run after the pruner.
    """
    from grasp_lora import distributed as dist
    from grasp_lora.models.export import export_peft
    from grasp_lora.pruning.masks import sparsity
    from grasp_lora.pruning.groups import all_factors
    from grasp_lora.training.loop import train

    out = Path(out_dir)
    dist.run_on_main(lambda: out.mkdir(parents=True, exist_ok=True), f"{kind}: create {out}")
    timer = Timer()
    started, cpu_started = time.perf_counter(), time.process_time()
    info, groups, (train_set, val_set) = setup_merged_training(cfg, model, tokenizer, adapter_dirs, train_rows, val_rows)

    extra_hooks = list(hooks)
    hooks = []
    layer_hooks = None
    if ratio is not None:
        pruner, layer_hooks = attach_fixed_ratio_pruner(model, groups, ratio, cfg, train_set)
        hooks.append(pruner)
    hooks.extend(extra_hooks)
    try:
        result = train(
            model, train_set, val_set, cfg.train, hooks=hooks, log_path=out / "train_log.jsonl",
            progress=progress, timer=timer, seed=cfg.train.seed, desc=f"{kind}",
        )
    finally:
        if layer_hooks is not None:
            layer_hooks.remove()

    factors = all_factors(groups)
    real_sparsity = float(sparsity(factors))
    digests = dist.agree_on_digest(dist.tensors_digest(factors), f"{kind}: trained factors")
    summary = {
        "kind": kind,
        "ratio": ratio,
        "real_sparsity": real_sparsity,
        "best_val_loss": result.best_val_loss,
        "best_epoch": result.best_epoch,
        "epochs": result.epochs,
        "steps": result.steps,
        "merge_scaling": cfg.merge.scaling,
        "merge_c": info.scaling,
        "importance_inputs": cfg.prune.importance_inputs if ratio is not None else None,
        "seed": cfg.train.seed,
        "timings": timer.timings,
        "wall_clock_s": time.perf_counter() - started,
    }
    if dist.world_size() > 1:
        summary.update(processes=dist.world_size(), rank_digests=digests)

    def write() -> None:
        with timer.phase("export"):
            export_peft(model, out / "adapter", base_model_name)
        summary["wall_clock_s"] = time.perf_counter() - started  # export included
        # Process CPU time (all threads): a run's cost that other work on a shared machine does not inflate.
        summary["cpu_s"] = time.process_time() - cpu_started
        write_json(out / "result.json", summary)
        write_manifest(out, stage=kind, config=cfg.to_dict(), adapters=[str(d) for d in adapter_dirs], **summary)

    dist.run_on_main(write, f"{kind}: write {out}")
    return summary
