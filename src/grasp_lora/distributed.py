"""Data parallelism: one process per device, started by `accelerate launch` / `torchrun` (README,
"Several GPUs"; METHOD.md, "The GRASP controller", Several processes).

Every process runs every stage; the rules that keep them in step:
- Ranks and world size come from `torch.distributed` (accelerate's `PartialState` initialises it:
  NCCL on GPUs, gloo on CPUs). Without a launcher everything here is a no-op for one process.
- Decisions are taken from numbers every rank holds bit for bit: all-reduced sums (an all-reduce
  hands every rank the same result) or values broadcast from rank 0 (`from_main`).
- Only rank 0 writes artefacts (`run_on_main`); the others wait in the same collective, so a
  later stage never reads a half-written file.
- Failures never leave a rank waiting forever: code that may fail on one rank only (a forward that
  runs out of memory, a write on rank 0) is followed by a collective that carries a failure flag
  (`check_all`, or a flag riding along in the step's all-reduce), after which every rank raises:
  the failing rank its own error, the others `RankFailedError` naming it. Any other error is left
  to propagate and end its process (the CLI exits non-zero), and the launcher (torchrun's agent,
  under accelerate launch too) then stops the remaining ranks, as it does for a rank that dies
  outright. Deliberately there is no catch-all "exchange errors at the end of a stage": a rank that
  failed while the others wait inside a different collective would then hang them all.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence, TypeVar

if TYPE_CHECKING:  # torch is imported where needed: `grasp-lora --help` stays quick
    import torch

T = TypeVar("T")

__all__ = [
    "RankFailedError",
    "RankDivergenceError",
    "launched_world_size",
    "init",
    "shutdown",
    "world_size",
    "rank",
    "is_main",
    "get_accelerator",
    "comm_device",
    "all_reduce_sum",
    "reduce_sum_fn",
    "broadcast_tensors_",
    "from_main",
    "gather_or_fail",
    "check_all",
    "run_on_main",
    "main_first",
    "agree_on_digest",
    "tensors_digest",
    "free_port",
]


class RankFailedError(RuntimeError):
    """Another process failed; raised on every rank that did not fail itself."""


class RankDivergenceError(RuntimeError):
    """Processes that must hold the same state (masks, weights, history) do not."""


# ---- who am I -----------------------------------------------------------------------------------
def launched_world_size() -> int:
    """World size a launcher asked for (WORLD_SIZE), before any process group exists."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def _use_cpu() -> bool:
    # accelerate only picks its gloo/CPU path when asked to; a launched job on a machine without
    # CUDA (CI, a laptop) is a CPU job, so we ask for it rather than silently running N copies.
    import torch

    flag = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return flag or not torch.cuda.is_available()


def init() -> None:
    """Initialise the process group when launched with several processes (idempotent). Call it
    before loading models: it also selects this rank's GPU, so "cuda" means the right device."""
    if launched_world_size() > 1:
        from accelerate import PartialState

        PartialState(cpu=_use_cpu())


def shutdown() -> None:
    """Tear the process group down after a run every rank finished (a failed run just exits: the
    others may be inside a collective that would never complete)."""
    dist = _dist()
    if dist is not None:
        dist.destroy_process_group()


def _dist() -> Any:
    # No process group can exist before torch.distributed was imported: one process, no import.
    dist = sys.modules.get("torch.distributed")
    return dist if dist is not None and dist.is_available() and dist.is_initialized() else None


def world_size() -> int:
    dist = _dist()
    return dist.get_world_size() if dist is not None else 1


def rank() -> int:
    dist = _dist()
    return dist.get_rank() if dist is not None else 0


def is_main() -> bool:
    return rank() == 0


_ACCELERATOR: Any = None


def get_accelerator() -> Any:
    """The process's Accelerator (device, mixed precision, fp16 loss scaler), created once."""
    global _ACCELERATOR
    if _ACCELERATOR is None:
        from accelerate import Accelerator

        init()
        _ACCELERATOR = Accelerator(cpu=launched_world_size() > 1 and _use_cpu())
    return _ACCELERATOR


def comm_device() -> torch.device:
    """Where collective tensors must live: the current GPU under NCCL, else the CPU."""
    import torch

    dist = _dist()
    if dist is not None and "nccl" in str(dist.get_backend()) and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---- collectives ------------------------------------------------------------------------------
def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of `t` over processes (a new tensor, on t's device); `t` itself with one process."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return t
    buf = t.detach().to(comm_device()).clone()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(t.device)


def reduce_sum_fn() -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    """The `reduce_sum` for the pruner's norm sources: None with one process."""
    return all_reduce_sum if world_size() > 1 else None


def broadcast_tensors_(tensors: Sequence[torch.Tensor]) -> None:
    """Overwrite `tensors` in place with rank 0's values (one flat collective)."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1 or not tensors:
        return
    import torch

    with torch.no_grad():
        flat = torch.cat([t.detach().reshape(-1).to(comm_device(), torch.float32) for t in tensors])
        dist.broadcast(flat, src=0)
        for t, part in zip(tensors, torch.split(flat, [t.numel() for t in tensors])):
            t.copy_(part.view_as(t).to(t.dtype))


def from_main(value: T) -> T:
    """Rank 0's `value` on every rank (any picklable object)."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _describe(error: BaseException) -> str:
    lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def gather_or_fail(payload: T, error: Optional[BaseException], what: str) -> list[T]:
    """Collective: every rank's `payload`, in rank order, unless some rank failed (`error` set):
    then every rank raises, the failing rank its own error and the others RankFailedError naming
    the first rank that failed."""
    n = world_size()
    if n == 1:
        if error is not None:
            raise error
        return [payload]
    import torch.distributed as dist

    mine = (None, _describe(error)) if error is not None else (payload, None)
    gathered: list[Any] = [None] * n
    dist.all_gather_object(gathered, mine)
    failed = [(r, m) for r, (_, m) in enumerate(gathered) if m is not None]
    if failed:
        if error is not None:
            raise error
        r, m = failed[0]
        raise RankFailedError(f"{what}: rank {r} failed ({m}); every rank stops")
    return [p for p, _ in gathered]


def check_all(error: Optional[BaseException], what: str) -> None:
    """`gather_or_fail` without a payload: a barrier that fails every rank if any rank failed."""
    gather_or_fail(None, error, what)


def run_on_main(fn: Callable[[], T], what: str) -> Optional[T]:
    """`fn()` on rank 0 only (artefact writes); the others wait. Every rank raises if it failed.
    Returns fn's result on rank 0 and None elsewhere."""
    result: Optional[T] = None
    error: Optional[BaseException] = None
    if is_main():
        try:
            result = fn()
        except Exception as e:
            error = e
    check_all(error, what)
    return result


@contextmanager
def main_first(what: str) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. a model load that fills a cache), then the others; a
    failure anywhere in it fails every rank."""
    main = is_main()
    if not main:
        check_all(None, what)  # wait for rank 0's block (raises if it failed)
    error: Optional[BaseException] = None
    try:
        yield
    except Exception as e:
        error = e
    if main:
        check_all(error, what)  # releases the others (raises here if the block failed)
    check_all(None if main else error, what)  # did any other rank fail in its block?


# ---- consistency ------------------------------------------------------------------------------
def tensors_digest(tensors: Sequence[torch.Tensor], extra: bytes = b"") -> str:
    """sha256 (16 hex digits) of the exact bytes of `tensors` and `extra`."""
    import torch

    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(extra)
    return h.hexdigest()[:16]


def agree_on_digest(digest: str, what: str) -> list[str]:
    """Collective: every rank's digest; raises RankDivergenceError on every rank if they differ.
    Returns the digests in rank order (for the manifest)."""
    n = world_size()
    if n == 1:
        return [digest]
    import torch.distributed as dist

    digests: list[str] = [""] * n
    dist.all_gather_object(digests, digest)
    if len(set(digests)) != 1:
        raise RankDivergenceError(f"{what}: processes diverged (digests by rank: {digests})")
    return digests


def free_port() -> int:
    """A TCP port free right now on this machine (for the launcher's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
