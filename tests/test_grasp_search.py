"""The controller run on a tiny model: same seed, same machine -> the same history and p*."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from grasp_lora.cli import resolve_recipe
from grasp_lora.config import load_config, with_variant
from grasp_lora.pipeline import Experiment
from grasp_lora.search.grasp import EmptyMicroDevError, run_grasp_search
from helpers import TINY_OVERRIDES


@pytest.fixture(scope="module")
def exp(tmp_path_factory, monkeypatch_module):
    root = tmp_path_factory.mktemp("grasp")
    monkeypatch_module.setenv("GRASP_LORA_CACHE", str(root / "cache"))
    cfg = load_config(resolve_recipe("demo"), TINY_OVERRIDES)
    e = Experiment(cfg, root=root / "run", progress=False, log=lambda _: None)
    e.prepare()
    e.adapters()
    return e


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def controller_run(exp: Experiment, out, cfg=None):
    cfg = cfg or exp.cfg
    lang = cfg.data.target_lang
    model, tok = exp.base_model()
    result = run_grasp_search(cfg, model, tok, exp.source_target_adapters, exp.rows(lang, "train"),
                              exp.rows(lang, "val"), exp.rows(lang, "micro_dev"), out, progress=False)
    history = out / "history.jsonl"
    return result, history.read_text() if history.exists() else ""  # a run with no round writes none


def zero_share(model) -> float:
    """The share of the merged factors' entries that are exactly 0 (what a mask leaves)."""
    from grasp_lora.models.merged import trainable_factors

    factors = trainable_factors(model)
    return sum(int((p == 0).sum()) for p in factors) / sum(p.numel() for p in factors)


def test_same_seed_gives_the_same_history_and_p_star(exp, tmp_path):
    first, history_a = controller_run(exp, tmp_path / "a")
    second, history_b = controller_run(exp, tmp_path / "b")
    assert history_a == history_b and history_a.count("\n") == first["rounds"] > 0
    assert first["p_star"] == second["p_star"]
    other = replace(exp.cfg, controller=replace(exp.cfg.controller, seed=7))
    _, history_c = controller_run(exp, tmp_path / "c", other)
    assert json.loads(history_c.splitlines()[0])["candidates"] != json.loads(history_a.splitlines()[0])["candidates"]


def test_empty_micro_dev_is_one_clear_error_before_training(exp, tmp_path):
    lang = exp.cfg.data.target_lang
    model, tok = exp.base_model()
    with pytest.raises(EmptyMicroDevError, match="micro-dev split is empty"):
        run_grasp_search(exp.cfg, model, tok, exp.source_target_adapters, exp.rows(lang, "train"),
                         exp.rows(lang, "val"), [], tmp_path / "x", progress=False)
    assert not (tmp_path / "x" / "history.jsonl").exists()


def test_one_controller_run_is_shared_by_every_seed_and_the_grid_selects_one_ratio(exp):
    """The paper's protocol (METHOD.md, "Final run and grid search"): one controller run (controller seed),
    a final run per seed at
    its p*, every grid ratio for every seed, one ratio selected by mean validation loss."""
    from grasp_lora.io import read_json

    cfg = replace(exp.cfg, pipeline=replace(exp.cfg.pipeline, seeds=[42, 7]))
    two = Experiment(cfg, root=exp.root, progress=False, log=lambda _: None, base=exp.base)
    two.grasp()
    two.final()
    two.grid()
    assert (exp.root / "grasp" / "result.json").exists()
    assert not list(exp.root.glob("seed_*/grasp"))
    controller = read_json(exp.root / "grasp" / "result.json")
    assert controller["controller_seed"] == cfg.controller.seed and controller["seed"] == cfg.controller.seed
    finals = {s: read_json(exp.root / f"seed_{s}" / "final" / "result.json") for s in (42, 7)}
    assert all(f["ratio"] == controller["p_star"] for f in finals.values())
    assert finals[42]["seed"] == 42 and finals[7]["seed"] == 7
    assert finals[42]["best_val_loss"] != finals[7]["best_val_loss"]  # different training orders

    selection = read_json(exp.root / "grid" / "summary.json")
    means = {}
    for r in cfg.grid.ratios:
        losses = [p["val_loss"] for s in (42, 7) for p in read_json(exp.root / f"seed_{s}" / "grid" / "summary.json")["points"]
                  if p["ratio"] == r]
        assert len(losses) == 2
        means[r] = sum(losses) / 2
    assert selection["selected_ratio"] == min(means, key=lambda r: (means[r], r))
    systems = two.systems()
    assert {systems[f"grid_best_seed{s}"]["ratio"] for s in (42, 7)} == {selection["selected_ratio"]}
    assert {systems[f"grasp_seed{s}"]["ratio"] for s in (42, 7)} == {controller["p_star"]}


def test_per_seed_controllers_stay_available(exp):
    from grasp_lora.config import controller_config

    cfg = replace(exp.cfg, pipeline=replace(exp.cfg.pipeline, seeds=[42, 7], controller_per_seed=True))
    per_seed = Experiment(cfg, root=exp.root / "per_seed", progress=False, log=lambda _: None)
    assert per_seed.grasp_dir(7) == exp.root / "per_seed" / "seed_7" / "grasp"
    assert controller_config(cfg, 7).controller.seed == 7 and controller_config(cfg, 7).train.seed == 7
    one = controller_config(exp.cfg)
    assert one.controller.seed == exp.cfg.controller.seed == one.train.seed


def test_masked_run_lookahead_and_standardized_variants_run_and_are_recorded(exp, tmp_path):
    c = replace(exp.cfg.controller, reward="lookahead", lookahead_steps=2, advantage="standardized", train_under_mask=True)
    result, history = controller_run(exp, tmp_path / "v", replace(exp.cfg, controller=c))
    assert (result["reward"], result["lookahead_steps"], result["advantage"]) == ("lookahead", 2, "standardized")
    assert result["train_under_mask"] is True
    records = [json.loads(line) for line in history.splitlines()]
    assert len(records) == result["rounds"] > 0
    # standardized advantages of a round have mean 0 and population std 1 (or are all 0)
    for rec in records:
        adv = rec["advantages"]
        assert sum(adv) == pytest.approx(0.0, abs=1e-9)
        assert sum(a * a for a in adv) / len(adv) == pytest.approx(1.0) or all(a == 0 for a in adv)


def test_dense_run_lookahead_trains_dense_and_scores_trained_masks(exp, tmp_path):
    # the whole schedule on both sides (no budget): the same training steps, so the same validation loss
    c = with_variant(exp.cfg.controller, "dense_lookahead", lookahead_steps=2)
    result, history = controller_run(exp, tmp_path / "dense_ahead", replace(exp.cfg, controller=c))
    assert (result["reward"], result["train_under_mask"], result["advantage"]) == ("lookahead", False, "standardized")
    records = [json.loads(line) for line in history.splitlines()]
    assert len(records) == result["rounds"] > 0
    # the run trains dense whatever is committed: its validation loss is the immediate-reward dense
    # run's (scoring restores weights and optimizer), while its rewards are the lookahead's
    immediate = with_variant(exp.cfg.controller, "dense")
    dense, dense_history = controller_run(exp, tmp_path / "dense", replace(exp.cfg, controller=immediate))
    assert dense["reward"] == "immediate" and dense["lookahead_steps"] is None
    assert result["best_val_loss"] == pytest.approx(dense["best_val_loss"], abs=1e-6)
    first = json.loads(dense_history.splitlines()[0])
    assert records[0]["losses"] != pytest.approx(first["losses"])


def test_default_controller_is_the_dense_run_lookahead_and_never_masks_the_controller_run(exp, tmp_path, monkeypatch):
    import torch

    from grasp_lora.controller.scorers import ControllerScorer
    from grasp_lora.training import loop

    c = exp.cfg.controller
    assert (c.variant, c.train_under_mask, c.reward, c.advantage) == ("dense_lookahead_budget", False, "lookahead",
                                                                      "standardized")
    masked_share: list[float] = []  # of the factors, at every training step of the run's own loop
    real = loop.lm_loss

    def lm_loss(model, batch, *args, **kwargs):
        if torch.is_grad_enabled():
            masked_share.append(zero_share(model))
        return real(model, batch, *args, **kwargs)

    monkeypatch.setattr(loop, "lm_loss", lm_loss)
    result, history = controller_run(exp, tmp_path / "dense", exp.cfg)
    assert (result["train_under_mask"], result["reward"], result["advantage"]) == (False, "lookahead", "standardized")
    assert masked_share and max(masked_share) == 0.0

    # On the tiny model no mask beats the dense lookahead, so nothing is committed; make every
    # round commit (L0 raised by 1) and check again that the run never trains under a mask, and
    # that the same check sees the paper's controller, which does, train masked.
    real_l0 = ControllerScorer.committed_loss
    monkeypatch.setattr(ControllerScorer, "committed_loss", lambda self: real_l0(self) + 1.0)
    masked_share.clear()
    _, forced = controller_run(exp, tmp_path / "forced", exp.cfg)
    assert all(json.loads(line)["committed_ratio"] is not None for line in forced.splitlines())
    assert max(masked_share) == 0.0
    masked_share.clear()
    controller_run(exp, tmp_path / "paper", replace(exp.cfg, controller=with_variant(c, "paper")))
    assert max(masked_share) >= 0.9 * c.p_min
    records = [json.loads(line) for line in history.splitlines()]
    assert len(records) == result["rounds"] > 0
    committed = [r["committed_ratio"] for r in records if r["committed_ratio"] is not None]
    # p* is the last committed p_c, as in the paper's rule; rewards are relative to p_c's own mask
    assert result["p_star"] == pytest.approx(committed[-1] if committed else exp.cfg.controller.p_init)
    for r in records:
        assert r["rewards"] == pytest.approx([r["L0"] - x for x in r["losses"]])
        adv = r["advantages"]  # standardized: mean 0, population std 1 (all 0 for equal rewards)
        assert sum(adv) == pytest.approx(0.0, abs=1e-9)
        assert sum(a * a for a in adv) / len(adv) == pytest.approx(1.0) or all(a == 0 for a in adv)


def test_training_only_ever_sees_training_examples(exp, tmp_path, monkeypatch):
    """Every example any training step of the controller run (its own steps and the lookahead's)
    or of a fixed-ratio run learns from is a training example: never micro-dev, validation or test."""
    import torch

    from grasp_lora.config import seed_config
    from grasp_lora.data.encode import encode_rows
    from grasp_lora.training import loop, loss

    seen: dict[str, list[tuple[int, ...]]] = {"loop": [], "lookahead": []}

    def recording(real, where):
        def lm_loss(model, batch, *args, **kwargs):
            if torch.is_grad_enabled():  # a training step, not scoring
                for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
                    seen[where].append(tuple(ids[mask.bool()].tolist()))
            return real(model, batch, *args, **kwargs)
        return lm_loss

    monkeypatch.setattr(loop, "lm_loss", recording(loop.lm_loss, "loop"))
    # The lookahead imports lm_loss when it runs, the loop when it is imported.
    monkeypatch.setattr(loss, "lm_loss", recording(loss.lm_loss, "lookahead"))
    controller_run(exp, tmp_path / "controller")  # the default controller: dense run + lookahead steps
    assert seen["loop"] and seen["lookahead"]
    exp.merged_run(seed_config(exp.cfg, 42), tmp_path / "final", ratio=0.3, kind="final")

    d = exp.cfg.data
    _, tok = exp.base_model()

    def encoded(split: str) -> set[tuple[int, ...]]:
        rows = encode_rows(tok, exp.rows(d.target_lang, split), d.task, d.target_lang, d.max_length)
        return {tuple(r["input_ids"]) for r in rows}

    trained = set(seen["loop"]) | set(seen["lookahead"])
    held_out = encoded("val") | encoded("micro_dev") | encoded("test")
    assert held_out and not trained & held_out
    assert trained <= encoded("train")


@pytest.mark.parametrize("variant", ["dense_lookahead", "masked_lookahead"])
def test_a_ratio_trained_once_a_round_gives_the_same_history_as_training_it_again(exp, tmp_path, monkeypatch, variant):
    """Reusing a ratio's lookahead loss within a round is a pure saving: the same numbers."""
    from grasp_lora.controller.scorers import LookaheadLoss

    cfg = replace(exp.cfg, controller=with_variant(exp.cfg.controller, variant, p_init=0.15, lookahead_steps=2))
    reused, history = controller_run(exp, tmp_path / "reuse", cfg)
    monkeypatch.setattr(LookaheadLoss, "reuse_within_round", False)
    again, history_again = controller_run(exp, tmp_path / "again", cfg)
    assert history == history_again and reused["p_star"] == again["p_star"]
    assert reused["lookaheads_reused"] > 0 and again["lookaheads_reused"] == 0  # candidates clamped to p_min coincide
    assert reused["lookaheads"] + reused["lookaheads_reused"] == again["lookaheads"]
    assert reused["variant"] == variant


def test_a_round_cap_stops_the_controller_run_and_keeps_the_uncapped_runs_first_rounds(exp, tmp_path):
    uncapped = with_variant(exp.cfg.controller, "dense_lookahead", lookahead_steps=2)  # the whole schedule
    full, full_history = controller_run(exp, tmp_path / "full", replace(exp.cfg, controller=uncapped))
    assert full["rounds"] >= 3 and full["max_rounds"] is None and not full["stopped_by_round_cap"]
    capped_cfg = replace(exp.cfg, controller=replace(uncapped, max_rounds=2))
    capped, capped_history = controller_run(exp, tmp_path / "capped", capped_cfg)
    assert capped["rounds"] == 2 and capped["stopped_by_round_cap"]
    assert capped["steps"] == 2 * exp.cfg.controller.every_k_steps < full["steps"]
    assert capped_history.splitlines() == full_history.splitlines()[:2]  # the same rounds, then the run ends
    assert capped["p_star"] == json.loads(capped_history.splitlines()[-1])["p_c"]


def test_a_budget_in_grid_points_sets_the_round_cap(exp, tmp_path):
    from grasp_lora.controller.budget import rounds_within_budget

    c = replace(exp.cfg.controller, budget_grid_points=1.0)
    result, history = controller_run(exp, tmp_path / "budget", replace(exp.cfg, controller=c))
    lang, r = exp.cfg.data.target_lang, c
    expected = rounds_within_budget(1.0, n_train=len(exp.rows(lang, "train")), n_val=len(exp.rows(lang, "val")),
                                    epochs=exp.cfg.train.epochs, every_k_steps=c.every_k_steps, candidates=c.candidates,
                                    micro_dev=min(c.micro_dev_size, len(exp.rows(lang, "micro_dev"))),
                                    lookahead_steps=r.lookahead_steps)
    assert result["budget_rounds"] == expected == result["max_rounds"] == result["rounds"] == len(history.splitlines())


def test_late_probing_trains_the_whole_schedule_then_scores_every_round_at_the_returned_weights(exp, tmp_path):
    from grasp_lora.controller.budget import rounds_within_budget
    from grasp_lora.io import read_jsonl

    c = with_variant(exp.cfg.controller, "late_probe", lookahead_steps=2, budget_grid_points=4.0)
    result, history = controller_run(exp, tmp_path / "late", replace(exp.cfg, controller=c))
    lang = exp.cfg.data.target_lang
    n_train = len(exp.rows(lang, "train"))
    rounds = [json.loads(line) for line in history.splitlines()]
    expected = rounds_within_budget(4.0, n_train=n_train, n_val=len(exp.rows(lang, "val")), epochs=exp.cfg.train.epochs,
                                    every_k_steps=c.every_k_steps, candidates=c.candidates,
                                    micro_dev=min(c.micro_dev_size, len(exp.rows(lang, "micro_dev"))),
                                    lookahead_steps=2, rounds_at="end")
    assert result["rounds_at"] == "end" and result["rounds"] == expected == len(rounds) >= 2
    # the whole schedule trained (batch 1, every epoch), and every round at its last step
    assert result["steps"] == n_train * exp.cfg.train.epochs
    assert {r["step"] for r in rounds} == {result["steps"]}
    epochs = [e for e in read_jsonl(tmp_path / "late" / "train_log.jsonl") if e.get("event") == "epoch"]
    assert len(epochs) == exp.cfg.train.epochs
    # the run trained dense: its validation is the plain merged run's, whatever the rounds chose
    dense = with_variant(exp.cfg.controller, "dense_lookahead", lookahead_steps=2, max_rounds=10 ** 6, every_k_steps=10 ** 6)
    plain, _ = controller_run(exp, tmp_path / "plain", replace(exp.cfg, controller=dense))
    assert plain["rounds"] == 0 and plain["best_val_loss"] == result["best_val_loss"]
    for r in rounds:
        assert all(c.p_min <= x < c.p_max for x in r["candidates"])
    assert c.p_min <= result["p_star"] <= c.p_max


def test_late_probing_needs_a_cap_on_rounds():
    from grasp_lora.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="rounds_at"):
        load_config(None, ["controller.variant=late_probe", "controller.budget_grid_points=null"])
