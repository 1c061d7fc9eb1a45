"""Merged-adapter fine-tunes: the final run, grid points and the adaptive-merge baseline
(METHOD.md, "Adaptive merge", "Pruning at a ratio p", "Final run and grid search").

All three are the same recipe: reload the frozen backbone and the original (unpruned) source and
target adapters, merge them with every factor trainable, and train on the target language with
the loop of stage 1. A fixed-ratio pruner hook (input-aware importance, re-zero after every
optimizer step) is attached when a ratio is given. `train_merged` builds and trains such a run
(the benchmarks call it with their options); `merged_finetune` adds the export and the manifest.

Several processes: every process trains (the loop shards the data and sums gradients), the input
norms of the pruner are summed over processes (each runs the full pass, if configured, over its
shard), so every process prunes the same entries; the processes check that they end with
identical factors, and rank 0 alone exports and writes the manifest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
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


class _HookSets:
    """Several sets of layer-input hooks removed together (the agreement pruner's two sources)."""

    def __init__(self, *hooks) -> None:
        self.hooks = hooks

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()


def attach_fixed_ratio_pruner(model, groups, ratio: float, cfg: Config, train_set: list[dict], *,
                              full_pass_batch: int | None = None, full_pass_targets_only: bool = True,
                              agreement: bool = False):
    """Build the fixed-ratio pruner with the configured source of input norms (summed over
    processes when there are several). Returns the pruner and the layer hooks to remove after
    training.

    Benchmark options (the defaults are the pipeline's): the full pass's batch size (default
    `cfg.train.eval_batch_size`) and head (`full_pass_targets_only=False`: the LM head on every
    position, as the authors' pass); `agreement`: an `AgreementPruner` that computes the masks of
    both norm sources every step and prunes with the configured one's."""
    from grasp_lora.distributed import reduce_sum_fn
    from grasp_lora.pruning.input_norms import InputNormAccumulator, LayerInputHooks, find_decoder_layers
    from grasp_lora.pruning.pruner import AgreementPruner, FixedRatioPruner, FullPassNorms, TrainForwardNorms
    from grasp_lora.training.parallel import shard
    from grasp_lora.training.loss import per_example_losses

    layers = find_decoder_layers(model)

    def new_hooks() -> LayerInputHooks:
        # mask_source: padding must not count in the norms (METHOD.md, "Pruning at a ratio p"), and
        # with it the statistic does not depend on how examples are batched (or spread over processes).
        return LayerInputHooks(layers, InputNormAccumulator(), mask_source=model)

    reduce_sum = reduce_sum_fn()
    part = shard(train_set)  # this process's part; the statistics are summed afterwards
    batch = full_pass_batch or cfg.train.eval_batch_size

    # The authors' statistic: an extra no-grad forward over the whole training set per step.
    def full_pass() -> None:
        per_example_losses(model, part, batch, targets_only=full_pass_targets_only)

    at_least_one = cfg.controller.fidelity == "authors"
    if agreement:
        tf_hooks, fp_hooks = new_hooks(), new_hooks()
        pruner = AgreementPruner(groups, ratio, TrainForwardNorms(tf_hooks, reduce_sum),
                                 FullPassNorms(fp_hooks, full_pass, reduce_sum), at_least_one,
                                 apply=cfg.prune.importance_inputs)
        return pruner, _HookSets(tf_hooks, fp_hooks)
    hooks = new_hooks()
    if cfg.prune.importance_inputs == "train_forward":
        source = TrainForwardNorms(hooks, reduce_sum)
    else:
        source = FullPassNorms(hooks, full_pass, reduce_sum)
    return FixedRatioPruner(groups, ratio, source, at_least_one=at_least_one), hooks


def setup_merged_training(cfg: Config, model, tokenizer, adapter_dirs: Sequence[str | Path], *row_sets,
                          dense: bool = False):
    """Seed, merge the source and target adapters into `model` (every factor trainable, backbone
    frozen) and encode each row set for the target language: what every merged run starts with.
    `dense`: the authors' dense-ΔW forward (benchmarks; the same function)."""
    import torch

    from grasp_lora.models.merged import factor_groups, merge_adapters
    from grasp_lora.data.encode import encode_rows
    from grasp_lora.data.tasks import task_spec

    torch.manual_seed(cfg.train.seed)
    info = merge_adapters(model, [str(d) for d in adapter_dirs], scaling=cfg.merge.scaling, dense=dense)
    encoded = [encode_rows(tokenizer, rows, task_spec(cfg.data), cfg.data.target_lang, cfg.data.max_length,
                           cfg.data.max_article_tokens)
               for rows in row_sets]
    return info, factor_groups(model), encoded


@dataclass
class MergedTraining:
    """What `train_merged` leaves: the merge, the trained factor groups, the loop's result, the
    pruner hook (None without a ratio) and the seconds of the training loop alone."""

    info: Any
    groups: list
    result: Any
    pruner: Any
    train_s: float


def train_merged(
    cfg: Config,
    model,
    tokenizer,
    adapter_dirs: Sequence[str | Path],
    train_rows: list[dict],
    val_rows: list[dict] | None,
    *,
    ratio: float | None,
    kind: str,
    log_path: str | Path | None,
    timer: Timer,
    progress: bool = True,
    hooks: Sequence = (),
    dense: bool = False,
    max_steps: int | None = None,
    full_pass_batch: int | None = None,
    full_pass_targets_only: bool = True,
    agreement: bool = False,
) -> MergedTraining:
    """The training of one merged run, in place on `model`: merge, encode, attach the fixed-ratio
    pruner when `ratio` is given, train with the stage-1 loop. `hooks` run after the pruner.

    The remaining options serve the benchmarks (defaults: the pipeline's run): `dense` (the
    authors' dense ΔW forward), `max_steps` (cap on optimizer steps), `val_rows=None` (no
    validation), the full pass's batch and head and `agreement` (see `attach_fixed_ratio_pruner`).
    """
    from grasp_lora.training.loop import train

    rows = [train_rows] if val_rows is None else [train_rows, val_rows]
    info, groups, encoded = setup_merged_training(cfg, model, tokenizer, adapter_dirs, *rows, dense=dense)
    train_set, val_set = encoded[0], (encoded[1] if val_rows is not None else None)
    loop_hooks = []
    pruner = layer_hooks = None
    if ratio is not None:
        pruner, layer_hooks = attach_fixed_ratio_pruner(
            model, groups, ratio, cfg, train_set, full_pass_batch=full_pass_batch,
            full_pass_targets_only=full_pass_targets_only, agreement=agreement)
        loop_hooks.append(pruner)
    loop_hooks.extend(hooks)
    train_cfg = cfg.train if max_steps is None else replace(cfg.train, max_steps=max_steps)
    t0 = time.perf_counter()
    try:
        result = train(
            model, train_set, val_set, train_cfg, hooks=loop_hooks, log_path=log_path,
            progress=progress, timer=timer, seed=cfg.train.seed, desc=f"{kind}",
        )
    finally:
        if layer_hooks is not None:
            layer_hooks.remove()
    return MergedTraining(info, groups, result, pruner, time.perf_counter() - t0)


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

    out = Path(out_dir)
    dist.run_on_main(lambda: out.mkdir(parents=True, exist_ok=True), f"{kind}: create {out}")
    timer = Timer()
    started, cpu_started = time.perf_counter(), time.process_time()
    run = train_merged(cfg, model, tokenizer, adapter_dirs, train_rows, val_rows, ratio=ratio, kind=kind,
                       log_path=out / "train_log.jsonl", timer=timer, progress=progress, hooks=hooks)
    info, groups, result = run.info, run.groups, run.result

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
