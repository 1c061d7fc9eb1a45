"""Grid search baseline (METHOD.md, "Final run and grid search"): one fixed-ratio merged fine-tune per
ratio, best by validation.

Each point is an independent run in `<grid_dir>/point_<ratio>/`, so points can be spread over a
scheduler (`grasp-lora search --method grid --point I`) and gathered with `collect_grid`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from grasp_lora.config import Config
from grasp_lora.io import manifest_complete, read_json, write_json
from grasp_lora.training.finetune import TrainAtRatio


def point_dir(grid_dir: str | Path, ratio: float) -> Path:
    return Path(grid_dir) / f"point_{ratio:.4f}"


def run_grid(train_at: TrainAtRatio, cfg: Config, grid_dir: str | Path, points: Sequence[int] | None = None, *,
             skip: Callable[[Path, str], bool] = lambda out, what: False) -> None:
    """Train the grid points of one seed (`cfg.train.seed`): ratio `cfg.grid.ratios[i]` for every i
    in `points` (default: all) into `point_dir(grid_dir, ratio)`. `skip(out, what)` says whether a
    point is finished already (the pipeline's resume check)."""
    ratios = cfg.grid.ratios
    for i in range(len(ratios)) if points is None else points:
        out = point_dir(grid_dir, ratios[i])
        if not skip(out, f"grid point {i} ratio {ratios[i]:.2f} (seed {cfg.train.seed})"):
            train_at(cfg, out, ratio=ratios[i], kind="grid_point")


def collect_grid(grid_dir: str | Path, ratios: list[float], select_by: str = "val_loss") -> dict[str, Any]:
    """Gather finished points and pick the best ratio (lowest validation loss, ties to the lower ratio)."""
    points = []
    missing = []
    for r in ratios:
        d = point_dir(grid_dir, r)
        if not manifest_complete(d):
            missing.append(r)
            continue
        res = read_json(d / "result.json")
        points.append({
            "ratio": r,
            "val_loss": res["best_val_loss"],
            "real_sparsity": res.get("real_sparsity"),
            "wall_clock_s": res.get("wall_clock_s"),
            "cpu_s": res.get("cpu_s"),
            "adapter": str(d / "adapter"),
        })
    if missing:
        raise FileNotFoundError(
            f"{grid_dir}: grid points not finished for ratios {missing} "
            "(run them with `grasp-lora search --method grid --point I`)"
        )
    if select_by != "val_loss":  # config validation refuses anything else; never fall back silently
        raise ValueError(f"grid.select_by={select_by!r}: only val_loss is implemented")
    best = min(points, key=lambda p: (p["val_loss"], p["ratio"]))
    summary = {
        "points": points,
        "best_ratio": best["ratio"],
        "best_adapter": best["adapter"],
        "select_by": select_by,
        "total_wall_clock_s": sum(p["wall_clock_s"] or 0.0 for p in points),
        "runs": len(points),
    }
    write_json(Path(grid_dir) / "summary.json", summary)
    try:
        from grasp_lora.plots import plot_grid

        plot_grid(points, Path(grid_dir) / "grid.png", best_ratio=best["ratio"])
    except ImportError:
        pass
    return summary


def select_across_seeds(per_seed: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    """The grid's one ratio for an experiment (METHOD.md, "Final run and grid search"): the lowest
    validation loss averaged over the seeds (ties to the lower ratio). Every seed must have run
    every ratio, so that each mean is over the same seeds. `per_seed` maps a seed to its `collect_grid` summary."""
    import statistics

    if not per_seed:
        raise ValueError("select_across_seeds: no seed has a grid")
    losses: dict[float, list[float]] = {}
    for seed, summary in per_seed.items():
        for point in summary["points"]:
            losses.setdefault(point["ratio"], []).append(float(point["val_loss"]))
    n = len(per_seed)
    incomplete = sorted(r for r, v in losses.items() if len(v) != n)
    if incomplete:
        raise ValueError(f"grid ratios {incomplete} are missing for some of the seeds {sorted(per_seed)}: "
                         "run every ratio for every seed before selecting")
    per_ratio = [{
        "ratio": r,
        "mean_val_loss": statistics.fmean(v),
        "std_val_loss": statistics.stdev(v) if len(v) > 1 else None,
        "val_losses": v,
    } for r, v in sorted(losses.items())]
    best = min(per_ratio, key=lambda p: (p["mean_val_loss"], p["ratio"]))
    return {
        "selected_ratio": best["ratio"],
        "select_by": "mean val_loss over seeds",
        "seeds": list(per_seed),
        "per_ratio": per_ratio,
        "per_seed": {str(seed): {"best_ratio": s["best_ratio"],
                                 "best_val_loss": min(p["val_loss"] for p in s["points"]),
                                 "points": s["points"]} for seed, s in per_seed.items()},
        "runs": sum(s["runs"] for s in per_seed.values()),
        "total_wall_clock_s": sum(s["total_wall_clock_s"] for s in per_seed.values()),
    }
