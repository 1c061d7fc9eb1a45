"""The resume plan: every unit of work a configuration defines in its run folder, upstream first,
and the check before any work that finished units were made with the same settings (docs/resume.md;
the rules per unit kind are grasp_lora.fingerprint's)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from grasp_lora import distributed as dist
from grasp_lora import fingerprint as fp
from grasp_lora.config import Config, controller_config, save_config, seed_config
from grasp_lora.run_layout import RunLayout
from grasp_lora.run_lock import unit_lock

logger = logging.getLogger(__name__)


def data_files(cfg: Config) -> tuple[Path, ...]:
    """The local files `prepare` reads (hub and demo sources have none)."""
    from grasp_lora.data.local_files import folder_files
    from grasp_lora.data.records import DataSourceError

    d = cfg.data
    files: list[Path] = []
    for lang, source in ((d.source_lang, d.source_data), (d.target_lang, d.target_data)):
        p = Path(source).expanduser()
        if p.is_file():
            files.append(p.absolute())
        elif p.is_dir():
            try:
                files.extend(f.absolute() for f in folder_files(p, d.task, lang))
            except DataSourceError:
                pass  # prepare reports it
    return tuple(files)


def units(cfg: Config, layout: RunLayout) -> list[fp.Unit]:
    """Every unit of work `cfg` defines in `layout`'s folder, upstream first."""
    d = cfg.data
    full = cfg.to_dict()
    out: list[fp.Unit] = []

    def add(path: Path, kind: str, upstream: tuple[str, ...] = (), conf: dict | None = None, files=()) -> str:
        name = path.relative_to(layout.root).as_posix()
        out.append(fp.Unit(name, path, kind, conf if conf is not None else full, upstream, tuple(files)))
        return name

    data = add(layout.data_dir, "prepare", files=data_files(cfg))
    adapters = {lang: add(layout.adapter_dir(lang), "adapter", (data,)) for lang in (d.source_lang, d.target_lang)}
    pair = (adapters[d.source_lang], adapters[d.target_lang])
    wanted = set(cfg.pipeline.baselines)
    baselines = {}
    if "ties" in wanted:
        baselines["ties"] = add(layout.baseline_dir("ties"), "ties", pair)
    if "lorahub" in wanted:
        baselines["lorahub"] = add(layout.baseline_dir("lorahub"), "lorahub", (data,) + pair)
    if "adaptive_merge" in wanted:
        baselines["adaptive_merge"] = add(layout.baseline_dir("adaptive_merge"), "adaptive_merge", (data,) + pair)
    # The controller run(s): one per experiment (the paper), or one per seed.
    per_seed = cfg.pipeline.controller_per_seed
    controllers = {
        seed: add(layout.grasp_dir(seed), "grasp", (data,) + pair, controller_config(cfg, seed).to_dict())
        for seed in (cfg.pipeline.seeds if per_seed else [None])
    }
    finals, grid_points = {}, []
    for seed in cfg.pipeline.seeds:
        conf = seed_config(cfg, seed).to_dict()
        grasp = controllers[seed if per_seed else None]
        finals[seed] = add(layout.final_dir(seed), "final", (data,) + pair + (grasp,), conf)
        if cfg.grid.enabled:
            grid_points += [add(layout.grid_point_dir(seed, r), "grid_point", (data,) + pair, conf)
                            for r in cfg.grid.ratios]
    if "zero_shot" in wanted:
        add(layout.system_dir("zero_shot"), "system", (data,))
    if "target_lora" in wanted:
        add(layout.system_dir("target_lora"), "system", (data, adapters[d.target_lang]))
    for name, unit in baselines.items():
        add(layout.system_dir(name), "system", (data, unit))
    for seed in cfg.pipeline.seeds:
        # The grid's ratio is selected across every seed's points, so each seed's grid-best
        # system reads all of them.
        if "grid_best" in wanted and grid_points:
            add(layout.system_dir(f"grid_best_seed{seed}"), "grid_system", (data,) + tuple(grid_points))
        add(layout.system_dir(f"grasp_seed{seed}"), "system", (data, finals[seed]))
    return out


def check_and_save_config(cfg: Config, layout: RunLayout, rerun_changed: bool, log: Callable[[str], None],
                          redo_damaged: bool = True) -> None:
    """Before any work: refuse (or, with `rerun_changed`, clear) finished units made with other
    settings, clear damaged units (their files no longer match their manifests) and what depends
    on them, then write config.yaml, which from then on describes every result in the folder.
    Commands that run no stage (`generate`, `evaluate`) pass `redo_damaged=False`: damaged units
    are left as they are (a warning names them) for a stage command to redo."""
    plan = units(cfg, layout)

    def check() -> None:
        stale = fp.plan_resume(plan)
        if any(not s.damaged for s in stale) and not rerun_changed:
            raise fp.ConfigChangedError(fp.stale_message(layout.root, stale))
        if not redo_damaged:
            damaged = [s.unit.name for s in stale if s.damaged]
            if damaged:
                logger.warning("%s: %d unit(s) damaged or reading damaged ones (%s); `grasp-lora verify %s` names "
                               "the files, a stage command redoes them", layout.root, len(damaged),
                               ", ".join(damaged[:4]) + (" ..." if len(damaged) > 4 else ""), layout.root)
            stale = [s for s in stale if not s.damaged]
        for s in stale:
            # Another process may be working on the unit (a scheduler job): never delete under it.
            with unit_lock(layout.root, s.unit.name):
                why = ", ".join(list(s.changed) + s.reasons)
                log(f"[redo] {s.unit.name}: {why}")
                fp.remove_unit(s.unit)
        layout.root.mkdir(parents=True, exist_ok=True)
        save_config(cfg, layout.config_path)

    dist.run_on_main(check, "check settings, write config.yaml")
