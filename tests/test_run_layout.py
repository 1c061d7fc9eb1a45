"""The run folder's names: resuming reads them back, so they must never change."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from grasp_lora.config import Config
from grasp_lora.run_layout import RunLayout


def _rel(layout: RunLayout, path: Path) -> str:
    return path.relative_to(layout.root).as_posix()


def test_every_path_of_a_run_folder():
    cfg = Config()
    cfg = replace(cfg, pipeline=replace(cfg.pipeline, seeds=[42, 7]))
    layout = RunLayout.of(cfg, "runs/x")
    assert layout.root == Path("runs/x")
    assert RunLayout.of(cfg).root == Path(cfg.pipeline.output_dir)
    assert {
        "config": _rel(layout, layout.config_path),
        "data": _rel(layout, layout.data_dir),
        "adapters": [_rel(layout, p) for p in layout.source_target_adapters],
        "ties": _rel(layout, layout.baseline_dir("ties")),
        "grasp": _rel(layout, layout.grasp_dir()),
        "grasp_7": _rel(layout, layout.grasp_dir(7)),
        "final": _rel(layout, layout.final_dir(7)),
        "grid": _rel(layout, layout.grid_dir(7)),
        "point": _rel(layout, layout.grid_point_dir(7, 0.3)),
        "summary": _rel(layout, layout.grid_summary_path),
        "optuna": _rel(layout, layout.optuna_dir(42)),
        "system": _rel(layout, layout.system_dir("grasp_seed42")),
    } == {
        "config": "config.yaml",
        "data": "data",
        "adapters": ["adapters/en", "adapters/ar"],
        "ties": "baselines/ties",
        "grasp": "grasp",
        "grasp_7": "grasp",
        "final": "seed_7/final",
        "grid": "seed_7/grid",
        "point": "seed_7/grid/point_0.3000",
        "summary": "grid/summary.json",
        "optuna": "seed_42/optuna",
        "system": "systems/grasp_seed42",
    }


def test_per_seed_controllers_live_in_the_seed_folders():
    cfg = Config()
    cfg = replace(cfg, pipeline=replace(cfg.pipeline, seeds=[42, 7], controller_per_seed=True))
    layout = RunLayout.of(cfg, "r")
    assert _rel(layout, layout.grasp_dir(7)) == "seed_7/grasp"
    assert _rel(layout, layout.grasp_dir()) == "seed_42/grasp"  # the first seed's
