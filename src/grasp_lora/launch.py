"""Several processes from one command: `grasp-lora <cmd> ... --num-processes N` runs the same
command again through accelerate's launcher, on N processes of this machine."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Optional

from grasp_lora import distributed as dist


def strip_num_processes(argv: list[str]) -> list[str]:
    """argv without `--num-processes N` / `--num-processes=N` (the relaunched command's own)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--num-processes":
            skip = True
        elif not a.startswith("--num-processes="):
            out.append(a)
    return out


def launcher_command(argv: list[str], num_processes: int, port: Optional[int] = None) -> list[str]:
    """`accelerate launch` of `python -m grasp_lora <argv>` on N processes of this machine.
    `--multi_gpu` is accelerate's torchrun path; without CUDA the ranks pick gloo on the CPU
    (accelerate's own `--cpu` launcher starts a single process unless MPI is set up)."""
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "1",
        "--main_process_port", str(port if port is not None else dist.free_port()),
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "grasp_lora", *strip_num_processes(argv),
    ]


def relaunch(argv: list[str], num_processes: int) -> int:
    """Run `argv` on `num_processes` processes; returns the launcher's exit status."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # N processes on one machine: no thread oversubscription
    return subprocess.call(launcher_command(argv, num_processes), env=env)
