"""The whole experiment as stages over one run folder (DESIGN: pipeline + report).

    prepare -> adapters -> baselines -> grasp -> final -> grid -> evaluate -> report

The stages are functions (grasp_lora.stages, grasp_lora.systems); the folder's layout is
grasp_lora.run_layout; this module composes them and gives the CLI, tests and benchmarks one
object, `Experiment`, to drive them with.

Every unit of work (a data preparation, an adapter, a baseline, a controller run, a grid point, a
system's predictions and metrics) writes into its own folder and finishes by writing a complete
`manifest.json`; a unit whose manifest is complete is skipped. Killing the pipeline anywhere and
running the same command again therefore finishes the work without redoing finished units, and
artefacts are written atomically, so nothing is ever half a file. Generation also resumes inside a
system (predictions are appended per batch). Before any work, `Experiment.start` refuses finished
units made with other settings (grasp_lora.run_plan).

Seeds follow the paper's protocol: one controller run gives p*; the final run is trained at
that p* once per seed in pipeline.seeds; the grid runs every ratio for every seed and selects one
ratio. `pipeline.controller_per_seed: true` runs a controller per seed instead (seed_<s>/grasp/,
controller seed = s), for variance studies.

Several processes (docs/multi-gpu.md): every process runs every stage in the same order. A
skip decision is rank 0's (broadcast), so no process skips work the others do; training stages
run on every process (data parallel) and write from rank 0; stages without training (data
preparation, TIES, LoRAHub, metrics, report) run on rank 0 while the others wait; generation is
shared out. Each of these ends in a collective that fails every process if one failed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from grasp_lora import distributed as dist
from grasp_lora import fingerprint as fp
from grasp_lora import run_plan, stages
from grasp_lora import systems as compared
from grasp_lora.base_model import BaseModel
from grasp_lora.config import Config
from grasp_lora.stages import StageContext, StageError

STAGES = ["prepare", "adapters", "baselines", "grasp", "final", "grid", "evaluate", "report"]


class Experiment(StageContext):
    """One run folder and its stages; each stage method is idempotent. `base` (a BaseModel) may be
    shared with another Experiment so that the base model is loaded once."""

    def __init__(self, cfg: Config, root: str | Path | None = None, progress: bool = True,
                 log: Callable[[str], None] | None = None, base: BaseModel | None = None):
        super().__init__(cfg, root, progress, log, base)
        self._started = False

    # ---- the run folder's paths (grasp_lora.run_layout) ----------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.layout.data_dir

    def adapter_dir(self, lang: str) -> Path:
        return self.layout.adapter_dir(lang)

    @property
    def source_target_adapters(self) -> list[Path]:
        return self.layout.source_target_adapters

    def seed_dir(self, seed: int) -> Path:
        return self.layout.seed_dir(seed)

    def grasp_dir(self, seed: int | None = None) -> Path:
        return self.layout.grasp_dir(seed)

    @property
    def grid_summary_path(self) -> Path:
        return self.layout.grid_summary_path

    def system_dir(self, system: str) -> Path:
        return self.layout.system_dir(system)

    def base_model(self):
        """A fresh copy of the frozen base model and the tokenizer (BaseModel.fresh)."""
        return self.base.fresh()

    # ---- config-safe resume -------------------------------------------------------------------
    def units(self) -> list[fp.Unit]:
        """Every unit of work this configuration defines, upstream first (the resume plan)."""
        return run_plan.units(self.cfg, self.layout)

    def start(self, rerun_changed: bool = False, redo_damaged: bool = True) -> None:
        """Before any work: refuse (or, with `rerun_changed`, clear) finished units made with other
        settings, clear damaged units for redoing (unless `redo_damaged` is false: commands that
        run no stage), then write config.yaml, which from then on describes every result in the
        folder."""
        if not self._started:
            run_plan.check_and_save_config(self.cfg, self.layout, rerun_changed, self._log, redo_damaged)
            self._started = True

    # ---- stages -------------------------------------------------------------------------------
    def prepare(self) -> None:
        stages.prepare(self)

    def adapters(self, langs: list[str] | None = None) -> None:
        """Stage-1 adapters: the source and target language, or just `langs`."""
        stages.adapters(self, langs)

    def baselines(self) -> None:
        stages.baselines(self, self.merged_run)

    def grasp(self) -> None:
        stages.controller_runs(self)

    def p_star(self, seed: int | None = None) -> float:
        return stages.p_star(self.layout, seed)

    def final(self) -> None:
        stages.final_runs(self, self.merged_run)

    def grid(self, point: int | None = None) -> None:
        stages.grid(self, self.merged_run, point)

    def collect(self) -> dict[str, Any]:
        return stages.collect(self)

    def optuna(self, n_trials: int = 8, budget_s: float | None = None, **budget: str) -> dict[int, dict[str, Any]]:
        return stages.optuna(self, self.merged_run, n_trials, budget_s, **budget)

    def systems(self) -> dict[str, dict[str, Any]]:
        return compared.systems(self)

    def evaluate(self, only_systems: list[str] | None = None) -> None:
        compared.evaluate(self, compared.systems(self), only_systems)

    def bertscore_encoder(self):
        return compared.bertscore_encoder(self)

    def report(self) -> Path | None:
        """report.md etc. (rank 0 builds them); the path on rank 0, None elsewhere."""
        from grasp_lora.report import build_report

        return dist.run_on_main(lambda: build_report(self.root), "report")

    # ---- running ------------------------------------------------------------------------------
    def run(self, only: str | None = None, start: str | None = None, rerun_changed: bool = False) -> Path | None:
        for name in (only, start):
            if name is not None and name not in STAGES:
                raise StageError(f"unknown stage {name!r} (stages: {', '.join(STAGES)})")
        todo = [only] if only else STAGES[STAGES.index(start):] if start else STAGES
        self.start(rerun_changed)
        report = None
        try:
            for stage in todo:
                started = time.perf_counter()
                if stage == "grid" and not self.cfg.grid.enabled:
                    self.log("[skip] grid search: disabled (grid.enabled=false)")
                    continue
                result = getattr(self, stage)()
                if stage == "report":
                    report = result
                self.log(f"       {stage}: {time.perf_counter() - started:.1f}s")
        finally:
            self.release_unit_lock()
        return report
