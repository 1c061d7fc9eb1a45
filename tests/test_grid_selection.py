"""Selecting the grid's one ratio across seeds (METHOD.md, "Final run and grid search"), a pure function."""

import pytest

from grasp_lora.search.grid import select_across_seeds


def summary(losses: dict[float, float]) -> dict:
    points = [{"ratio": r, "val_loss": v, "wall_clock_s": 1.0} for r, v in losses.items()]
    best = min(points, key=lambda p: (p["val_loss"], p["ratio"]))
    return {"points": points, "best_ratio": best["ratio"], "runs": len(points), "total_wall_clock_s": float(len(points))}


def test_lowest_mean_wins_even_where_no_single_seed_picks_it():
    per_seed = {
        42: summary({0.2: 1.00, 0.4: 1.05, 0.6: 1.30}),
        7: summary({0.2: 1.40, 0.4: 1.10, 0.6: 1.00}),
    }
    sel = select_across_seeds(per_seed)
    # means: 0.2 -> 1.20, 0.4 -> 1.075, 0.6 -> 1.15; neither seed's own best is 0.4
    assert sel["selected_ratio"] == 0.4
    assert [p["mean_val_loss"] for p in sel["per_ratio"]] == pytest.approx([1.20, 1.075, 1.15])
    assert sel["per_ratio"][1]["std_val_loss"] == pytest.approx(0.0353553, abs=1e-6)
    assert sel["per_seed"]["42"]["best_ratio"] == 0.2 and sel["per_seed"]["7"]["best_val_loss"] == 1.00
    assert sel["runs"] == 6 and sel["total_wall_clock_s"] == 6.0


def test_ties_go_to_the_lower_ratio_and_one_seed_has_no_std():
    sel = select_across_seeds({42: summary({0.5: 1.0, 0.3: 1.0})})
    assert sel["selected_ratio"] == 0.3 and sel["per_ratio"][0]["std_val_loss"] is None


def test_a_ratio_missing_for_a_seed_is_refused():
    with pytest.raises(ValueError, match=r"grid ratios \[0.6\] are missing"):
        select_across_seeds({42: summary({0.2: 1.0, 0.6: 1.1}), 7: summary({0.2: 1.0})})
    with pytest.raises(ValueError, match="no seed"):
        select_across_seeds({})
