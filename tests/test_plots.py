"""The report's systems plot (`grasp_lora.plots`): error bars only where there is a spread over seeds,
and a legend that covers no bar. Fake results rows in the shape `report.collect_results` writes."""

from __future__ import annotations

import statistics

import pytest

from grasp_lora.plots import plot_systems, systems_figure

METRICS = ["bertscore", "exact_match", "f1"]
LABELS = ["zero-shot", "LoRA (target only)", "TIES merge", "LoRAHub", "adaptive merge",
          "adaptive merge + pruning (grid best)", "GRASP"]


def _stat(values: list[float]) -> dict:
    # as report._mean_std: std None for a single value
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values), "values": values}


def _row(label: str, values: list[float]) -> dict:
    return {"label": label, "metrics": {m: _stat([v + i for v in values]) for i, m in enumerate(METRICS)}}


def _rows(seeds_of_tuned: int) -> list[dict]:
    """Baselines run once; the grid's pick and GRASP once per seed (the paper's protocol)."""
    rows = [_row(label, [20.0 + 10 * i]) for i, label in enumerate(LABELS[:5])]
    rows += [_row(label, [85.0 + 3 * s for s in range(seeds_of_tuned)]) for label in LABELS[5:]]
    return rows


def _errorbars(ax) -> list:
    from matplotlib.container import ErrorbarContainer

    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


@pytest.fixture
def figure():
    import matplotlib.pyplot as plt

    figs = []

    def make(rows):
        fig = systems_figure(rows, METRICS, "mlqa en→ar on the test split")
        figs.append(fig)
        fig.canvas.draw()
        return fig, fig.axes[0]

    yield make
    for fig in figs:
        plt.close(fig)


def test_one_seed_draws_no_error_bars(figure):
    _, ax = figure(_rows(seeds_of_tuned=1))
    assert _errorbars(ax) == []
    assert all(getattr(c, "errorbar", None) is None for c in ax.containers)


def test_error_bars_only_for_systems_with_a_spread(figure):
    _, ax = figure(_rows(seeds_of_tuned=3))
    from matplotlib.container import BarContainer

    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    with_spread = [c.get_label() for c in bars if c.errorbar is not None]
    assert with_spread == LABELS[5:]
    assert len(_errorbars(ax)) == 2


@pytest.mark.parametrize("n_rows", [1, 7, 9])
def test_legend_covers_no_bar(figure, n_rows):
    rows = _rows(seeds_of_tuned=3)
    rows = (rows + [_row("Optuna (best trial)", [70.0, 75.0]), _row("another system", [60.0])])[:n_rows]
    fig, ax = figure(rows)
    legend = ax.get_legend()
    assert legend is not None and len(legend.get_texts()) == n_rows
    box = legend.get_window_extent()
    assert not box.overlaps(ax.get_window_extent()), "the legend lies over the axes' data area"
    for tick in ax.get_xticklabels():
        assert not box.overlaps(tick.get_window_extent()), f"the legend covers the tick label {tick.get_text()!r}"
    for bars in ax.containers:
        for patch in getattr(bars, "patches", []):
            assert not box.overlaps(patch.get_window_extent())
    # the PNG is saved with bbox_inches="tight": the legend lies inside the saved image
    saved = fig.get_tightbbox()  # inches
    legend_in = box.transformed(fig.dpi_scale_trans.inverted())
    assert saved.x0 - 1e-6 <= legend_in.x0 and legend_in.x1 <= saved.x1 + 1e-6
    assert saved.y0 - 1e-6 <= legend_in.y0 and legend_in.y1 <= saved.y1 + 1e-6


def test_plot_systems_writes_a_png(tmp_path):
    out = tmp_path / "systems.png"
    plot_systems(_rows(seeds_of_tuned=1), METRICS, out, "one seed")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
