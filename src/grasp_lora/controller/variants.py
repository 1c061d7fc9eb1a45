"""Named controllers (`controller.variant`): a registry of explicit presets, as mergekit's merge methods.

A preset gives a concrete value to every key in `PRESET_KEYS`. A recipe picks one by name; any of
those keys the recipe or the command line sets itself overrides the preset's value, one key at a
time (as keyword arguments override a PEFT config's defaults). Nothing is left to resolve later:
after `load_config` every controller key holds the value the run uses.

The default controller is `DEFAULT_VARIANT`; `ControllerConfig`'s plain defaults are its values
(tests/test_controller_variants.py checks that they agree).

No torch and no model code here: `config` imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

__all__ = ["ControllerPreset", "VARIANTS", "DEFAULT_VARIANT", "PRESET_KEYS", "preset_values", "upgrade_legacy"]


@dataclass(frozen=True)
class ControllerPreset:
    """One named controller: every key it sets, with its value."""

    summary: str
    fidelity: str  # fixed | authors (the released scripts, METHOD.md "Fidelity")
    train_under_mask: bool  # the controller run trains under the committed mask (True) or dense (False)
    reward: str  # immediate | lookahead (each mask trained `lookahead_steps` before it is scored)
    lookahead_steps: int  # optimizer steps of the lookahead (unused by the immediate reward)
    advantage: str  # centered (the paper) | standardized (GRPO's)
    p_star_rule: str  # final | best_trial | fit
    budget_grid_points: Optional[float]  # the run stops within this many grid points of compute; None: no budget
    sampling: str = "clamp"  # clamp (the paper) | reflect (draws folded back into the range)
    max_mu_step: float = 1.0  # the most mu moves in one round (1.0: no bound, the paper)
    rounds_at: str = "during"  # during (every K steps, the paper) | end (after the whole schedule: late probing)


PRESET_KEYS = ("fidelity", "train_under_mask", "reward", "lookahead_steps", "advantage", "p_star_rule",
               "budget_grid_points", "sampling", "max_mu_step", "rounds_at")

# Lookahead steps are counted at the paper's K = 10 (a recipe with another K sets lookahead_steps itself,
# as configs/demo.yaml does). The immediate-reward presets carry 20 too: unused, but the value their
# runs have always recorded.
VARIANTS: dict[str, ControllerPreset] = {
    "paper": ControllerPreset(
        "the paper's controller (METHOD.md, 'The GRASP controller'): trains under the committed mask, "
        "immediate reward, centered advantages",
        fidelity="fixed", train_under_mask=True, reward="immediate", lookahead_steps=20, advantage="centered",
        p_star_rule="final", budget_grid_points=None),
    "authors": ControllerPreset(
        "the released scripts' controller (METHOD.md, 'Fidelity'): importance once, commits at the candidate's "
        "own ratio, p* the best trial",
        fidelity="authors", train_under_mask=True, reward="immediate", lookahead_steps=20, advantage="centered",
        p_star_rule="best_trial", budget_grid_points=None),
    "dense": ControllerPreset(
        "the run trains dense; every mask is cut from its weights and scored at once",
        fidelity="fixed", train_under_mask=False, reward="immediate", lookahead_steps=20, advantage="standardized",
        p_star_rule="final", budget_grid_points=None),
    "dense_lookahead": ControllerPreset(
        "the dense run; each mask trained under for 20 steps before it is scored; the whole schedule",
        fidelity="fixed", train_under_mask=False, reward="lookahead", lookahead_steps=20, advantage="standardized",
        p_star_rule="final", budget_grid_points=None),
    "masked_lookahead": ControllerPreset(
        "the run trains under its mask; each mask trained under for 20 steps before it is scored",
        fidelity="fixed", train_under_mask=True, reward="lookahead", lookahead_steps=20, advantage="centered",
        p_star_rule="final", budget_grid_points=None),
    "dense_lookahead_budget": ControllerPreset(
        "the default: dense_lookahead with a lookahead of K = 10 steps, stopped within 3 grid points of "
        "compute (METHOD.md, 'Controller cost')",
        fidelity="fixed", train_under_mask=False, reward="lookahead", lookahead_steps=10, advantage="standardized",
        p_star_rule="final", budget_grid_points=3.0),
    # Issue 33's first design: no round wasted at a bound (draws reflected into the range, mu moves
    # at most 0.15 a round), and a budget that leaves the final run inside 3.3 grid points in all.
    "bounded": ControllerPreset(
        "dense_lookahead_budget with candidates reflected into the range, mu moving at most 0.15 a round, "
        "stopped within 2.3 grid points (controller + final run within 3.3)",
        fidelity="fixed", train_under_mask=False, reward="lookahead", lookahead_steps=10, advantage="standardized",
        p_star_rule="final", budget_grid_points=2.3, sampling="reflect", max_mu_step=0.15),
    # Issue 33's late probing: the dense run trains its whole schedule, then every round scores its
    # candidates on those finished weights (each trained lookahead_steps under its mask), so no
    # ratio is judged on a model a few steps into training. All rounds see the same weights, so
    # p* fits one curve through every candidate scored (`fit`).
    "late_probe": ControllerPreset(
        "the dense run's whole schedule, then rounds back to back at its best weights (lookahead of 10 steps, "
        "reflected draws, mu moving at most 0.15 a round), p* fitted through every candidate, within 2.3 grid points",
        fidelity="fixed", train_under_mask=False, reward="lookahead", lookahead_steps=10, advantage="standardized",
        p_star_rule="fit", budget_grid_points=2.3, sampling="reflect", max_mu_step=0.15, rounds_at="end"),
}

DEFAULT_VARIANT = "dense_lookahead_budget"


def preset_values(name: str) -> dict[str, Any]:
    """The keys variant `name` sets, with their values."""
    preset = VARIANTS[name]
    return {k: getattr(preset, k) for k in PRESET_KEYS}


def upgrade_legacy(section: Mapping[str, Any]) -> dict[str, Any]:
    """A controller section written before presets (every run folder's config.yaml up to 0.x, and
    recipes copied from those): `variant: null` and the preset keys null meant "what the variant
    says", the variant itself following from how the run trains. Give such a section the meaning it
    had then: drop the null preset keys and name the variant it resolved to. Any other section is
    returned unchanged."""
    if "variant" not in section or section["variant"] is not None:
        return dict(section)
    out = {k: v for k, v in section.items() if not (k in PRESET_KEYS and v is None)}
    if out.get("fidelity") == "authors":
        out["variant"] = "authors"
    elif out.get("train_under_mask"):
        out["variant"] = "paper"
    else:
        out["variant"] = DEFAULT_VARIANT
    if "lookahead_steps" not in out:
        # the lookahead was a multiple of K then (K for the default, 2 K for the others)
        k = int(out.get("every_k_steps", 10))
        out["lookahead_steps"] = k if out["variant"] == DEFAULT_VARIANT else 2 * k
    return out
