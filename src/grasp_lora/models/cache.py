"""The model cache: folders that appear atomically under `cache_root()/models/`.

A cache folder is built in a temp folder beside it and then `os.rename`d into place, so concurrent
first loads never see half a folder; the loser of a race discards its copy. The marker file
`grasp_lora_cache.json` is written last: a folder holding it is a finished build, anything else
at a final path is set aside and rebuilt. Temp folders of crashed builds are swept after a day.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Union

from grasp_lora.io import read_json, write_json

CACHE_MARKER = "grasp_lora_cache.json"
CACHE_FORMAT = 1
STALE_TMP_SECONDS = 24 * 3600  # temp folders older than this were left by a crashed build


def cache_root(cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """cache_dir, else $GRASP_LORA_CACHE, else ~/.cache/grasp-lora."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("GRASP_LORA_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "grasp-lora"


def cache_folder(root: Path, label: str, sha256: str) -> Path:
    """Where a model is cached: keyed by its source's digest, so a changed source never reuses a folder."""
    return root / "models" / f"{label}-{sha256[:12]}"


def is_complete(folder: Path) -> bool:
    # The marker is written last, before the rename: a folder with it is a finished build.
    return (folder / CACHE_MARKER).is_file()


def _sweep_stale(parent: Path, prefix: str) -> None:
    """Remove temp/broken folders left behind by crashed builds (never a live build's folder)."""
    now = time.time()
    for p in parent.glob(f"{prefix}*"):
        try:
            if now - p.stat().st_mtime > STALE_TMP_SECONDS:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _set_aside_incomplete(final: Path) -> None:
    """A folder at the final path without the marker is not ours to trust: move it out of the way."""
    if final.exists() and not is_complete(final):
        aside = final.with_name(f".{final.name}.broken-{os.getpid()}-{time.time_ns()}")
        try:
            os.rename(final, aside)
        except OSError:
            return  # someone else moved or replaced it; the rename below sorts it out
        shutil.rmtree(aside, ignore_errors=True)


def materialise(final: Path, build: Callable[[Path, Path], dict[str, Any]], record: dict[str, Any]) -> Path:
    """Return `final`, building it first if needed: build(out, scratch) writes the model into `out`.

    `out` is renamed to `final` only when complete; `scratch` (and anything left in it, such as
    an assembled .gguf) is deleted either way. When another process wins the race, ours is dropped.
    """
    if is_complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(final.parent, f".{final.name}.")
    _set_aside_incomplete(final)
    work = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        out = work / "model"
        out.mkdir()
        info = build(out, work)
        write_json(out / CACHE_MARKER, {"format": CACHE_FORMAT, **record, **info, "created": _now()})
        for f in out.iterdir():  # temp-file writers leave 0600; a shared cache must be readable
            if f.is_file():
                f.chmod(0o644)
        try:
            os.rename(out, final)
        except OSError:
            if not is_complete(final):
                raise
            # Lost the race: the winner's folder is complete and identical in content; drop ours.
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def read_cache_record(folder: Union[str, Path]) -> Optional[dict[str, Any]]:
    """The grasp_lora_cache.json of a cache folder (None for folders we did not build)."""
    p = Path(folder) / CACHE_MARKER
    return read_json(p) if p.is_file() else None
