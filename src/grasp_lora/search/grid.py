"""Grid search baseline (SPEC 6): one fixed-ratio merged fine-tune per ratio, best by validation.

Each point is an independent run in `<grid_dir>/point_<ratio>/`, so points can be spread over a
scheduler (`grasp-lora search --method grid --point I`) and gathered with `collect_grid`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grasp_lora.io import manifest_complete, read_json, write_json


def point_dir(grid_dir: str | Path, ratio: float) -> Path:
    return Path(grid_dir) / f"point_{ratio:.4f}"


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
            "val_metric": res.get("val_metric"),
            "real_sparsity": res.get("real_sparsity"),
            "wall_clock_s": res.get("wall_clock_s"),
            "adapter": str(d / "adapter"),
        })
    if missing:
        raise FileNotFoundError(
            f"{grid_dir}: grid points not finished for ratios {missing} "
            "(run them with `grasp-lora search --method grid --point I`)"
        )
    if select_by == "val_metric" and all(p["val_metric"] is not None for p in points):
        best = max(points, key=lambda p: (p["val_metric"], -p["ratio"]))
    else:
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
