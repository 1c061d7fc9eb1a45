"""`grasp-lora verify RUN`: every unit of a run folder checked against its manifest's file record
(grasp_lora.artefacts), and what `grasp-lora pipeline` would redo because of it. Read-only: it
takes no lock and may run beside a command working in the folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from grasp_lora import fingerprint as fp
from grasp_lora.artefacts import UnitCheck, check_unit, find_units
from grasp_lora.io import MANIFEST


@dataclass
class RunCheck:
    """`verify_run`'s findings: every unit's check, the units a pipeline would redo, and whether
    config.yaml loads (None when it does, else the one-line reason)."""

    root: Path
    units: list[UnitCheck]
    redo: list[str]
    config_error: str | None = None

    @property
    def damaged(self) -> list[UnitCheck]:
        return [u for u in self.units if u.state == "damaged"]

    @property
    def ok(self) -> bool:
        return not self.damaged and self.config_error is None

    def lines(self) -> list[str]:
        """What `grasp-lora verify` prints: one line per problem, then a summary line."""
        out = []
        if self.config_error:
            out.append(f"damaged: config.yaml ({self.config_error})")
        for u in self.damaged:
            out += [f"damaged: {u.name}/{p}" for p in u.problems]
        unfinished = [u.name for u in self.units if u.state == "unfinished"]
        if unfinished:
            out.append(f"unfinished (a re-run finishes them): {', '.join(unfinished)}")
        unrecorded = [u.name for u in self.units if u.state == "unrecorded"]
        if unrecorded:
            out.append(f"not checkable (made before grasp-lora recorded file digests): {', '.join(unrecorded)}")
        absent = sum(u.state == "absent" for u in self.units)
        if absent:
            out.append(f"not started yet: {absent} unit(s)")
        if self.redo:
            out.append(f"`grasp-lora pipeline` on this folder redoes: {', '.join(self.redo)}")
        checked = sum(u.files for u in self.units)
        complete = sum(u.state == "complete" for u in self.units)
        verdict = "damaged" if not self.ok else "ok"
        out.append(f"{self.root}: {verdict}: {complete} of {len(self.units)} units intact, {checked} files checked")
        return out


def verify_run(root: str | Path) -> RunCheck:
    """Check every unit of a run folder: the units its config.yaml defines (finished or not) and
    any other folder with a manifest (Optuna searches, `finetune --out` runs inside it)."""
    from grasp_lora.config import load_config
    from grasp_lora.run_layout import RunLayout
    from grasp_lora.run_plan import units as plan_units

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such run folder")
    config_path = root / "config.yaml"
    config_error, plan = None, []
    if config_path.is_file():
        try:
            cfg = load_config(config_path)
            plan = plan_units(cfg, RunLayout.of(cfg, root))
        except ValueError as e:
            config_error = str(e).strip().splitlines()[0]
    elif not any(True for _ in root.rglob(MANIFEST)):
        raise FileNotFoundError(f"{root}: not a grasp-lora run folder (no config.yaml, no manifest.json)")
    checks = {u.name: check_unit(u.name, u.dir) for u in plan}
    for name, d in find_units(root):
        if name not in checks:
            checks[name] = check_unit(name, d)
    redo = [s.unit.name for s in fp.plan_resume(plan) if s.damaged] if plan else []
    return RunCheck(root, list(checks.values()), redo, config_error)
