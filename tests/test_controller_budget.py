"""controller.budget_grid_points / max_rounds: how many rounds fit, and the arithmetic behind it."""

from __future__ import annotations

import pytest

from grasp_lora.controller.budget import grid_point_passes, round_cap, round_passes, rounds_within_budget


def test_a_grid_point_is_every_training_example_and_a_third_of_validation_per_epoch():
    assert grid_point_passes(n_train=32, n_val=12, epochs=2) == pytest.approx(2 * (32 + 4))


def test_a_round_counts_its_own_steps_the_lookahead_of_every_mask_and_their_scoring():
    # K 5, C 3 candidates + p_c's mask, 8 micro-dev examples, 10 lookahead steps each
    assert round_passes(5, 3, 8, 10) == pytest.approx(5 + 4 * 10 + 4 * 8 / 3)
    assert round_passes(5, 3, 8, 0) == pytest.approx(5 + 4 * 8 / 3)  # immediate reward


@pytest.mark.parametrize("budget, lookahead, expected", [
    (3.0, 10, 3),   # (3 * 72 - 4) / 55.67 = 3.8
    (3.0, 5, 5),    # (216 - 4) / 35.67 = 5.9
    (1.0, 5, 1),    # (72 - 4) / 35.67 = 1.9
    (0.1, 10, 1),   # never fewer than one round
    (10.0, 0, 45),  # immediate reward: (720 - 4) / 15.67 = 45.7
])
def test_rounds_within_budget_is_the_floor_of_what_fits(budget, lookahead, expected):
    n = rounds_within_budget(budget, n_train=32, n_val=12, epochs=2, every_k_steps=5, candidates=3, micro_dev=8,
                             lookahead_steps=lookahead)
    assert n == expected
    per_round = round_passes(5, 3, 8, lookahead)
    total = budget * grid_point_passes(32, 12, 2)
    if expected > 1:
        assert expected * per_round + 12 / 3 <= total < (expected + 1) * per_round + 12 / 3


def test_the_tighter_cap_wins():
    assert round_cap(None, None) is None
    assert round_cap(4, None) == 4 and round_cap(None, 6) == 6 and round_cap(4, 6) == 4 and round_cap(9, 6) == 6


def test_late_probing_pays_for_the_whole_run_first_and_its_rounds_train_no_k_steps():
    point = grid_point_passes(32, 12, 2)
    per_round = round_passes(0, 3, 8, 5)
    assert per_round == 4 * 5 + 4 * 8 / 3
    for budget in (1.5, 2.3, 3.0):
        n = rounds_within_budget(budget, n_train=32, n_val=12, epochs=2, every_k_steps=5, candidates=3, micro_dev=8,
                                 lookahead_steps=5, rounds_at="end")
        assert n == max(1, int((budget - 1) * point // per_round))
        assert point + n * per_round <= budget * point or n == 1
