"""The whole experiment as stages over one run folder (DESIGN: pipeline + report).

    prepare -> adapters -> baselines -> grasp -> final -> grid -> evaluate -> report

Every unit of work (a data preparation, an adapter, a baseline, a controller run, a grid point, a
system's predictions and metrics) writes into its own folder and finishes by writing a complete
`manifest.json`; a unit whose manifest is complete is skipped. Killing the pipeline anywhere and
running the same command again therefore finishes the work without redoing finished units, and
artefacts are written atomically, so nothing is ever half a file. Generation also resumes inside a
system (predictions are appended per batch).

Run folder:
    config.yaml                  the resolved recipe
    data/                        splits per language + manifest
    adapters/<lang>/             stage-1 PEFT adapters
    baselines/{ties,lorahub,adaptive_merge}/adapter
    grasp/                       the ONE controller run of the experiment (seeded by controller.seed):
                                 history.jsonl, result.json (p*), trajectory.png
    seed_<s>/final/adapter       the GRASP result of seed s (final run at that p*)
    seed_<s>/grid/point_<r>/     grid points of seed s; summary.json (that seed's best), grid.png
    grid/summary.json            the grid's one selected ratio (lowest mean validation loss over seeds)
    systems/<system>/            predictions.jsonl, metrics.json
    report.md, results.json, *.png

Seeds follow the paper's protocol (SPEC 6): one controller run gives p*; the final run is trained at
that p* once per seed in pipeline.seeds; the grid runs every ratio for every seed and selects one
ratio. `pipeline.controller_per_seed: true` runs a controller per seed instead (seed_<s>/grasp/,
controller seed = s), for variance studies.

Several processes (README "Several GPUs"): every process runs every stage in the same order. A
skip decision is rank 0's (broadcast), so no process skips work the others do; training stages
run on every process (data parallel) and write from rank 0; stages without training (data
preparation, TIES, LoRAHub, metrics, report) run on rank 0 while the others wait; generation is
shared out. Each of these ends in a collective that fails every process if one failed.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any, Callable

from grasp_lora import distributed as dist
from grasp_lora import fingerprint as fp
from grasp_lora.config import Config, controller_config, save_config, seed_config
from grasp_lora.io import manifest_complete, read_json, set_manifest_extra, write_json, write_manifest

logger = logging.getLogger(__name__)

STAGES = ["prepare", "adapters", "baselines", "grasp", "final", "grid", "evaluate", "report"]


class StageError(ValueError):
    pass


class Experiment:
    """Paths and shared state of one run folder; each stage method is idempotent."""

    def __init__(self, cfg: Config, root: str | Path | None = None, progress: bool = True,
                 log: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.root = Path(root or cfg.pipeline.output_dir)
        self.progress = progress
        self._log = log if log is not None else logger.info  # the CLI sets level and handler
        self._base = None
        self._started = False
        dist.init()  # under a launcher: join the process group before any collective below
        self._tokenizer = None

    # ---- paths --------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def adapter_dir(self, lang: str) -> Path:
        return self.root / "adapters" / lang

    def baseline_dir(self, name: str) -> Path:
        return self.root / "baselines" / name

    def seed_dir(self, seed: int) -> Path:
        return self.root / f"seed_{seed}"

    def system_dir(self, system: str) -> Path:
        return self.root / "systems" / system

    def grasp_dir(self, seed: int | None = None) -> Path:
        """The controller run behind seed `seed`'s final run: the experiment's one run, or the
        seed's own with `pipeline.controller_per_seed`."""
        if self.cfg.pipeline.controller_per_seed:
            return self.seed_dir(self.cfg.pipeline.seeds[0] if seed is None else seed) / "grasp"
        return self.root / "grasp"

    @property
    def grid_summary_path(self) -> Path:
        return self.root / "grid" / "summary.json"

    @property
    def source_target_adapters(self) -> list[Path]:
        return [self.adapter_dir(self.cfg.data.source_lang), self.adapter_dir(self.cfg.data.target_lang)]

    def log(self, message: str) -> None:
        if dist.is_main():  # one copy of each line, however many processes
            self._log(message)

    # ---- shared model -------------------------------------------------------------------------
    def base_model(self):
        """A fresh copy of the frozen base model (loaded once per process) and the tokenizer.
        The first load is collective with several processes (rank 0 first: it may fill the
        model cache), so every process must call it at the same point."""
        from grasp_lora.models.loading import resolve_device, resolve_dtype, load_model

        device = resolve_device(self.cfg.model.device)
        if self._base is None:
            # The master copy stays in host memory in the target dtype; each stage gets its own copy
            # on the device, so a GPU holds one backbone (16 GB for Llama 3 8B in bf16), not two.
            with dist.main_first("load the base model"):
                self._base, self._tokenizer = load_model(
                    self.cfg.model, device="cpu", dtype=resolve_dtype(self.cfg.model.dtype, device))
        return copy.deepcopy(self._base).to(device), self._tokenizer

    def rows(self, lang: str, split: str) -> list[dict]:
        from grasp_lora.data.prepare import load_split

        return load_split(self.data_dir, lang, split)

    def _skip(self, path: Path, what: str) -> bool:
        # Rank 0's view, broadcast: another rank could otherwise see a manifest rank 0 just wrote.
        if dist.from_main(manifest_complete(path)):
            self.log(f"[skip] {what}: complete ({path})")
            set_manifest_extra(None)
            return True
        self.log(f"[run]  {what}")
        # The unit about to run records its settings and inputs in the manifest it ends with.
        units = self.units()
        by_dir = {u.dir.absolute(): u for u in units}
        unit = by_dir.get(Path(path).absolute())
        set_manifest_extra(path, fp.record(unit, {u.name: u for u in units}) if unit else None)
        return False

    # ---- config-safe resume -------------------------------------------------------------------
    def _data_files(self) -> tuple[Path, ...]:
        """The local files `prepare` reads (hub and demo sources have none)."""
        from grasp_lora.data.sources import DataSourceError, folder_files

        d = self.cfg.data
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

    def units(self) -> list[fp.Unit]:
        """Every unit of work this configuration defines, upstream first (the resume plan)."""
        from grasp_lora.search.grid import point_dir

        cfg, d = self.cfg, self.cfg.data
        full = cfg.to_dict()
        units: list[fp.Unit] = []

        def add(path: Path, kind: str, upstream: tuple[str, ...] = (), conf: dict | None = None, files=()) -> str:
            name = path.relative_to(self.root).as_posix()
            units.append(fp.Unit(name, path, kind, conf if conf is not None else full, upstream, tuple(files)))
            return name

        data = add(self.data_dir, "prepare", files=self._data_files())
        adapters = {lang: add(self.adapter_dir(lang), "adapter", (data,)) for lang in (d.source_lang, d.target_lang)}
        pair = (adapters[d.source_lang], adapters[d.target_lang])
        wanted = set(cfg.pipeline.baselines)
        baselines = {}
        if "ties" in wanted:
            baselines["ties"] = add(self.baseline_dir("ties"), "ties", pair)
        if "lorahub" in wanted:
            baselines["lorahub"] = add(self.baseline_dir("lorahub"), "lorahub", (data,) + pair)
        if "adaptive_merge" in wanted:
            baselines["adaptive_merge"] = add(self.baseline_dir("adaptive_merge"), "adaptive_merge", (data,) + pair)
        # The controller run(s): one per experiment (the paper), or one per seed.
        per_seed = cfg.pipeline.controller_per_seed
        controllers = {
            seed: add(self.grasp_dir(seed), "grasp", (data,) + pair, controller_config(cfg, seed).to_dict())
            for seed in (cfg.pipeline.seeds if per_seed else [None])
        }
        finals, grid_points = {}, []
        for seed in cfg.pipeline.seeds:
            conf = seed_config(cfg, seed).to_dict()
            grasp = controllers[seed if per_seed else None]
            finals[seed] = add(self.seed_dir(seed) / "final", "final", (data,) + pair + (grasp,), conf)
            if cfg.grid.enabled:
                grid_points += [add(point_dir(self.seed_dir(seed) / "grid", r), "grid_point", (data,) + pair, conf)
                                for r in cfg.grid.ratios]
        if "zero_shot" in wanted:
            add(self.system_dir("zero_shot"), "system", (data,))
        if "target_lora" in wanted:
            add(self.system_dir("target_lora"), "system", (data, adapters[d.target_lang]))
        for name, unit in baselines.items():
            add(self.system_dir(name), "system", (data, unit))
        for seed in cfg.pipeline.seeds:
            # The grid's ratio is selected across every seed's points, so each seed's grid-best
            # system reads all of them.
            if "grid_best" in wanted and grid_points:
                add(self.system_dir(f"grid_best_seed{seed}"), "grid_system", (data,) + tuple(grid_points))
            add(self.system_dir(f"grasp_seed{seed}"), "system", (data, finals[seed]))
        return units

    def start(self, rerun_changed: bool = False) -> None:
        """Before any work: refuse (or, with `rerun_changed`, clear) finished units made with other
        settings, then write config.yaml, which from then on describes every result in the folder."""
        if self._started:
            return
        units = self.units()

        def check() -> None:
            stale = fp.plan_resume(units)
            if stale and not rerun_changed:
                raise fp.ConfigChangedError(fp.stale_message(self.root, stale))
            for s in stale:
                why = ", ".join(list(s.changed) + s.reasons)
                self._log(f"[redo] {s.unit.name}: {why}")
                fp.remove_unit(s.unit)
            self.root.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.root / "config.yaml")

        dist.run_on_main(check, "check settings, write config.yaml")
        self._started = True

    # ---- stages -------------------------------------------------------------------------------
    def prepare(self) -> None:
        from grasp_lora.data.prepare import prepare_data

        if not self._skip(self.data_dir, "prepare data"):
            dist.run_on_main(lambda: prepare_data(self.cfg, self.data_dir), "prepare data")

    def adapters(self, langs: list[str] | None = None) -> None:
        """Stage-1 adapters: the source and target language, or just `langs`."""
        from grasp_lora.training.adapters import train_adapter

        d = self.cfg.data
        for lang in langs or (d.source_lang, d.target_lang):
            out = self.adapter_dir(lang)
            if self._skip(out, f"train {lang} adapter"):
                continue
            model, tok = self.base_model()
            train_adapter(
                model, tok, self.rows(lang, "train"), self.rows(lang, "val"), d.task, lang, self.cfg, out,
                base_model_name=self.cfg.model.name, progress=self.progress,
            )

    def baselines(self) -> None:
        wanted = set(self.cfg.pipeline.baselines)
        if "ties" in wanted:
            self.ties()
        if "lorahub" in wanted:
            self.lorahub()
        if "adaptive_merge" in wanted:
            self.adaptive_merge()

    def ties(self) -> None:
        from grasp_lora.baselines.ties import ties_merge

        out = self.baseline_dir("ties")
        if self._skip(out, "TIES merge"):
            return
        started = time.perf_counter()
        model, _ = self.base_model()  # on every process: the first load is collective
        src, tgt = self.source_target_adapters

        def merge() -> None:  # no training: rank 0 alone
            ties_merge(model, src, tgt, out / "adapter", density=self.cfg.ties.density, weights=self.cfg.ties.weights)
            write_manifest(out, stage="ties", density=self.cfg.ties.density, weights=self.cfg.ties.weights,
                           wall_clock_s=time.perf_counter() - started)

        dist.run_on_main(merge, "TIES merge")

    def lorahub(self) -> None:
        from grasp_lora.baselines.lorahub_run import run_lorahub

        out = self.baseline_dir("lorahub")
        if self._skip(out, "LoRAHub"):
            return
        model, tok = self.base_model()  # on every process: the first load is collective
        rows = self.rows(self.cfg.data.target_lang, "train")
        # A gradient-free search over a few examples: rank 0 alone, the others wait.
        dist.run_on_main(lambda: run_lorahub(self.cfg, model, tok, self.source_target_adapters, rows, out), "LoRAHub")

    def adaptive_merge(self) -> None:
        from grasp_lora.training.finetune import merged_finetune

        out = self.baseline_dir("adaptive_merge")
        if self._skip(out, "adaptive merge (no pruning)"):
            return
        self._merged_run(self.cfg, out, ratio=None, kind="adaptive_merge")

    def _merged_run(self, cfg: Config, out: Path, *, ratio: float | None, kind: str) -> dict[str, Any]:
        from grasp_lora.training.finetune import merged_finetune

        lang = cfg.data.target_lang
        model, tok = self.base_model()
        return merged_finetune(
            cfg, model, tok, self.source_target_adapters, self.rows(lang, "train"), self.rows(lang, "val"), out,
            ratio=ratio, kind=kind, base_model_name=cfg.model.name, progress=self.progress,
        )

    def grasp(self) -> None:
        from grasp_lora.search.grasp import run_grasp_search

        lang = self.cfg.data.target_lang
        seeds = self.cfg.pipeline.seeds if self.cfg.pipeline.controller_per_seed else [None]
        for seed in seeds:
            out = self.grasp_dir(seed)
            what = "GRASP controller run" + ("" if seed is None else f" (seed {seed})")
            if self._skip(out, what):
                continue
            cfg = controller_config(self.cfg, seed)
            model, tok = self.base_model()
            res = run_grasp_search(
                cfg, model, tok, self.source_target_adapters, self.rows(lang, "train"), self.rows(lang, "val"),
                self.rows(lang, "micro_dev"), out, progress=self.progress,
            )
            self.log(f"       p* = {res['p_star']:.4f} ({res['p_star_rule']}), {res['rounds']} rounds")

    def p_star(self, seed: int | None = None) -> float:
        path = self.grasp_dir(seed) / "result.json"
        if not path.exists():
            raise StageError(f"{path}: missing; run the grasp stage first (grasp-lora pipeline ... --only grasp)")
        return float(read_json(path)["p_star"])

    def final(self) -> None:
        for seed in self.cfg.pipeline.seeds:
            out = self.seed_dir(seed) / "final"
            if self._skip(out, f"final run at p* (seed {seed})"):
                continue
            self._merged_run(seed_config(self.cfg, seed), out, ratio=self.p_star(seed), kind="final")

    def grid(self, point: int | None = None) -> None:
        from grasp_lora.search.grid import collect_grid, point_dir

        if not self.cfg.grid.enabled and point is None:
            self.log("[skip] grid search: disabled (grid.enabled=false)")
            return
        ratios = self.cfg.grid.ratios
        indices = range(len(ratios)) if point is None else [point]
        if point is not None and not 0 <= point < len(ratios):
            raise StageError(f"--point {point}: the grid has points 0..{len(ratios) - 1} ({ratios})")
        for seed in self.cfg.pipeline.seeds:
            grid_dir = self.seed_dir(seed) / "grid"
            for i in indices:
                out = point_dir(grid_dir, ratios[i])
                if self._skip(out, f"grid point {i} ratio {ratios[i]:.2f} (seed {seed})"):
                    continue
                self._merged_run(seed_config(self.cfg, seed), out, ratio=ratios[i], kind="grid_point")
            if point is None:
                summary = dist.run_on_main(lambda: collect_grid(grid_dir, ratios, self.cfg.grid.select_by), "collect grid")
                if summary is not None:
                    self.log(f"       grid best ratio (seed {seed}): {summary['best_ratio']:.2f}")
        if point is None:
            selection = self.collect()
            self.log(f"       grid selected ratio over seeds {self.cfg.pipeline.seeds}: {selection['selected_ratio']:.2f}")

    def optuna(self, n_trials: int = 8, budget_s: float | None = None) -> dict[int, dict[str, Any]]:
        """Optuna's TPE + Hyperband over the ratio (a baseline users would reach for; not a pipeline stage)."""
        from grasp_lora.search.optuna_search import run_optuna_search

        results = {}
        for seed in self.cfg.pipeline.seeds:
            out = self.seed_dir(seed) / "optuna"
            results[seed] = run_optuna_search(self, seed, out, n_trials=n_trials, budget_s=budget_s)
        return results

    def collect(self) -> dict[str, Any]:
        """Gather the finished grid points of every seed and select the grid's one ratio across
        seeds (SPEC 6); rank 0 writes the per-seed summaries and `grid/summary.json`. The selection
        (`search.grid.select_across_seeds`) is returned on every process."""
        from grasp_lora.search.grid import collect_grid, select_across_seeds

        def gather() -> dict[str, Any]:
            per_seed = {seed: collect_grid(self.seed_dir(seed) / "grid", self.cfg.grid.ratios, self.cfg.grid.select_by)
                        for seed in self.cfg.pipeline.seeds}
            selection = select_across_seeds(per_seed)
            write_json(self.grid_summary_path, selection)
            return selection

        return dist.from_main(dist.run_on_main(gather, "collect grid"))

    # ---- systems: every model the report compares ---------------------------------------------
    def systems(self) -> dict[str, dict[str, Any]]:
        """name -> {adapter: path or None, ratio, seed, family}; only systems whose inputs exist."""
        from grasp_lora.search.grid import point_dir

        cfg = self.cfg
        systems: dict[str, dict[str, Any]] = {}
        wanted = set(cfg.pipeline.baselines)
        if "zero_shot" in wanted:
            systems["zero_shot"] = {"adapter": None, "family": "zero_shot"}
        if "target_lora" in wanted:
            systems["target_lora"] = {"adapter": self.adapter_dir(cfg.data.target_lang), "family": "target_lora"}
        for name in ("ties", "lorahub", "adaptive_merge"):
            if name in wanted:
                systems[name] = {"adapter": self.baseline_dir(name) / "adapter", "family": name,
                                 "manifest": self.baseline_dir(name)}
        # The grid's one ratio, selected across seeds, trained once per seed.
        selected = None
        if "grid_best" in wanted and cfg.grid.enabled and self.grid_summary_path.exists():
            selected = read_json(self.grid_summary_path)["selected_ratio"]
        for seed in cfg.pipeline.seeds:
            if selected is not None:
                systems[f"grid_best_seed{seed}"] = {
                    "adapter": point_dir(self.seed_dir(seed) / "grid", selected) / "adapter",
                    "family": "grid_best", "seed": seed, "ratio": selected,
                }
            final = self.seed_dir(seed) / "final"
            systems[f"grasp_seed{seed}"] = {"adapter": final / "adapter", "family": "grasp", "seed": seed,
                                            "ratio": self.p_star(seed) if (self.grasp_dir(seed) / "result.json").exists() else None,
                                            "manifest": final}
            optuna_result = self.seed_dir(seed) / "optuna" / "result.json"
            if optuna_result.exists():  # only after `grasp-lora search --method optuna`
                res = read_json(optuna_result)
                systems[f"optuna_best_seed{seed}"] = {"adapter": Path(res["best_adapter"]), "family": "optuna",
                                                      "seed": seed, "ratio": res["best_ratio"]}
        return systems

    def evaluate(self, only_systems: list[str] | None = None) -> None:
        from grasp_lora.evaluation.run import evaluate_system, with_adapter

        lang = self.cfg.data.target_lang
        test_rows = self.rows(lang, "test")
        if not test_rows:
            raise StageError(f"{self.data_dir / lang / 'test.jsonl'}: the test split is empty (set data.target_sizes.test)")
        encoder: list[Any] = []  # loaded once, by rank 0 (only it scores)
        for name, spec in self.systems().items():
            if only_systems and name not in only_systems:
                continue
            out = self.system_dir(name)
            if self._skip(out, f"generate + evaluate {name}"):
                continue
            if spec["adapter"] is not None and not Path(spec["adapter"]).exists():
                raise StageError(f"{spec['adapter']}: adapter of system {name} is missing; run its stage first")
            started = time.perf_counter()
            model, tok = self.base_model()
            model = with_adapter(model, spec["adapter"])
            if dist.world_size() > 1:  # every process generates its share; rank 0 appends them all
                self._generate(model, tok, test_rows, out / "predictions.jsonl")

            def score(name=name, spec=spec, out=out, model=model, tok=tok, started=started) -> None:
                # The base model is loaded by now (above), so this load is not collective.
                if not encoder and self.cfg.eval.bertscore:
                    encoder.append(self.bertscore_encoder())
                # Adapter already folded in; with several processes the predictions are all on disk.
                metrics = evaluate_system(self.cfg, model, tok, None, test_rows, out, encoder=encoder[0] if encoder else None,
                                          progress=self.progress)
                write_manifest(out, stage="evaluate", system=name, adapter=str(spec["adapter"]) if spec["adapter"] else None,
                               ratio=spec.get("ratio"), seed=spec.get("seed"), family=spec["family"], metrics=metrics,
                               wall_clock_s=time.perf_counter() - started)  # generation + scoring

            dist.run_on_main(score, f"evaluate {name}")

    def _generate(self, model, tok, rows: list[dict], out: Path) -> None:
        from grasp_lora.evaluation.generate import generate_predictions

        g = self.cfg.generation
        generate_predictions(model, tok, self.cfg.data.task, self.cfg.data.target_lang, rows, out, batch_size=g.batch_size,
                             max_new_tokens=g.max_new_tokens, max_total=self.cfg.data.max_total_generation,
                             progress=self.progress, shard=True)

    def bertscore_encoder(self):
        from grasp_lora.evaluation.run import load_bertscore_encoder

        base, tok = self.base_model()
        return load_bertscore_encoder(self.cfg, base, tok)

    def report(self) -> Path | None:
        """report.md etc. (rank 0 builds them); the path on rank 0, None elsewhere."""
        from grasp_lora.report import build_report

        return dist.run_on_main(lambda: build_report(self.root), "report")

    # ---- running ------------------------------------------------------------------------------
    def run(self, only: str | None = None, start: str | None = None, rerun_changed: bool = False) -> Path | None:
        for name in (only, start):
            if name is not None and name not in STAGES:
                raise StageError(f"unknown stage {name!r} (stages: {', '.join(STAGES)})")
        stages = [only] if only else STAGES[STAGES.index(start):] if start else STAGES
        self.start(rerun_changed)
        report = None
        for stage in stages:
            started = time.perf_counter()
            if stage == "grid" and not self.cfg.grid.enabled:
                self.log("[skip] grid search: disabled (grid.enabled=false)")
                continue
            result = getattr(self, stage)()
            if stage == "report":
                report = result
            self.log(f"       {stage}: {time.perf_counter() - started:.1f}s")
        return report
