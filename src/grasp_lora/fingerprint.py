"""Config-safe resume: which settings each unit of work depends on, and whether a finished unit
still matches the configuration a command is run with.

A unit (data preparation, a stage-1 adapter, a baseline, the controller run, a grid point, a
final run, one system's predictions + metrics) records in its manifest

- ``fingerprint``: the values of the config keys that can change its result (``UNIT_KEYS``) and
  their hash (every controller key holds a concrete value, `controller.variants`, so a change of
  default is a change of setting);
- ``inputs``: digests of what it read: the manifests of the units upstream of it and, for data
  preparation, the local data files.

Before a command does any work, `plan_resume` compares every finished unit with the current
configuration and inputs. A unit is *stale* when one of its keys changed, when its record is
missing, or when something upstream of it is stale, will be (re)done, or was redone since (its
manifest digest moved). Stale units are either refused (`ConfigChangedError`, one line naming
the keys and units) or, with ``--rerun-changed``, removed so that the normal resume logic redoes
them, and only them. A finished unit whose files no longer match the size and sha256 its manifest
recorded (grasp_lora.artefacts), or whose manifest does not parse, is stale as *damaged*, and so is
what reads from it and is stale for no other reason: those are redone without asking.

Keys left out on purpose, because they cannot change a unit's result: progress bars and output
paths; ``model.device`` and ``model.cache_dir`` (where the same computation runs, not what it
computes); the batch sizes of no-grad passes, ``train.eval_batch_size``,
``controller.score_batch_size`` and ``generation.batch_size`` (left-padded batches score and
generate the same as one example at a time, tests/test_loss.py and tests/test_generate.py);
``pipeline.*`` (which seeds and baselines exist adds or drops units, it changes none), except
``pipeline.seeds`` for the grid-best systems: the grid's ratio is selected by the mean over seeds.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from grasp_lora.artefacts import damaged_files, read_manifest
from grasp_lora.io import MANIFEST, DamagedFileError, file_sha256

_MODEL = ("model",)
_DATA = (
    "data.task", "data.source_lang", "data.target_lang", "data.source_data", "data.target_data",
    "data.seed", "data.source_sizes", "data.target_sizes", "data.split_by",
)
# Keys added after run folders already existed, with the value that gives what those runs did: a
# manifest that lacks the key and a config that holds this value are not a change of setting.
ADDED_KEYS: dict[str, Any] = {"data.split_by": "question", "data.max_article_tokens": None,
                              "controller.max_rounds": None, "controller.budget_grid_points": None,
                              "data.prompts": {}, "controller.sampling": "clamp", "controller.max_mu_step": 1.0,
                              "controller.rounds_at": "during"}
# How training examples are encoded (data.prompts: the configured prompt templates and limits).
_EXAMPLES = ("data.task", "data.max_length", "data.max_article_tokens", "data.prompts")
_EVAL = ("data.task", "data.target_lang", "data.max_total_generation", "data.max_article_tokens", "data.prompts",
         "generation", "eval")

# Unit kind -> the dotted config keys or whole sections its result depends on. Whole sections on
# purpose: a key added to a section later invalidates by default; `IGNORED` lists what cannot.
UNIT_KEYS: dict[str, tuple[str, ...]] = {
    "prepare": _DATA,
    "adapter": _MODEL + _EXAMPLES + ("lora", "train"),
    "ties": _MODEL + ("ties",),
    "lorahub": _MODEL + _EXAMPLES + ("data.target_lang", "lorahub", "train.seed"),
    "adaptive_merge": _MODEL + _EXAMPLES + ("train", "merge"),
    "grasp": _MODEL + _EXAMPLES + ("train", "merge", "controller"),
    # Fixed-ratio runs: controller.fidelity=authors prunes at least one entry per tensor.
    "final": _MODEL + _EXAMPLES + ("train", "merge", "prune", "controller.fidelity"),
    "grid_point": _MODEL + _EXAMPLES + ("train", "merge", "prune", "controller.fidelity"),
    "system": _MODEL + _EVAL,
    # Which grid ratio is selected depends on the grid, the rule, and the seeds it averages over.
    "grid_system": _MODEL + _EVAL + ("grid.ratios", "grid.select_by", "pipeline.seeds"),
}

# Keys that cannot change a result (module docstring), never part of a fingerprint.
IGNORED = frozenset({
    "model.device", "model.cache_dir", "train.eval_batch_size", "controller.score_batch_size",
    "generation.batch_size",
    # the preset the other controller keys started from: their values are recorded, not its name
    "controller.variant",
})
# Keys that cannot change a result while another key has a given value: left out of the fingerprint
# then, and a record that holds them is not changed by their absence (the immediate reward never
# trains ahead, whatever lookahead_steps says; runs recorded it, at 2 x every_k_steps).
UNUSED_WHEN: dict[str, tuple[str, Any]] = {"controller.lookahead_steps": ("controller.reward", "immediate")}
# ... and per kind: the controller run trains at controller.grad_accum (train.grad_accum is replaced).
IGNORED_BY_KIND: dict[str, frozenset[str]] = {"grasp": frozenset({"train.grad_accum"})}


class ConfigChangedError(ValueError):
    """Finished units were made with other settings; the message is one line with the way out."""


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1e-4}} -> {"train.lr": 1e-4}; lists and None stay values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _jsonable(v: Any) -> Any:
    # What the value reads back as from a manifest (tuples become lists, and so on).
    return json.loads(json.dumps(v, sort_keys=True, default=str))


def _hash(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def select_keys(flat: Mapping[str, Any], patterns: Iterable[str], ignored: Iterable[str] = IGNORED) -> dict[str, Any]:
    """The entries of `flat` named by `patterns` (a full dotted key or a section prefix), less `ignored`."""
    pats = tuple(patterns)
    skip = frozenset(ignored)
    out = {}
    for k, v in flat.items():
        if k not in skip and any(k == p or k.startswith(p + ".") for p in pats):
            out[k] = _jsonable(v)
    # A prefix whose section is None or absent (e.g. data.target_sizes: null) still records it.
    for p in pats:
        if not any(k == p or k.startswith(p + ".") for k in out):
            out[p] = _jsonable(flat.get(p))
    return dict(sorted(out.items()))


def config_fingerprint(cfg_dict: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """{"kind", "keys": {dotted key: value}, "hash"} of one unit kind under `cfg_dict`."""
    if kind not in UNIT_KEYS:
        raise ValueError(f"unknown unit kind {kind!r} (known: {', '.join(UNIT_KEYS)})")
    flat = flatten(cfg_dict)
    unused = {k for k, (other, value) in UNUSED_WHEN.items() if flat.get(other) == value}
    keys = select_keys(flat, UNIT_KEYS[kind], IGNORED | IGNORED_BY_KIND.get(kind, frozenset()) | unused)
    return {"kind": kind, "keys": keys, "hash": _hash(keys)}


def results_hash(cfg_dict: Mapping[str, Any]) -> str:
    """One hash of every key that can change any result: equal for two runs whose configs differ
    only in keys that cannot (progress, paths, no-grad batch sizes)."""
    flat = flatten(cfg_dict)
    keys = select_keys(flat, sorted({p for pats in UNIT_KEYS.values() for p in pats}))
    keys["pipeline.seeds"] = _jsonable(flat.get("pipeline.seeds"))
    keys["pipeline.controller_per_seed"] = _jsonable(flat.get("pipeline.controller_per_seed"))
    return _hash(keys, 12)


def file_digest(path: str | Path) -> str:
    return file_sha256(path, 16)


def manifest_digest(unit_dir: str | Path) -> str | None:
    """Digest of a finished unit's manifest (it changes whenever the unit is redone)."""
    p = Path(unit_dir) / MANIFEST
    return file_digest(p) if p.is_file() else None


@dataclass
class Unit:
    """One unit of work: its folder, its kind, the config it runs under, what it reads."""

    name: str  # the folder relative to the run folder: what messages call it
    dir: Path
    kind: str
    cfg: Mapping[str, Any]  # the config dict this unit runs under (a seed's config for seed units)
    upstream: tuple[str, ...] = ()  # names of the units whose outputs it reads
    files: tuple[Path, ...] = ()  # data files it reads directly

    def fingerprint(self) -> dict[str, Any]:
        return config_fingerprint(self.cfg, self.kind)


def current_inputs(unit: Unit, units: Mapping[str, Unit]) -> dict[str, str | None]:
    """Digests of the unit's inputs as they are now: upstream manifests and data files."""
    inputs: dict[str, str | None] = {}
    for name in unit.upstream:
        inputs[name] = manifest_digest(units[name].dir)
    for f in unit.files:
        inputs[f"file:{f}"] = file_digest(f) if Path(f).is_file() else None
    return inputs


def record(unit: Unit, units: Mapping[str, Unit]) -> dict[str, Any]:
    """The manifest fields a unit writes when it finishes (`io.manifest_extra`)."""
    return {"fingerprint": unit.fingerprint(), "inputs": current_inputs(unit, units)}


@dataclass
class Stale:
    unit: Unit
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # key -> (recorded, now)
    reasons: list[str] = field(default_factory=list)
    # Redone without asking: its own files are damaged, or it reads only from units that are. A
    # damaged file is never a result anyone wants kept, unlike one made with other settings.
    damaged: bool = False


_MISSING = "<absent>"


def _diff(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    out = {}
    for k in sorted(set(recorded) | set(now)):
        a, b = recorded.get(k, _MISSING), now.get(k, _MISSING)
        if a == _MISSING and k in ADDED_KEYS and b == ADDED_KEYS[k]:
            continue
        if b == _MISSING and k in UNUSED_WHEN and now.get(UNUSED_WHEN[k][0]) == UNUSED_WHEN[k][1]:
            continue
        if a != b:
            out[k] = (a, b)
    return out


def plan_resume(units: Sequence[Unit]) -> list[Stale]:
    """The finished units that no longer match, in the order given (upstream before downstream).

    Units must be listed upstream first. A unit that is not finished is not stale, but it makes
    every finished unit downstream of it stale (they read what it will produce). A finished unit
    whose files no longer match its manifest's record (`artefacts.damaged_files`), or whose
    manifest does not parse, is stale with `damaged` set, and so is everything downstream of it
    that is stale for no other reason.
    """
    by_name = {u.name: u for u in units}
    will_run: dict[str, bool] = {}  # stale or not finished -> (re)made; True when only damage is why
    stale: list[Stale] = []
    for u in units:
        missing = [n for n in u.upstream if n not in by_name]
        if missing:
            raise ValueError(f"unit {u.name}: upstream {missing} not in the plan (list upstream units first)")
        try:
            manifest = read_manifest(u.dir)
        except DamagedFileError:
            s = Stale(u, reasons=[f"{MANIFEST} does not parse"], damaged=True)
            stale.append(s)
            will_run[u.name] = True
            continue
        if manifest is None or manifest.get("status") != "complete":
            will_run[u.name] = False
            continue
        s = Stale(u)
        rec = manifest.get("fingerprint")
        other = False  # a reason that is not damage
        if not isinstance(rec, Mapping) or "keys" not in rec:
            s.reasons.append("made without a settings record (an older grasp-lora)")
            other = True
        else:
            s.changed = _diff(rec["keys"], u.fingerprint()["keys"])
            other = bool(s.changed)
            recorded_inputs = manifest.get("inputs") or {}
            now_inputs = current_inputs(u, by_name)
            for n in u.upstream:
                if n in will_run:
                    s.reasons.append(f"{n} will be redone")
                    other = other or not will_run[n]
                elif recorded_inputs.get(n) != now_inputs.get(n):
                    s.reasons.append(f"{n} was redone since")
                    other = True
            for f in u.files:
                k = f"file:{f}"
                if recorded_inputs.get(k) != now_inputs.get(k):
                    s.reasons.append(f"{f} changed")
                    other = True
        s.reasons += [f"damaged: {p}" for p in damaged_files(u.dir, manifest)]
        if s.changed or s.reasons:
            s.damaged = not other
            stale.append(s)
            will_run[u.name] = s.damaged
    return stale


def _short(v: Any) -> str:
    text = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v
    return text if len(text) <= 40 else text[:37] + "..."


def stale_message(root: str | Path, stale: Sequence[Stale], max_units: int = 8) -> str:
    """One line: the changed keys (old -> new), the affected units, the two ways forward. Units
    stale only through damage (redone without asking) are left out."""
    stale = [s for s in stale if not s.damaged]
    changed: dict[str, tuple[Any, Any]] = {}
    other: list[str] = []
    for s in stale:
        for k, v in s.changed.items():
            changed.setdefault(k, v)
        if not s.changed and not s.damaged:
            other.extend(r for r in s.reasons if "will be redone" not in r and "was redone" not in r)
    parts = [f"{k} {_short(a)} -> {_short(b)}" for k, (a, b) in changed.items()]
    parts += sorted(set(other))
    names = [s.unit.name for s in stale]
    shown = ", ".join(names[:max_units]) + (f" and {len(names) - max_units} more" if len(names) > max_units else "")
    return (
        f"{root}: finished results were made with other settings ({'; '.join(parts) or 'inputs redone'}); "
        f"affected: {shown}; use a new --run-dir, or add --rerun-changed to redo these {len(names)} units "
        f"and everything downstream of them"
    )


def remove_unit(unit: Unit) -> None:
    """Delete a stale unit's folder so the resume logic redoes it from scratch (its old
    predictions, histories and logs would otherwise be resumed into the new run)."""
    d = Path(unit.dir)
    if d.is_dir():
        # The manifest goes first: a crash mid-delete leaves an unfinished unit, never a
        # "complete" one with half its files.
        (d / MANIFEST).unlink(missing_ok=True)
        shutil.rmtree(d)
