"""The one training loop: adapter training, controller runs, grid runs and the final run.

Read it top to bottom; there is no trainer underneath. Pieces (SPEC 2):
  AdamW(lr, weight_decay) on the trainable parameters; per-device batch `cfg.batch_size`,
  gradient accumulation; StepLR(step_size=1, gamma) stepped once per epoch by hand; validation
  loss after every epoch; early stopping with patience; the best epoch's weights restored at the
  end. Pruner and controller plug in as hooks called after every optimizer step (ARCHITECTURE.md,
  "The hook protocol").

Accumulation and loss scale. The optimizer steps once per window of `grad_accum` micro-batches.
A window's loss is the mean over its micro-batches of each micro-batch's mean target-token
cross-entropy (with the paper's per-device batch of 1: the mean over examples of the per-example
loss, the same quantity validation reports). The trailing window of an epoch may be shorter (10
micro-batches, accumulation 3 -> windows of 3, 3, 3, 1): it is stepped anyway, normalised by its own
length, so every example is seen once per epoch and no step is under-scaled. Windows never span
epochs. `accelerate` decides when to sync (it knows the end of the prepared data loader); its
`backward` divides by `gradient_accumulation_steps`, which we undo for the short window.

Multi-process (accelerate launch): each process sees its shard of every batch window (accelerate
splits the data loader), gradients are averaged by DDP, validation losses are summed over
processes, and every process takes the same early-stopping decision from the same reduced
number. Logging and the progress bar happen on the main process only; hooks run on every process.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Sampler

from grasp_lora.config import TrainConfig
from grasp_lora.io import Timer, append_jsonl
from grasp_lora.training.loss import collate, lm_loss, pad_id_of, per_example_losses


@dataclass
class LoopState:
    """What a hook sees. `model` is the unwrapped model (never the DDP wrapper)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    step: int  # optimizer steps taken so far
    epoch: int  # current epoch, from 1
    accelerator: Any
    timer: Timer
    extra: dict[str, Any] = field(default_factory=dict)
    # A hook may set this to end training after the current optimizer step (validation still runs
    # for the partial epoch, and the best epoch is still restored).
    stop: bool = False


@dataclass
class LoopResult:
    epochs: list[dict[str, Any]]  # {epoch, train_loss, val_loss, lr, steps, seconds}
    best_epoch: Optional[int]  # None when there was no validation set
    best_val_loss: Optional[float]
    steps: int
    stopped_early: bool  # early stopping (patience) ended the run
    timings: dict[str, float]


class EpochShuffle(Sampler[int]):
    """A permutation drawn from a generator seeded with (seed, epoch): the same order on every
    process and in every rerun, a new order each epoch. We set `epoch` ourselves; the attribute is
    deliberately not named `set_epoch`, which accelerate would call with its own iteration count.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed
        self.epoch = 0

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def _make_accelerator(grad_accum: int) -> Any:
    from accelerate import Accelerator

    return Accelerator(gradient_accumulation_steps=grad_accum)


def _shard(examples: Sequence[Any], accelerator: Any) -> Sequence[Any]:
    if accelerator is None or accelerator.num_processes == 1:
        return examples
    return examples[accelerator.process_index :: accelerator.num_processes]


def mean_loss_across_processes(
    model: torch.nn.Module, examples: Sequence[dict[str, Any]], batch_size: int, accelerator: Any = None
) -> float:
    """Mean over all examples of the per-example loss; each process scores its shard and the sums
    are all-reduced, so every process returns the same number."""
    losses = per_example_losses(model, _shard(examples, accelerator), batch_size)
    if accelerator is None or accelerator.num_processes == 1:
        return float(losses.mean()) if len(losses) else float("nan")
    totals = torch.tensor([float(losses.sum()), float(len(losses))], device=accelerator.device, dtype=torch.float64)
    totals = accelerator.reduce(totals, reduction="sum")
    return float(totals[0] / totals[1]) if totals[1] > 0 else float("nan")


def micro_dev_loss_fn(
    model: torch.nn.Module, examples: Sequence[dict[str, Any]], batch_size: int, accelerator: Any = None
) -> Callable[[], float]:
    """A zero-argument scorer for the controller: the current model's mean micro-dev loss
    (teacher forced, targets only), identical on every process."""
    examples = list(examples)

    def score() -> float:
        return mean_loss_across_processes(model, examples, batch_size, accelerator)

    return score


def _call(hooks: Iterable[Any], name: str, state: LoopState) -> None:
    for hook in hooks:
        fn = getattr(hook, name, None)
        if fn is not None:
            fn(state)


def train(
    model: torch.nn.Module,
    train_set: Sequence[dict[str, Any]],
    val_set: Optional[Sequence[dict[str, Any]]],
    cfg: TrainConfig,
    *,
    params: Optional[Sequence[torch.nn.Parameter]] = None,
    hooks: Sequence[Any] = (),
    grad_accum: Optional[int] = None,
    log_path: Optional[str | Path] = None,
    progress: bool = True,
    accelerator: Any = None,
    timer: Optional[Timer] = None,
    seed: Optional[int] = None,
    desc: str = "train",
) -> LoopResult:
    """Train `params` (default: every parameter with requires_grad) of `model` on encoded examples.

    `grad_accum` overrides `cfg.grad_accum` (the controller run uses 1). `seed` overrides
    `cfg.seed` for the shuffle; `desc` labels the progress bar. Returns per-epoch losses, the best epoch and timings; the model
    ends holding the best epoch's trainable weights, in the train/eval mode it came in with.
    """
    if len(train_set) == 0:
        raise ValueError("train: empty training set")
    accum = grad_accum if grad_accum is not None else cfg.grad_accum
    seed = cfg.seed if seed is None else seed
    timer = timer if timer is not None else Timer()
    if accelerator is None:
        accelerator = _make_accelerator(accum)
    else:
        accelerator.gradient_accumulation_steps = accum
    accelerator.step = 0  # accelerate's micro-step counter; a reused accelerator may hold a stale one
    main = accelerator.is_main_process

    if params is None:
        params = [p for p in model.parameters() if p.requires_grad]
    params = list(params)
    if not params:
        raise ValueError("train: no trainable parameters")

    sampler = EpochShuffle(len(train_set), seed)
    pad = pad_id_of(model)
    loader = DataLoader(
        list(train_set), batch_size=cfg.batch_size, sampler=sampler, collate_fn=lambda b: collate(b, pad)
    )
    # Prepare the model first, then build the optimizer on the (now placed) parameters: the
    # order FSDP needs, and harmless otherwise. Parameters keep their identity across `.to()`.
    wrapped = accelerator.prepare(model)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    optimizer, loader = accelerator.prepare(optimizer, loader)
    # Not prepared: accelerate would step a prepared scheduler per optimizer step; SPEC 2 says per epoch.
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=cfg.lr_gamma)

    n_batches = len(loader)
    steps_per_epoch = math.ceil(n_batches / accum)
    planned = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        planned = min(planned, cfg.max_steps)

    state = LoopState(model=model, optimizer=optimizer, step=0, epoch=0, accelerator=accelerator, timer=timer)
    epochs: list[dict[str, Any]] = []
    best_val = math.inf
    best_epoch: Optional[int] = None
    best_weights: Optional[list[torch.Tensor]] = None
    bad_epochs = 0
    stopped_early = False
    has_val = val_set is not None and len(val_set) > 0
    was_training = model.training
    t_start = time.perf_counter()

    bar = None
    if progress and main:
        from tqdm.auto import tqdm

        bar = tqdm(total=planned, desc=desc, unit="step", dynamic_ncols=True)

    _call(hooks, "on_train_start", state)
    try:
        for epoch in range(1, cfg.epochs + 1):
            state.epoch = epoch
            sampler.epoch = epoch
            lr = optimizer.param_groups[0]["lr"]
            t_epoch = time.perf_counter()
            model.train()
            window_losses: list[torch.Tensor] = []
            epoch_step_losses: list[float] = []
            capped = False
            for i, batch in enumerate(loader):
                # Length of the window this micro-batch belongs to (the last one may be short).
                window_len = min(accum, n_batches - (i // accum) * accum)
                with timer.phase("training"):
                    with accelerator.accumulate(wrapped):
                        loss_sum, n_tok = lm_loss(wrapped, batch, cfg.targets_only_head)
                        loss = loss_sum / n_tok.clamp(min=1)
                        # accelerate divides by `accum`; scale so the window's gradient is the mean
                        # over its `window_len` micro-batches.
                        accelerator.backward(loss * (accum / window_len))
                        window_losses.append(loss.detach())
                        optimizer.step()  # a no-op until accelerate syncs (end of window)
                        optimizer.zero_grad(set_to_none=True)
                    synced = accelerator.sync_gradients
                if not synced:
                    continue
                state.step += 1
                step_loss = float(torch.stack(window_losses).mean())
                window_losses = []
                epoch_step_losses.append(step_loss)
                _call(hooks, "on_optimizer_step", state)
                if main and log_path is not None:
                    append_jsonl(log_path, {
                        "event": "step", "step": state.step, "epoch": epoch, "loss": step_loss, "lr": lr,
                        "time": round(time.perf_counter() - t_start, 3),
                    })
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch, loss=f"{step_loss:.4f}")
                if (cfg.max_steps is not None and state.step >= cfg.max_steps) or state.stop:
                    capped = True
                    break

            val_loss: Optional[float] = None
            if has_val:
                with timer.phase("validation"):
                    val_loss = mean_loss_across_processes(model, val_set, cfg.eval_batch_size, accelerator)
            record = {
                "epoch": epoch,
                "train_loss": sum(epoch_step_losses) / len(epoch_step_losses) if epoch_step_losses else None,
                "val_loss": val_loss,
                "lr": lr,
                "steps": state.step,
                "seconds": round(time.perf_counter() - t_epoch, 3),
            }
            epochs.append(record)
            state.extra["val_loss"] = val_loss
            state.extra["epoch_record"] = record
            if main and log_path is not None:
                append_jsonl(log_path, {"event": "epoch", **record})
            if bar is not None:
                bar.write(f"{desc} epoch {epoch}: train {record['train_loss']} val {val_loss} lr {lr:.3g}")
            _call(hooks, "on_epoch_end", state)

            if val_loss is not None:
                # Every process holds the same reduced val_loss, so the decision agrees everywhere.
                if val_loss < best_val:
                    best_val, best_epoch, bad_epochs = val_loss, epoch, 0
                    best_weights = [p.detach().clone() for p in params]
                else:
                    bad_epochs += 1
                    if bad_epochs >= cfg.patience:
                        stopped_early = True
                        break
            if capped or state.stop:
                break
            scheduler.step()
    finally:
        if bar is not None:
            bar.close()
        if hasattr(loader, "end"):
            # A run cut short (max_steps, a hook's stop) leaves accelerate's data-loader state
            # registered; clear it so a reused accelerator counts windows afresh.
            loader.end()

    if best_weights is not None:
        with torch.no_grad():
            for p, w in zip(params, best_weights):
                p.copy_(w)
    state.extra["best_epoch"] = best_epoch
    model.train(was_training)
    _call(hooks, "on_train_end", state)
    # Drop accelerate's references to this run's model/optimizer/loader so a long pipeline that
    # reuses one accelerator does not keep every backbone it has trained alive.
    accelerator.free_memory()
    return LoopResult(
        epochs=epochs,
        best_epoch=best_epoch,
        best_val_loss=best_val if best_epoch is not None else None,
        steps=state.step,
        stopped_early=stopped_early,
        timings=dict(timer.timings),
    )
