"""Where everything of one experiment lives in its run folder: the paths, nothing else.

    config.yaml                  the resolved recipe
    data/                        splits per language + manifest
    adapters/<lang>/             stage-1 PEFT adapters
    baselines/{ties,lorahub,adaptive_merge}/adapter
    grasp/                       the ONE controller run of the experiment (seeded by controller.seed):
                                 history.jsonl, result.json (p*), trajectory.png
    seed_<s>/final/adapter       the GRASP result of seed s (final run at that p*)
    seed_<s>/grid/point_<r>/     grid points of seed s; summary.json (that seed's best), grid.png
    seed_<s>/optuna/             the Optuna search of seed s (`grasp-lora search --method optuna`)
    grid/summary.json            the grid's one selected ratio (lowest mean validation loss over seeds)
    systems/<system>/            predictions.jsonl, metrics.json
    report.md, results.json, *.png

With `pipeline.controller_per_seed` each seed has its own controller run in seed_<s>/grasp/.
Resuming reads these names back, so they never change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from grasp_lora.config import Config
from grasp_lora.search.grid import point_dir


@dataclass(frozen=True)
class RunLayout:
    root: Path
    source_lang: str
    target_lang: str
    seeds: tuple[int, ...]
    controller_per_seed: bool = False

    @classmethod
    def of(cls, cfg: Config, root: str | Path | None = None) -> RunLayout:
        """The layout of `cfg`'s run in `root` (default: the recipe's pipeline.output_dir)."""
        p, d = cfg.pipeline, cfg.data
        return cls(Path(root or p.output_dir), d.source_lang, d.target_lang, tuple(p.seeds), p.controller_per_seed)

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def adapter_dir(self, lang: str) -> Path:
        return self.root / "adapters" / lang

    @property
    def source_target_adapters(self) -> list[Path]:
        return [self.adapter_dir(self.source_lang), self.adapter_dir(self.target_lang)]

    def baseline_dir(self, name: str) -> Path:
        return self.root / "baselines" / name

    def seed_dir(self, seed: int) -> Path:
        return self.root / f"seed_{seed}"

    def grasp_dir(self, seed: int | None = None) -> Path:
        """The controller run behind seed `seed`'s final run: the experiment's one run, or the
        seed's own with `pipeline.controller_per_seed`."""
        if self.controller_per_seed:
            return self.seed_dir(self.seeds[0] if seed is None else seed) / "grasp"
        return self.root / "grasp"

    def final_dir(self, seed: int) -> Path:
        return self.seed_dir(seed) / "final"

    def grid_dir(self, seed: int) -> Path:
        return self.seed_dir(seed) / "grid"

    def grid_point_dir(self, seed: int, ratio: float) -> Path:
        return point_dir(self.grid_dir(seed), ratio)

    @property
    def grid_summary_path(self) -> Path:
        return self.root / "grid" / "summary.json"

    def optuna_dir(self, seed: int) -> Path:
        return self.seed_dir(seed) / "optuna"

    def system_dir(self, system: str) -> Path:
        return self.root / "systems" / system
