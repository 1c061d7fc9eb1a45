"""One process per unit of work: a second command that would work on a unit another process is
working on stops at once with one line naming that process.

The lock is per unit, not per run folder, because independent jobs of one experiment share a
folder on purpose (docs/multi-gpu.md, "Grid points and seeds on a scheduler": grid points, the controller run
and each seed's final run as separate jobs). A second `grasp-lora pipeline` on a busy folder skips
the finished units and stops at the first unit the other process holds; with `--rerun-changed`
it also never deletes a unit another process holds.

Locks are `fcntl.flock` on `<run>/.locks/<unit>.lock`: the kernel releases them when the process
dies, however it dies, so a lock left by a killed process is simply taken by the next one; the
file's contents (pid, host, command, start time) only name the holder in the message. Why not
`filelock`: it truncates the lock file when it opens it, so the holder could not be named. On
systems without `fcntl` (Windows) there is no lock. Only rank 0 of a multi-process command locks.
Within one process the lock is re-entrant (a registry by path): a benchmark or a test that builds
several `Experiment`s on one folder, or retries a unit after an error, is not refused by itself.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_DIR = ".locks"
_HELD: dict[Path, list[int]] = {}  # lock file -> [fd, holders in this process]


class UnitBusyError(ValueError):
    """Another live process holds the unit; the message is one line naming it."""


def lock_path(root: str | Path, unit_name: str) -> Path:
    return Path(root) / LOCK_DIR / (unit_name.replace("/", "__") + ".lock")


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return (f"pid {info['pid']} on {info['host']}, since {info['since']}: {info['command']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not written its name yet"


class UnitLock:
    """An exclusive, non-blocking lock on one unit, held until `release` (or the process ends)."""

    def __init__(self, root: str | Path, unit_name: str):
        self.root = Path(root)
        self.name = unit_name
        self.path = lock_path(root, unit_name)
        self._fd: int | None = None

    def acquire(self) -> "UnitLock":
        if fcntl is None or self._fd is not None:
            return self
        key = self.path.absolute()
        if key in _HELD:  # this process holds it already
            _HELD[key][1] += 1
            self._fd = _HELD[key][0]
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UnitBusyError(
                f"{self.root}: {self.name} is in use by another grasp-lora process ({_holder(self.path)}); "
                f"wait for it to finish or stop it, or use another --run-dir") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(["grasp-lora", *sys.argv[1:]])[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        _HELD[key] = [fd, 1]
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        key = self.path.absolute()
        self._fd = None
        entry = _HELD.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _HELD[key]
            # Emptied first: a reader never names a process that no longer holds the lock.
            os.ftruncate(entry[0], 0)
            fcntl.flock(entry[0], fcntl.LOCK_UN)
            os.close(entry[0])

    @property
    def held(self) -> bool:
        return self._fd is not None


@contextmanager
def unit_lock(root: str | Path, unit_name: str) -> Iterator[UnitLock]:
    lock = UnitLock(root, unit_name).acquire()
    try:
        yield lock
    finally:
        lock.release()
