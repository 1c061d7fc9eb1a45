"""The stages that build the experiment's models, as functions of a `StageContext` and their inputs.

    prepare -> adapters -> baselines -> grasp -> final -> grid      (evaluation: grasp_lora.systems)

A stage writes each unit of work into its own folder of the run (grasp_lora.run_layout) and
returns where; a unit whose manifest is complete is skipped (`StageContext.skip`). What one stage
hands the next is on disk (adapters, p* in the controller's result.json), which is what lets a
killed run resume. The fixed-ratio runs (adaptive merge, final runs, grid points, Optuna trials)
all go through one "train at ratio" callable, `StageContext.merged_run` by default.

Several processes: every process calls every stage in the same order; see grasp_lora.pipeline.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from grasp_lora import distributed as dist
from grasp_lora import fingerprint as fp
from grasp_lora.base_model import BaseModel
from grasp_lora.config import Config, controller_config, seed_config
from grasp_lora.io import manifest_complete, read_json, set_manifest_extra, write_json, write_manifest
from grasp_lora.run_layout import RunLayout
from grasp_lora.run_lock import UnitBusyError, UnitLock
from grasp_lora.run_plan import units
from grasp_lora.training.finetune import TrainAtRatio, merged_finetune

logger = logging.getLogger(__name__)


class StageError(ValueError):
    pass


class StageContext:
    """What every stage reads: the recipe, the run folder, the base model (`base`, loaded once per
    process and shareable between runs), whether to show progress bars, and where messages go."""

    def __init__(self, cfg: Config, root: str | Path | None = None, progress: bool = True,
                 log: Callable[[str], None] | None = None, base: BaseModel | None = None):
        self.cfg = cfg
        self.layout = RunLayout.of(cfg, root)
        self.progress = progress
        self._log = log if log is not None else logger.info  # the CLI sets level and handler
        self.base = base if base is not None else BaseModel(cfg.model)
        self._unit_lock: UnitLock | None = None  # the unit this process works on (rank 0)
        dist.init()  # under a launcher: join the process group before any collective

    @property
    def root(self) -> Path:
        return self.layout.root

    def log(self, message: str) -> None:
        if dist.is_main():  # one copy of each line, however many processes
            self._log(message)

    def rows(self, lang: str, split: str) -> list[dict]:
        from grasp_lora.data.prepare import load_split

        return load_split(self.layout.data_dir, lang, split)

    def skip(self, path: Path, what: str) -> bool:
        """True when the unit in `path` is complete; otherwise the unit is about to run: this
        process takes its lock (grasp_lora.run_lock; UnitBusyError when another process holds
        it), and its settings and inputs are set up to go into the manifest it ends with."""
        # Rank 0's view, broadcast: another rank could otherwise see a manifest rank 0 just wrote.
        complete, busy = dist.from_main(self._claim(path) if dist.is_main() else (False, None))
        if busy is not None:
            raise UnitBusyError(busy)
        if complete:
            self.log(f"[skip] {what}: complete ({path})")
            set_manifest_extra(None)
            return True
        self.log(f"[run]  {what}")
        plan = units(self.cfg, self.layout)
        by_dir = {u.dir.absolute(): u for u in plan}
        unit = by_dir.get(Path(path).absolute())
        set_manifest_extra(path, fp.record(unit, {u.name: u for u in plan}) if unit else None)
        return False

    def release_unit_lock(self) -> None:
        """Let go of the unit this process last worked on (finished, or failed and left for a re-run)."""
        if self._unit_lock is not None:
            self._unit_lock.release()
            self._unit_lock = None

    def _claim(self, path: Path) -> tuple[bool, str | None]:
        """Rank 0: (complete, None), or lock the unit for this process: (False, None), or
        (False, the one-line message) when another process holds it. One unit lock at a time:
        taking the next releases the last (finished, or failed and left for a re-run)."""
        if manifest_complete(path):
            return True, None
        self.release_unit_lock()
        try:
            name = Path(path).absolute().relative_to(self.root.absolute()).as_posix()
        except ValueError:
            return False, None  # a folder outside the run (finetune --out): nobody else's unit
        try:
            self._unit_lock = UnitLock(self.root, name).acquire()
        except UnitBusyError as e:
            return False, str(e)
        # The holder may have finished it between the check above and the lock.
        return manifest_complete(path), None

    def merged_run(self, cfg: Config, out: Path, *, ratio: float | None, kind: str,
                   hooks: Sequence = ()) -> dict[str, Any]:
        """Train at a ratio (`training.finetune.TrainAtRatio`): the run's source and target adapters
        merged into a fresh base model and fine-tuned on its target data, pruned at `ratio`."""
        lang = cfg.data.target_lang
        model, tok = self.base.fresh()
        return merged_finetune(
            cfg, model, tok, self.layout.source_target_adapters, self.rows(lang, "train"), self.rows(lang, "val"), out,
            ratio=ratio, kind=kind, base_model_name=cfg.model.name, progress=self.progress, hooks=hooks,
        )


def prepare(ctx: StageContext) -> Path:
    """The data splits of both languages; returns the data folder."""
    from grasp_lora.data.prepare import prepare_data

    out = ctx.layout.data_dir
    if not ctx.skip(out, "prepare data"):
        dist.run_on_main(lambda: prepare_data(ctx.cfg, out), "prepare data")
    return out


def adapters(ctx: StageContext, langs: Sequence[str] | None = None) -> list[Path]:
    """Stage-1 adapters of the source and target language, or just `langs`; returns their folders."""
    from grasp_lora.data.tasks import task_spec
    from grasp_lora.training.adapters import train_adapter

    d = ctx.cfg.data
    outs = []
    for lang in langs or (d.source_lang, d.target_lang):
        out = ctx.layout.adapter_dir(lang)
        outs.append(out)
        if ctx.skip(out, f"train {lang} adapter"):
            continue
        model, tok = ctx.base.fresh()
        train_adapter(
            model, tok, ctx.rows(lang, "train"), ctx.rows(lang, "val"), task_spec(d), lang, ctx.cfg, out,
            base_model_name=ctx.cfg.model.name, progress=ctx.progress,
        )
    return outs


def ties(ctx: StageContext, adapter_dirs: Sequence[Path]) -> Path:
    from grasp_lora.baselines.ties import ties_merge

    out = ctx.layout.baseline_dir("ties")
    if ctx.skip(out, "TIES merge"):
        return out
    started = time.perf_counter()
    model, _ = ctx.base.fresh()  # on every process: the first load is collective
    t = ctx.cfg.ties
    source, target = adapter_dirs

    def merge() -> None:  # no training: rank 0 alone
        ties_merge(model, source, target, out / "adapter", density=t.density, weights=t.weights)
        write_manifest(out, stage="ties", density=t.density, weights=t.weights, wall_clock_s=time.perf_counter() - started)

    dist.run_on_main(merge, "TIES merge")
    return out


def lorahub(ctx: StageContext, adapter_dirs: Sequence[Path]) -> Path:
    from grasp_lora.baselines.lorahub_run import run_lorahub

    out = ctx.layout.baseline_dir("lorahub")
    if ctx.skip(out, "LoRAHub"):
        return out
    model, tok = ctx.base.fresh()  # on every process: the first load is collective
    rows = ctx.rows(ctx.cfg.data.target_lang, "train")
    # A gradient-free search over a few examples: rank 0 alone, the others wait.
    dist.run_on_main(lambda: run_lorahub(ctx.cfg, model, tok, adapter_dirs, rows, out), "LoRAHub")
    return out


def adaptive_merge(ctx: StageContext, train_at: TrainAtRatio) -> Path:
    out = ctx.layout.baseline_dir("adaptive_merge")
    if not ctx.skip(out, "adaptive merge (no pruning)"):
        train_at(ctx.cfg, out, ratio=None, kind="adaptive_merge")
    return out


def baselines(ctx: StageContext, train_at: TrainAtRatio) -> dict[str, Path]:
    """The merge baselines `pipeline.baselines` asks for; returns their folders by name."""
    wanted = set(ctx.cfg.pipeline.baselines)
    pair = ctx.layout.source_target_adapters
    built = {}
    if "ties" in wanted:
        built["ties"] = ties(ctx, pair)
    if "lorahub" in wanted:
        built["lorahub"] = lorahub(ctx, pair)
    if "adaptive_merge" in wanted:
        built["adaptive_merge"] = adaptive_merge(ctx, train_at)
    return built


def controller_runs(ctx: StageContext) -> list[Path]:
    """The GRASP controller run (one, or one per seed with `pipeline.controller_per_seed`); each
    writes p* to its result.json. Returns their folders."""
    from grasp_lora.search.grasp import run_grasp_search

    lang = ctx.cfg.data.target_lang
    seeds = ctx.cfg.pipeline.seeds if ctx.cfg.pipeline.controller_per_seed else [None]
    outs = []
    for seed in seeds:
        out = ctx.layout.grasp_dir(seed)
        outs.append(out)
        what = "GRASP controller run" + ("" if seed is None else f" (seed {seed})")
        if ctx.skip(out, what):
            continue
        model, tok = ctx.base.fresh()
        res = run_grasp_search(
            controller_config(ctx.cfg, seed), model, tok, ctx.layout.source_target_adapters, ctx.rows(lang, "train"),
            ctx.rows(lang, "val"), ctx.rows(lang, "micro_dev"), out, progress=ctx.progress,
        )
        ctx.log(f"       p* = {res['p_star']:.4f} ({res['p_star_rule']}), {res['rounds']} rounds")
    return outs


def p_star(layout: RunLayout, seed: int | None = None) -> float:
    """The ratio the controller run behind seed `seed` chose."""
    path = layout.grasp_dir(seed) / "result.json"
    if not path.exists():
        raise StageError(f"{path}: missing; run the grasp stage first (grasp-lora pipeline ... --only grasp)")
    return float(read_json(path)["p_star"])


def final_runs(ctx: StageContext, train_at: TrainAtRatio) -> list[Path]:
    """Per seed, the final run at its controller's p*; returns their folders."""
    outs = []
    for seed in ctx.cfg.pipeline.seeds:
        out = ctx.layout.final_dir(seed)
        outs.append(out)
        if not ctx.skip(out, f"final run at p* (seed {seed})"):
            train_at(seed_config(ctx.cfg, seed), out, ratio=p_star(ctx.layout, seed), kind="final")
    return outs


def grid(ctx: StageContext, train_at: TrainAtRatio, point: int | None = None) -> dict[str, Any] | None:
    """Every grid ratio for every seed, then the selection over seeds (returned); with `point`,
    only that grid point of each seed (for schedulers; `collect` selects later)."""
    from grasp_lora.search.grid import collect_grid, run_grid

    cfg = ctx.cfg
    if not cfg.grid.enabled and point is None:
        ctx.log("[skip] grid search: disabled (grid.enabled=false)")
        return None
    ratios = cfg.grid.ratios
    if point is not None and not 0 <= point < len(ratios):
        raise StageError(f"--point {point}: the grid has points 0..{len(ratios) - 1} ({ratios})")
    for seed in cfg.pipeline.seeds:
        grid_dir = ctx.layout.grid_dir(seed)
        run_grid(train_at, seed_config(cfg, seed), grid_dir, None if point is None else [point], skip=ctx.skip)
        if point is None:
            summary = dist.run_on_main(lambda: collect_grid(grid_dir, ratios, cfg.grid.select_by), "collect grid")
            if summary is not None:
                ctx.log(f"       grid best ratio (seed {seed}): {summary['best_ratio']:.2f}")
    if point is not None:
        return None
    selection = collect(ctx)
    ctx.log(f"       grid selected ratio over seeds {cfg.pipeline.seeds}: {selection['selected_ratio']:.2f}")
    return selection


def collect(ctx: StageContext) -> dict[str, Any]:
    """Gather the finished grid points of every seed and select the grid's one ratio across
    seeds; rank 0 writes the per-seed summaries and `grid/summary.json`. The selection
    (`search.grid.select_across_seeds`) is returned on every process."""
    from grasp_lora.search.grid import collect_grid, select_across_seeds

    g, layout = ctx.cfg.grid, ctx.layout

    def gather() -> dict[str, Any]:
        per_seed = {seed: collect_grid(layout.grid_dir(seed), g.ratios, g.select_by) for seed in ctx.cfg.pipeline.seeds}
        selection = select_across_seeds(per_seed)
        write_json(layout.grid_summary_path, selection)
        return selection

    return dist.from_main(dist.run_on_main(gather, "collect grid"))


def optuna(ctx: StageContext, train_at: TrainAtRatio, n_trials: int = 8,
           budget_s: float | None = None, **budget: str) -> dict[int, dict[str, Any]]:
    """Optuna's TPE + Hyperband over the ratio, per seed (a baseline users would reach for; not a
    pipeline stage). `budget`: run_optuna_search's budget_clock / budget_rule. Returns each seed's
    search result."""
    from grasp_lora.search.optuna_search import run_optuna_search

    for d in ctx.layout.source_target_adapters:
        if not manifest_complete(d):
            raise StageError(f"{d}: adapter missing; run the adapters stage first (grasp-lora pipeline ... --only adapters)")
    if not ctx.rows(ctx.cfg.data.target_lang, "val"):
        raise StageError("the Optuna search selects by validation loss: the target val split is empty")
    return {seed: run_optuna_search(train_at, seed_config(ctx.cfg, seed), ctx.layout.optuna_dir(seed),
                                    n_trials=n_trials, budget_s=budget_s, log=ctx.log, **budget)
            for seed in ctx.cfg.pipeline.seeds}
