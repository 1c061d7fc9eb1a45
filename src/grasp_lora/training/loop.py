"""The one training loop: adapter training, controller runs, grid runs and the final run.

Read it top to bottom; there is no trainer underneath. Pieces (METHOD.md, "Stage 1: adapters"):
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
epochs.

Several processes (accelerate launch / torchrun; docs/multi-gpu.md). `cfg.batch_size` is per
process, so a micro-batch is batch_size x processes consecutive examples of the epoch's order (the
same order everywhere), and each process takes a contiguous share of it. A share's summed loss is
divided by the micro-batch's GLOBAL target-token count (known on every rank from the data), so the
gradients summed over processes are exactly those of one process with batch batch_size x processes:
the run is the same, within fp32 rounding, however it is spread. Gradients are summed by hand in
one all-reduce per optimizer step (no DDP wrapper: a short trailing micro-batch may leave a rank
without an example, and that rank must still take part). Validation losses are summed over
shards, so every process takes the same early-stopping decision from the same number; hooks run
on every process and see identical weights. Logging and the progress bar are rank 0's. A rank
that fails inside a step raises its error and sends a flag through that step's all-reduce, so the
others raise too instead of waiting (grasp_lora.distributed). The shares, the sums and the
sharded scoring are in grasp_lora.training.parallel.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import torch
from torch.utils.data import Sampler

from grasp_lora import distributed as dist
from grasp_lora import tracking
from grasp_lora.config import TrainConfig
from grasp_lora.io import Timer, append_jsonl
from grasp_lora.training.loss import collate, lm_loss, pad_id_of
from grasp_lora.training.parallel import (
    check_distributed_type,
    global_batches,
    local_part,
    mean_loss_across_processes,
    place,
    sync_window,
    target_token_count,
)

logger = logging.getLogger(__name__)


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
    # Where the stage's metrics go (grasp_lora.tracking; `--report-to`): a StageTracker on rank 0,
    # None elsewhere and when nothing is tracked. Hooks log their own records to it.
    tracker: Any = None
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


def micro_dev_loss_fn(model: torch.nn.Module, examples: Sequence[dict[str, Any]], batch_size: int) -> Callable[[], float]:
    """A zero-argument scorer for the controller: the current model's mean micro-dev loss
    (teacher forced, targets only), identical on every process."""
    examples = list(examples)

    def score() -> float:
        return mean_loss_across_processes(model, examples, batch_size)

    return score


def _backward(accelerator: Any, loss: torch.Tensor) -> None:
    scaler = getattr(accelerator, "scaler", None)  # fp16 mixed precision only
    (scaler.scale(loss) if scaler is not None else loss).backward()


def _optimizer_step(accelerator: Any, optimizer: torch.optim.Optimizer) -> None:
    scaler = getattr(accelerator, "scaler", None)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _call(hooks: Iterable[Any], name: str, state: LoopState) -> None:
    for hook in hooks:
        fn = getattr(hook, name, None)
        if fn is not None:
            fn(state)


def _run_window(
    model: torch.nn.Module,
    train_set: Sequence[dict[str, Any]],
    window: Sequence[Sequence[int]],
    tokens: Sequence[int],
    pad: int,
    cfg: TrainConfig,
    accelerator: Any,
) -> torch.Tensor:
    """Forward + backward of this rank's share of every micro-batch of one window.

    Each micro-batch's loss is its summed target-token cross-entropy over the micro-batch's GLOBAL
    target-token count (all ranks' shares), and the window's gradient is the mean over its
    micro-batches: summed over ranks this is exactly the one-process gradient. Returns this
    rank's share of the window's loss (a detached tensor; summed on the device, no sync per
    micro-batch)."""
    rank, world = dist.rank(), dist.world_size()
    total = torch.zeros((), dtype=torch.float32)
    for indices in window:
        mine = local_part(indices, rank, world)
        if not mine:
            continue  # a short trailing micro-batch: nothing for this rank
        n_tok = max(sum(tokens[i] for i in indices), 1)
        with accelerator.autocast():
            loss_sum, _ = lm_loss(model, collate([train_set[i] for i in mine], pad), cfg.targets_only_head)
        loss = loss_sum / n_tok / len(window)
        _backward(accelerator, loss)
        total = total.to(loss.device) + loss.detach().float()
    return total


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
    tracker: Any = None,
) -> LoopResult:
    """Train `params` (default: every parameter with requires_grad) of `model` on encoded examples.

    `grad_accum` overrides `cfg.grad_accum` (the controller run uses 1). `seed` overrides
    `cfg.seed` for the shuffle; `desc` labels the progress bar. Returns per-epoch losses, the best epoch and timings; the model
    ends holding the best epoch's trainable weights, in the train/eval mode it came in with.
    With several processes `cfg.batch_size` is per process: a micro-batch is batch_size x processes.
    `tracker` (a tracking.StageTracker) receives the losses; default: the process's active tracker
    (`--report-to`), under the stage named by `log_path`'s folder in the run.
    """
    if len(train_set) == 0:
        raise ValueError("train: empty training set")
    accum = grad_accum if grad_accum is not None else cfg.grad_accum
    seed = cfg.seed if seed is None else seed
    timer = timer if timer is not None else Timer()
    if accelerator is None:
        accelerator = dist.get_accelerator()
    check_distributed_type(accelerator)
    main = dist.is_main()

    if params is None:
        params = [p for p in model.parameters() if p.requires_grad]
    params = list(params)
    if not params:
        raise ValueError("train: no trainable parameters")

    sampler = EpochShuffle(len(train_set), seed)
    pad = pad_id_of(model)
    tokens = [target_token_count(ex) for ex in train_set]
    place(model, accelerator)
    # Every rank starts from rank 0's weights, whatever seeds the caller used (LoRA init, ...).
    dist.broadcast_tensors_(params)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # StepLR once per epoch, by hand (METHOD.md, "Stage 1: adapters").
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=cfg.lr_gamma)

    n_batches = math.ceil(len(train_set) / (cfg.batch_size * dist.world_size()))
    steps_per_epoch = math.ceil(n_batches / accum)
    planned = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        planned = min(planned, cfg.max_steps)

    if tracker is None and main and tracking.is_active():
        tracker = tracking.active().stage(tracking.stage_name(desc, log_path))
    state = LoopState(model=model, optimizer=optimizer, step=0, epoch=0, accelerator=accelerator, timer=timer,
                      tracker=tracker if main else None)
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
            batches = global_batches(list(sampler), cfg.batch_size, dist.world_size())
            epoch_step_losses: list[float] = []
            capped = False
            for w in range(0, len(batches), accum):
                error: Optional[BaseException] = None
                window_loss = torch.zeros(())
                with timer.phase("training"):
                    try:
                        window_loss = _run_window(model, train_set, batches[w : w + accum], tokens, pad, cfg, accelerator)
                    except Exception as e:  # noqa: BLE001 - re-raised on every rank by sync_window
                        error = e
                    step_loss = sync_window(params, window_loss, error, state.step + 1)
                    _optimizer_step(accelerator, optimizer)
                state.step += 1
                epoch_step_losses.append(step_loss)
                _call(hooks, "on_optimizer_step", state)
                if main and log_path is not None:
                    append_jsonl(log_path, {
                        "event": "step", "step": state.step, "epoch": epoch, "loss": step_loss, "lr": lr,
                        "time": round(time.perf_counter() - t_start, 3),
                    })
                if state.tracker is not None:
                    state.tracker.log({"train/loss": step_loss, "train/lr": lr}, state.step)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch, loss=f"{step_loss:.4f}")
                if (cfg.max_steps is not None and state.step >= cfg.max_steps) or state.stop:
                    capped = True
                    break

            val_loss: Optional[float] = None
            if has_val:
                with timer.phase("validation"), accelerator.autocast():
                    val_loss = mean_loss_across_processes(model, val_set, cfg.eval_batch_size)
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
            if state.tracker is not None:
                state.tracker.log({"val/loss": val_loss, "train/epoch_loss": record["train_loss"]}, state.step)
            if bar is not None:
                bar.write(f"{desc} epoch {epoch}: train {record['train_loss']} val {val_loss} lr {lr:.3g}")
            else:
                logger.debug("%s epoch %d: train %s val %s lr %.3g", desc, epoch, record["train_loss"], val_loss, lr)
            _call(hooks, "on_epoch_end", state)

            if val_loss is not None:
                # Every process holds the same all-reduced val_loss, so the decision agrees everywhere.
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
        if state.tracker is not None:
            state.tracker.close()

    if best_weights is not None:
        with torch.no_grad():
            for p, w in zip(params, best_weights):
                p.copy_(w)
    state.extra["best_epoch"] = best_epoch
    model.train(was_training)
    _call(hooks, "on_train_end", state)
    return LoopResult(
        epochs=epochs,
        best_epoch=best_epoch,
        best_val_loss=best_val if best_epoch is not None else None,
        steps=state.step,
        stopped_early=stopped_early,
        timings=dict(timer.timings),
    )
