"""Named controllers as data (`grasp_lora.controller.variants`) and what that changed for runs made before.

The fixture holds the controller keys of the controller run's fingerprint as the code at commit
6acb108 recorded them (null keys resolved through the variant), for every shipped recipe and named
variant: a run made then must still match today's config, or resume would redo it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grasp_lora.config import controller_config, load_config
from grasp_lora.controller.variants import PRESET_KEYS, VARIANTS
from grasp_lora.fingerprint import _diff, config_fingerprint
from grasp_lora.cli import resolve_recipe

FIXTURE = Path(__file__).parent / "fixtures" / "controller_fingerprints_6acb108.json"
# The lookahead presets counted their steps in units of K then (2 K); the demo recipes' K is 5, and
# the recipe now sets the default's lookahead (K = 5) as a key of its own, which every preset honours.
CHANGED = {"demo|dense_lookahead", "demo|masked_lookahead", "demo_xlsum_zh|dense_lookahead",
           "demo_xlsum_zh|masked_lookahead"}


def controller_keys(recipe: str, overrides: list[str]) -> dict:
    cfg = load_config(resolve_recipe(recipe), overrides)
    keys = config_fingerprint(controller_config(cfg).to_dict(), "grasp")["keys"]
    return {k: v for k, v in keys.items() if k.startswith("controller.")}


CASES = json.loads(FIXTURE.read_text(encoding="utf-8"))["cases"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_runs_recorded_before_presets_keep_their_fingerprint(case):
    recorded = CASES[case]
    diff = _diff(recorded["controller"], controller_keys(recorded["recipe"], recorded["overrides"]))
    if case in CHANGED:
        assert diff == {"controller.lookahead_steps": (10, 5)}
        # the old setting is one explicit key away
        old = controller_keys(recorded["recipe"], [*recorded["overrides"], "controller.lookahead_steps=10"])
        assert _diff(recorded["controller"], old) == {}
    else:
        assert diff == {}, diff


# Presets added after the fixture was recorded (no run made before can have used them).
NEW_SINCE_FIXTURE = {"bounded", "late_probe"}


def test_the_fixture_covers_every_preset_and_shipped_recipe():
    assert {c.split("|")[1] for c in CASES} == {"default", *VARIANTS} - NEW_SINCE_FIXTURE
    assert len({c.split("|")[0] for c in CASES}) == 6


def test_an_immediate_reward_run_does_not_depend_on_lookahead_steps():
    a = controller_keys("mlqa_ar", ["controller.variant=paper"])
    b = controller_keys("mlqa_ar", ["controller.variant=paper", "controller.lookahead_steps=3"])
    assert a == b and "controller.lookahead_steps" not in a
    c = controller_keys("mlqa_ar", ["controller.variant=dense_lookahead", "controller.lookahead_steps=3"])
    assert c["controller.lookahead_steps"] == 3


def test_every_preset_sets_every_preset_key_to_a_valid_value():
    for name in VARIANTS:
        c = load_config(None, [f"controller.variant={name}"]).controller
        assert all(getattr(c, k) is not None for k in PRESET_KEYS if k != "budget_grid_points"), name


def test_config_command_shows_every_controller_key_with_a_value(capsys):
    from grasp_lora.cli import main

    assert main(["config", "demo"]) == 0
    import yaml

    section = yaml.safe_load(capsys.readouterr().out)["controller"]
    assert section["variant"] == "dense_lookahead_budget" and section["lookahead_steps"] == 5
    assert all(section[k] is not None for k in PRESET_KEYS)  # the default has a budget: no null at all


def test_bounded_is_the_default_with_reflected_draws_a_bounded_mu_step_and_a_smaller_budget():
    default = controller_keys("mlqa_ar", [])
    bounded = controller_keys("mlqa_ar", ["controller.variant=bounded"])
    assert _diff(default, bounded) == {"controller.sampling": ("clamp", "reflect"),
                                       "controller.max_mu_step": (1.0, 0.15),
                                       "controller.budget_grid_points": (3.0, 2.3)}
    # the keys the package added keep every earlier preset's behaviour
    for name in VARIANTS.keys() - NEW_SINCE_FIXTURE:
        c = load_config(None, [f"controller.variant={name}"]).controller
        assert (c.sampling, c.max_mu_step, c.rounds_at) == ("clamp", 1.0, "during"), name


def test_late_probe_is_bounded_with_its_rounds_after_training_and_p_star_fitted():
    bounded = controller_keys("mlqa_ar", ["controller.variant=bounded"])
    late = controller_keys("mlqa_ar", ["controller.variant=late_probe"])
    assert _diff(bounded, late) == {"controller.rounds_at": ("during", "end"), "controller.p_star_rule": ("final", "fit")}
