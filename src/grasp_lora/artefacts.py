"""Artefacts that prove themselves: a finished unit's manifest records the size and sha256 of every
file the unit wrote (`io.write_manifest`, `io.file_records`); this module checks a unit's files
against that record, and a whole run folder (`grasp-lora verify RUN`).

A mismatch means the file was truncated, edited or corrupted after the unit finished. Resume
(`fingerprint.plan_resume`) redoes such a unit, and everything downstream of it, without being
asked: unlike a changed setting, a damaged file cannot be what the user wants to keep.
`grasp_lora.verify` checks a whole run folder with these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from grasp_lora.io import MANIFEST, DamagedFileError, file_sha256, read_json


def read_manifest(unit_dir: str | Path) -> dict[str, Any] | None:
    """A unit's manifest, None when there is none; DamagedFileError when it does not parse."""
    path = Path(unit_dir) / MANIFEST
    if not path.is_file():
        return None
    manifest = read_json(path)
    if not isinstance(manifest, dict):
        raise DamagedFileError(f"{path}: damaged, a manifest is a JSON object, got {type(manifest).__name__}")
    return manifest


def damaged_files(unit_dir: str | Path, manifest: Mapping[str, Any]) -> list[str]:
    """One line per recorded file that is missing or differs from the record ("" for a manifest
    written before records existed: nothing to check against)."""
    records = manifest.get("files")
    if not isinstance(records, Mapping):
        return []
    root = Path(unit_dir)
    out = []
    for rel, rec in records.items():
        path = root / rel
        if not path.is_file():
            out.append(f"{rel} is missing")
            continue
        size = path.stat().st_size
        if size != rec.get("size"):
            out.append(f"{rel} has {size} bytes, {rec.get('size')} when written")
        elif file_sha256(path) != rec.get("sha256"):
            out.append(f"{rel} changed since it was written (sha256 differs)")
    return out


@dataclass
class UnitCheck:
    """What `check_unit` found in one unit folder."""

    name: str
    dir: Path
    # complete | damaged | unfinished (started, no complete manifest) | absent (not started) |
    # unrecorded (complete, but made before manifests recorded file digests)
    state: str
    problems: list[str] = field(default_factory=list)
    files: int = 0  # files checked


def check_unit(name: str, unit_dir: str | Path) -> UnitCheck:
    d = Path(unit_dir)
    try:
        manifest = read_manifest(d)
    except DamagedFileError:
        return UnitCheck(name, d, "damaged", [f"{MANIFEST} does not parse"])
    if manifest is None or manifest.get("status") != "complete":
        return UnitCheck(name, d, "unfinished" if d.is_dir() else "absent")
    if not isinstance(manifest.get("files"), Mapping):
        return UnitCheck(name, d, "unrecorded")
    problems = damaged_files(d, manifest)
    return UnitCheck(name, d, "damaged" if problems else "complete", problems, len(manifest["files"]))


def find_units(root: str | Path) -> list[tuple[str, Path]]:
    """Every folder of a run that has a manifest (finished or not, parsable or not), by name."""
    root = Path(root)
    found = []
    for m in sorted(root.rglob(MANIFEST)):
        rel = m.parent.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue  # a unit being built in a hidden temp folder
        found.append((rel.as_posix() or ".", m.parent))
    return found

