"""Data parallelism by hand: how N processes train and score as one (training.loop's module doc
explains why the loop does not use DDP). Micro-batches of batch_size x N consecutive examples of
the epoch order, a contiguous share per rank; gradients and losses summed in one all-reduce per
optimizer step, with a failure flag riding along; evaluation sets scored in shards."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from grasp_lora import distributed as dist
from grasp_lora.training.loss import IGNORE, per_example_losses


def shard(examples: Sequence[Any]) -> Sequence[Any]:
    """This process's share of an evaluation set (every n-th example)."""
    n = dist.world_size()
    return examples if n == 1 else examples[dist.rank() :: n]


def mean_loss_across_processes(model: torch.nn.Module, examples: Sequence[dict[str, Any]], batch_size: int) -> float:
    """Mean over all examples of the per-example loss; each process scores its shard and the sums
    are all-reduced, so every process returns the same number. A failure flag rides along in the
    all-reduce: a process that failed (out of memory, say) fails every process here."""
    if dist.world_size() == 1:
        losses = per_example_losses(model, examples, batch_size)
        return float(losses.mean()) if len(losses) else float("nan")
    error: Optional[BaseException] = None
    local = [0.0, 0.0]
    try:
        losses = per_example_losses(model, shard(examples), batch_size)
        local = [float(losses.double().sum()), float(len(losses))]
    except Exception as e:  # noqa: BLE001 - re-raised on every rank by check_all
        error = e
    totals = dist.all_reduce_sum(torch.tensor([*local, float(error is not None)], dtype=torch.float64))
    if totals[2] > 0:
        dist.check_all(error, "scoring losses")
    return float(totals[0] / totals[1]) if totals[1] > 0 else float("nan")


def target_token_count(example: dict[str, Any]) -> int:
    """Target tokens of an example as `lm_loss` counts them (label of position t >= 1)."""
    return sum(1 for t in example["labels"][1:] if t != IGNORE)


def global_batches(order: Sequence[int], batch_size: int, world: int) -> list[list[int]]:
    """Micro-batches of `batch_size` x `world` consecutive indices of the epoch order: the same
    micro-batches whether one process takes each whole or `world` processes share it."""
    size = batch_size * world
    return [list(order[i : i + size]) for i in range(0, len(order), size)]


def local_part(indices: Sequence[int], rank: int, world: int) -> list[int]:
    """This rank's contiguous share of one global micro-batch. Shares differ by at most one
    example; the short trailing micro-batch of an epoch may leave a rank with none."""
    q, r = divmod(len(indices), world)
    start = rank * q + min(rank, r)
    return list(indices[start : start + q + (1 if rank < r else 0)])


def place(model: torch.nn.Module, accelerator: Any) -> None:
    """Put the model on the process's device. Not `accelerator.prepare`: no DDP wrapper, because
    gradients are all-reduced by hand once per window (`sync_window`), which also copes with a
    rank that holds no example of a short micro-batch. A model dispatched over several devices
    (`hf_device_map`) stays where it is."""
    device_map = getattr(model, "hf_device_map", None)
    if device_map and len(set(device_map.values())) > 1:
        return
    model.to(accelerator.device)


def sync_window(params: Sequence[torch.nn.Parameter], window_loss: torch.Tensor, error: Optional[BaseException], step: int) -> float:
    """Sum the window's gradients and loss over processes (each process's loss is already
    divided by the GLOBAL token count, so the sum is the one-process gradient), in one
    all-reduce that also carries a failure flag. Returns the window's loss.

    A parameter that received no gradient on any process keeps `grad = None` (AdamW skips it,
    as with one process); on a process that saw no example it gets the others' gradient."""
    if dist.world_size() == 1:
        if error is not None:
            raise error
        return float(window_loss)
    device = dist.comm_device()
    present = [p.grad is not None for p in params]
    parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1).float().to(device) for p in params]
    tail = torch.tensor([float(x) for x in present] + [float(window_loss), float(error is not None)], device=device)
    flat = dist.all_reduce_sum(torch.cat(parts + [tail]))
    if flat[-1] > 0:
        dist.check_all(error, f"training step {step}")
    sizes = [p.numel() for p in params]
    grads = torch.split(flat[: sum(sizes)], sizes)
    seen = flat[sum(sizes) : sum(sizes) + len(params)]
    for p, g, s in zip(params, grads, seen):
        p.grad = g.view_as(p).to(device=p.device, dtype=p.dtype) if s > 0 else None
    return float(flat[-2])


def check_distributed_type(accelerator: Any) -> None:
    kind = str(getattr(getattr(accelerator, "distributed_type", None), "value", "")).upper()
    if kind in ("FSDP", "DEEPSPEED", "MEGATRON_LM", "XLA"):
        raise ValueError(
            f"distributed type {kind}: grasp-lora trains with data parallelism only (accelerate "
            "multi-GPU/multi-CPU); the pruner and the controller read whole LoRA factors on every rank"
        )
