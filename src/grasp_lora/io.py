"""Artefact I/O: atomic writes (temp file + rename), JSONL, stage manifests.

Nothing here ever leaves half a file: a crash leaves either the old file or the new one.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import os
import platform
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")


class DamagedFileError(ValueError):
    """A file does not load (truncated, edited or corrupted); the message names it and the way out."""


DAMAGED_HINT = ("restore it, or delete it and run the command again (in a run folder, `grasp-lora verify RUN` "
                "names what is damaged and `grasp-lora pipeline` redoes it)")


def damaged(path: str | Path, what: str, error: BaseException | str) -> DamagedFileError:
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return DamagedFileError(f"{path}: damaged, not a readable {what} ({detail}); {DAMAGED_HINT}")


def read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise damaged(path, "JSON file", e) from None


def read_yaml(path: str | Path) -> Any:
    """A YAML file grasp-lora wrote (a run's config.yaml); DamagedFileError when it does not parse."""
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise damaged(path, "YAML file", e) from None


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n" for r in rows)
    atomic_write_text(path, text)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file we wrote. A torn last line (a crash mid-append) is dropped."""
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    # Only the final line of an append-only log can be torn; anything else is corrupt.
                    rest = f.read()
                    if rest.strip():
                        raise damaged(path, "JSONL file", f"line {number}: {e}") from None
    except UnicodeDecodeError as e:
        raise damaged(path, "JSONL file", e) from None
    return rows


def load_safetensors(path: str | Path) -> dict[str, Any]:
    """Every tensor of a safetensors file (CPU); a file that does not load is named (DamagedFileError)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except SafetensorError as e:
        raise damaged(path, "safetensors file", e) from None


def check_safetensors(path: str | Path) -> None:
    """Open a safetensors file's header and tensors without keeping them: DamagedFileError when it
    does not load (a truncated file, a damaged header). A flipped byte inside a tensor's data still
    loads: only the sha256 a manifest records catches that (grasp_lora.artefacts)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                f.get_slice(key)
    except SafetensorError as e:
        raise damaged(path, "safetensors file", e) from None


def append_jsonl(path: str | Path, row: dict[str, Any]) -> None:
    """Append one line and fsync it; used for logs written as work completes (resumable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def file_sha256(path: str | Path, limit: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:limit] if limit else h.hexdigest()


def environment_info() -> dict[str, Any]:
    import importlib.metadata as md

    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("torch", "transformers", "peft", "accelerate", "datasets", "grasp-lora"):
        try:
            info[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    try:
        import torch

        info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
        info["torch_threads"] = torch.get_num_threads()
    except Exception:  # pragma: no cover - torch is a hard dependency
        pass
    return info


MANIFEST = "manifest.json"


def manifest_complete(stage_dir: str | Path) -> bool:
    p = Path(stage_dir) / MANIFEST
    if not p.is_file():
        return False
    try:
        return read_json(p).get("status") == "complete"
    except (ValueError, OSError):
        return False


# The pipeline's record of the unit being run (grasp_lora.fingerprint: its settings and inputs),
# added to that unit's manifest in the same atomic write as "complete", so no crash can leave a
# finished unit without it. Only a manifest written into the unit's folder (or the hidden
# `.<name>.tmp-*` sibling a stage builds it in before renaming) gets it.
_MANIFEST_EXTRA: contextvars.ContextVar[tuple[Path, dict[str, Any]] | None] = contextvars.ContextVar(
    "manifest_extra", default=None)


def set_manifest_extra(unit_dir: str | Path | None, fields: dict[str, Any] | None = None) -> None:
    """Fields for the next manifest written into `unit_dir`; None clears them."""
    _MANIFEST_EXTRA.set(None if unit_dir is None or not fields else (Path(unit_dir).absolute(), dict(fields)))


@contextmanager
def manifest_extra(unit_dir: str | Path, **fields: Any) -> Iterator[None]:
    token = _MANIFEST_EXTRA.set((Path(unit_dir).absolute(), dict(fields)))
    try:
        yield
    finally:
        _MANIFEST_EXTRA.reset(token)


def _extra_for(stage_dir: str | Path) -> dict[str, Any]:
    pending = _MANIFEST_EXTRA.get()
    if pending is None:
        return {}
    unit_dir, fields = pending
    d = Path(stage_dir).absolute()
    if d == unit_dir or (d.parent == unit_dir.parent and d.name.startswith(f".{unit_dir.name}.tmp-")):
        return fields
    return {}


def file_records(stage_dir: str | Path) -> dict[str, dict[str, Any]]:
    """{path relative to `stage_dir`: {"size", "sha256"}} of every file a unit wrote: everything
    under its folder but its manifest and hidden entries (temp files and folders start with a dot).
    Resume and `grasp-lora verify` check a finished unit's files against this record."""
    root = Path(stage_dir)
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or rel.as_posix() == MANIFEST or any(part.startswith(".") for part in rel.parts):
            continue
        out[rel.as_posix()] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    return out


def write_manifest(stage_dir: str | Path, **fields: Any) -> dict[str, Any]:
    """Write a stage manifest with status complete; call it last, after every artefact is written.
    It records the size and sha256 of every file in the folder (`file_records`)."""
    manifest = {"status": "complete", "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **fields}
    manifest.update(_extra_for(stage_dir))
    manifest.setdefault("environment", environment_info())
    manifest["files"] = file_records(stage_dir)
    write_json(Path(stage_dir) / MANIFEST, manifest)
    return manifest


class Timer:
    """Wall-clock per named phase; `timings` feeds manifests and the runtime table."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
