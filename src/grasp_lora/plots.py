"""PNG plots for the report: the controller trajectory, the grid-search curve and the systems bars."""

from __future__ import annotations

import io as _io
from pathlib import Path
from typing import Any, Sequence

from grasp_lora.io import atomic_write_bytes


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers or CI
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> None:
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def plot_trajectory(history: Sequence[dict[str, Any]], path: str | Path, *, p_star: float | None = None,
                    title: str = "GRASP controller") -> None:
    """p_c per round, the policy mean +- sigma, and every candidate coloured by its reward."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    if history:
        steps = [h["step"] for h in history]
        mu = [h["mu"] for h in history]
        sigma = [h["sigma"] for h in history]
        ax.fill_between(steps, [m - s for m, s in zip(mu, sigma)], [m + s for m, s in zip(mu, sigma)],
                        color="tab:blue", alpha=0.15, label="policy μ ± σ")
        ax.plot(steps, mu, color="tab:blue", lw=1.2, ls="--", label="policy mean μ")
        ax.step(steps, [h["p_c"] for h in history], where="post", color="black", lw=2, label="committed ratio p_c")
        xs, ys, cs = [], [], []
        for h in history:
            for rho, r in zip(h["candidates"], h["rewards"]):
                xs.append(h["step"])
                ys.append(rho)
                cs.append(r)
        lim = max((abs(c) for c in cs), default=1.0) or 1.0
        sc = ax.scatter(xs, ys, c=cs, cmap="RdYlGn", vmin=-lim, vmax=lim, s=28, edgecolors="grey",
                        linewidths=0.5, zorder=3, label="candidates")
        fig.colorbar(sc, ax=ax, label="reward  L0 − L_i")
    if p_star is not None:
        ax.axhline(p_star, color="tab:red", lw=1, ls=":", label=f"p* = {p_star:.3f}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("prune ratio")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.85)
    ax.grid(alpha=0.3)
    _save(fig, path)
    plt.close(fig)


def plot_grid(points: Sequence[dict[str, Any]], path: str | Path, *, best_ratio: float | None = None,
              p_star: float | None = None, metric: str = "val_loss", label: str = "validation loss") -> None:
    """Validation score per grid ratio, the grid's best and (when known) GRASP's p*."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    pts = sorted(points, key=lambda p: p["ratio"])
    ax.plot([p["ratio"] for p in pts], [p[metric] for p in pts], marker="o", color="tab:blue", label="grid points")
    if best_ratio is not None:
        best = [p for p in pts if p["ratio"] == best_ratio]
        if best:
            ax.scatter([best_ratio], [best[0][metric]], s=140, facecolors="none", edgecolors="tab:green",
                       linewidths=2, zorder=3, label=f"grid best = {best_ratio:.2f}")
    if p_star is not None:
        ax.axvline(p_star, color="tab:red", ls=":", label=f"GRASP p* = {p_star:.3f}")
    ax.set_xlabel("prune ratio")
    ax.set_ylabel(label)
    ax.set_title("Grid search over the prune ratio")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)
    plt.close(fig)


def _spread(stat: dict[str, Any] | None) -> float | None:
    """A metric's standard deviation over seeds, or None when it has no spread to show (one seed)."""
    if not stat or stat.get("std") is None:
        return None
    if stat.get("n") is not None and stat["n"] < 2:
        return None
    return float(stat["std"])


def systems_figure(rows: Sequence[dict[str, Any]], metrics: Sequence[str], title: str):
    """The figure of `plot_systems`, not saved (the caller closes it): grouped bars, one group per
    metric, one bar per system (its mean over seeds).

    Error bars (± std) are drawn only for a system run over more than one seed: a system with one
    run has no spread, and a zero-length bar would suggest one. The legend sits below the axes, so
    it never covers a bar, however many systems there are."""
    plt = _figure()
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(6.5, 1.2 * len(rows) * len(metrics) / 2), 4.2))
    width = 0.8 / max(1, len(rows))
    x = np.arange(len(metrics))
    for i, row in enumerate(rows):
        stats = [row["metrics"].get(m) or {} for m in metrics]
        means = [s["mean"] if s.get("mean") is not None else float("nan") for s in stats]
        spreads = [_spread(s) for s in stats]
        kwargs: dict[str, Any] = {}
        if any(v is not None for v in spreads):
            kwargs = {"yerr": [float("nan") if v is None else v for v in spreads], "capsize": 2}
        ax.bar(x + i * width - 0.4 + width / 2, means, width, label=row["label"], **kwargs)
    ax.set_xticks(x, [m.replace("_", " ") for m in metrics])
    ax.set_ylabel("score (0-100)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    # Below the axes, clear of the tick labels: bbox_inches="tight" in _save keeps it in the PNG.
    ax.legend(fontsize=7, ncol=min(4, max(1, len(rows))), loc="upper center", bbox_to_anchor=(0.5, -0.12),
              frameon=False)
    return fig


def plot_systems(rows: Sequence[dict[str, Any]], metrics: Sequence[str], path: str | Path, title: str) -> None:
    """The systems PNG of the report (`systems_figure`)."""
    plt = _figure()
    fig = systems_figure(rows, metrics, title)
    _save(fig, path)
    plt.close(fig)
