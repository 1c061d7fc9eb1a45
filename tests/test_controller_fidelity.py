"""Review fixes and variants of the controller (issue: GRASP must find what the grid finds).

- `fidelity: authors` resets the whole optimizer state of a factor that gets newly pruned entries,
  AdamW's `step` included, so bias correction restarts (checked on a real AdamW step);
- `fidelity: fixed` releases the committed entries with the largest stashed magnitudes;
- standardized advantages; the lookahead reward restores weights and optimizer state exactly.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from grasp_lora.config import ConfigError, ControllerConfig, load_config
from grasp_lora.controller.grpo import GRPOController, policy_update
from grasp_lora.controller.scorers import (ControllerScorer, DenseRunMasks, ImmediateLoss, LookaheadLoss,
                                           MaskedRunMasks)


# The four scorers of the paper's and our controllers: which weights a mask is cut from x how it is scored.
def MaskedModelScorer(ms, evaluate, optimizer, **kw):
    return ControllerScorer(MaskedRunMasks(ms, optimizer, **kw), ImmediateLoss(ms, evaluate))


def DenseRunScorer(ms, evaluate, optimizer, **kw):
    return ControllerScorer(DenseRunMasks(ms, optimizer, **kw), ImmediateLoss(ms, evaluate))


def LookaheadScorer(ms, evaluate, optimizer, **kw):
    return ControllerScorer(MaskedRunMasks(ms, optimizer), LookaheadLoss(ms, evaluate, optimizer, **kw))


def DenseRunLookaheadScorer(ms, evaluate, optimizer, **kw):
    return ControllerScorer(DenseRunMasks(ms, optimizer), LookaheadLoss(ms, evaluate, optimizer, **kw))
from grasp_lora.pruning.groups import FactorGroup
from grasp_lora.pruning.masks import committed_first, prune_order
from grasp_lora.pruning.state import MaskState


def two_factors():
    A = nn.Parameter(torch.tensor([[0.5, -2.0, 0.1, 3.0], [1.5, -0.2, 0.7, -1.0]]))
    B = nn.Parameter(torch.tensor([[1.0, -0.3], [0.05, 2.0], [-0.6, 0.8]]))
    return A, B, [FactorGroup("m", 0, [A], [B])]


def test_authors_reset_zeroes_every_state_tensor_and_restarts_bias_correction():
    A, B, groups = two_factors()
    ms = MaskState(groups)
    opt = torch.optim.AdamW([A, B], lr=0.1, weight_decay=0.0)
    for _ in range(3):
        (A.sum() * 2 + (B * B).sum()).backward()
        opt.step()
        opt.zero_grad()
    assert float(opt.state[A]["step"]) == 3.0
    b_state = {k: v.clone() for k, v in opt.state[B].items()}
    mask_a = torch.zeros_like(A, dtype=torch.bool)
    mask_a[0, 2] = True  # A gets a newly pruned entry, B none
    ms.commit([mask_a, torch.zeros_like(B, dtype=torch.bool)], optimizer=opt, optimizer_reset="whole")
    st = opt.state[A]
    assert float(st["step"]) == 0.0
    assert (st["exp_avg"] == 0).all() and (st["exp_avg_sq"] == 0).all()  # whole tensors, not just the entry
    assert all(torch.equal(b_state[k], v) for k, v in opt.state[B].items())  # no newly pruned entry: untouched
    # With step restarted at 0, the next AdamW step is a first step: m_hat = g, v_hat = g^2, so every
    # live entry of A moves by lr * g / (|g| + eps) ~= lr. Without the reset it would move by less.
    before = A.detach().clone()
    (A.sum() * 2).backward()
    opt.step()
    moved = (before - A.detach())[~mask_a]
    assert torch.allclose(moved, torch.full_like(moved, 0.1), atol=1e-6)


def test_masked_reset_keeps_step_and_other_entries():
    A, B, groups = two_factors()
    ms = MaskState(groups)
    opt = torch.optim.AdamW([A, B], lr=0.1)
    (A.sum() + B.sum()).backward()
    opt.step()
    mask_a = torch.zeros_like(A, dtype=torch.bool)
    mask_a[1, 1] = True
    # default: masked (METHOD.md, "The GRASP controller")
    ms.commit([mask_a, torch.zeros_like(B, dtype=torch.bool)], optimizer=opt)
    assert float(opt.state[A]["step"]) == 1.0
    assert opt.state[A]["exp_avg"][1, 1] == 0 and (opt.state[A]["exp_avg"][~mask_a] != 0).all()
    with pytest.raises(ValueError, match="optimizer_reset"):
        ms.commit([mask_a, torch.zeros_like(B, dtype=torch.bool)], optimizer=opt, optimizer_reset="some")


def test_committed_first_moves_committed_entries_to_the_front_in_order():
    order = torch.tensor([3, 0, 4, 1, 2])
    committed = torch.tensor([False, True, False, True, True])
    assert committed_first(order, committed).tolist() == [3, 4, 1, 0, 2]  # committed 3, 4, 1 then live 0, 2


def test_fixed_release_brings_back_the_largest_stashed_magnitudes():
    A, B, groups = two_factors()
    ms = MaskState(groups)
    scorer = MaskedModelScorer(ms, lambda: 0.0, lambda: None, release="stash")
    scorer.refresh_importance()
    scorer.commit(0.5)  # A: 4 smallest |w| of 8 pruned: 0.1, -0.2, 0.5, 0.7
    assert ms.masks[0].sum() == 4
    values = torch.tensor([0.5, -2.0, 0.1, 3.0, 1.5, -0.2, 0.7, -1.0])
    assert sorted(values[ms.masks[0].reshape(-1)].tolist()) == pytest.approx([-0.2, 0.1, 0.5, 0.7])
    scorer.refresh_importance()
    seen = {}

    def probe():
        seen["A"] = A.detach().clone()
        return 0.0

    scorer.loss.evaluate_loss = probe
    scorer.candidate_loss(0.25)  # 2 of A's 4 committed entries come back: the largest stashed, 0.7 and 0.5
    a = seen["A"]
    assert a[0, 0] == 0.5 and a[1, 2] == 0.7  # released with their stashed values
    assert a[0, 2] == 0 and a[1, 1] == 0  # the smallest stashed stay pruned
    # the authors' ranking ties the zeros and releases the lowest flat indices instead
    ms2 = MaskState(two_factors()[2])

    def probe2():
        seen["A"] = ms2.factors[0].detach().clone()
        return 0.0

    idx = MaskedModelScorer(ms2, probe2, lambda: None, release="index")
    idx.refresh_importance()
    idx.commit(0.5)
    idx.refresh_importance()
    idx.candidate_loss(0.25)
    released = (seen["A"] != 0) & ms2.masks[0]
    flat = torch.nonzero(ms2.masks[0].reshape(-1)).reshape(-1).tolist()
    assert torch.nonzero(released.reshape(-1)).reshape(-1).tolist() == flat[2:]  # the zeros tie: index order


def test_candidates_at_or_above_the_committed_ratio_keep_the_committed_mask_under_stash_release():
    A, B, groups = two_factors()
    ms = MaskState(groups)
    scorer = MaskedModelScorer(ms, lambda: 0.0, lambda: None)
    scorer.refresh_importance()
    scorer.commit(0.5)
    with torch.no_grad():  # training moves the live weights; committed entries stay zero
        A.mul_(0.01)
    ms.rezero()
    scorer.refresh_importance()
    masks = scorer.masks.at(0.75)
    assert all(bool((m | ~c).all()) for m, c in zip(masks, ms.masks))


def test_standardized_advantages_are_scale_free():
    kw = dict(lr=0.05, kl_coef=0.05, entropy_bonus=0.01, p_min=0.1, p_max=0.8)
    cands = [0.3, 0.5, 0.6]
    small = policy_update(0.4, 0.1, 0.4, cands, [0.01, 0.0, -0.01], advantage="standardized", **kw)
    large = policy_update(0.4, 0.1, 0.4, cands, [1.0, 0.0, -1.0], advantage="standardized", **kw)
    assert small[:2] == pytest.approx(large[:2]) and small[2] == pytest.approx(large[2])
    std = math.sqrt(2 / 3 * 0.01 ** 2)
    assert small[2] == pytest.approx([0.01 / std, 0.0, -0.01 / std])
    centered = policy_update(0.4, 0.1, 0.4, cands, [0.01, 0.0, -0.01], **kw)
    assert centered[2] == pytest.approx([0.01, 0.0, -0.01])
    flat = policy_update(0.4, 0.1, 0.4, cands, [0.2, 0.2, 0.2], advantage="standardized", **kw)
    assert flat[2] == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="advantage"):
        policy_update(0.4, 0.1, 0.4, cands, [0.0] * 3, advantage="ranked", **kw)


def test_config_variants_and_refusals():
    cfg = load_config(None, ["controller.advantage=standardized", "controller.reward=lookahead",
                             "controller.lookahead_steps=3"])
    assert (cfg.controller.advantage, cfg.controller.reward, cfg.controller.lookahead_steps) == ("standardized", "lookahead", 3)
    with pytest.raises(ConfigError, match="controller.reward"):
        load_config(None, ["controller.reward=trained"])
    with pytest.raises(ConfigError, match="fidelity"):  # the default preset's lookahead is not the scripts'
        load_config(None, ["controller.fidelity=authors"])
    assert load_config(None, ["controller.variant=authors"]).controller.fidelity == "authors"
    # every controller key holds the value the run uses; the defaults are the default preset's
    default = load_config(None, []).controller
    assert (default.variant, default.train_under_mask, default.reward, default.lookahead_steps, default.advantage,
            default.p_star_rule, default.budget_grid_points) == (
        "dense_lookahead_budget", False, "lookahead", 10, "standardized", "final", 3.0)
    # explicit keys override the preset, one by one; every combination of the two scorer choices runs
    c = load_config(None, ["controller.train_under_mask=true"]).controller
    assert (c.variant, c.train_under_mask, c.reward, c.advantage) == ("dense_lookahead_budget", True, "lookahead",
                                                                      "standardized")
    c = load_config(None, ["controller.variant=paper", "controller.advantage=standardized"]).controller
    assert (c.train_under_mask, c.reward, c.advantage) == (True, "immediate", "standardized")
    # lookahead_steps is a number of its own: it no longer follows every_k_steps
    assert load_config(None, ["controller.every_k_steps=7"]).controller.lookahead_steps == 10
    with pytest.raises(ConfigError, match="controller.lookahead_steps"):
        load_config(None, ["controller.lookahead_steps=0"])
    with pytest.raises(ConfigError, match="fidelity"):
        load_config(None, ["controller.variant=authors", "controller.advantage=standardized"])
    with pytest.raises(ConfigError, match="controller.advantage"):
        load_config(None, ["controller.advantage=ranked"])
    with pytest.raises(ConfigError, match="fidelity"):
        load_config(None, ["controller.variant=authors", "controller.train_under_mask=false"])
    with pytest.raises(ConfigError, match="grid.select_by: only val_loss"):
        load_config(None, ["grid.select_by=val_metric"])


class TinyLM(nn.Module):
    """A causal LM shaped enough for `lm_loss`: embeddings -> low-rank adapter -> head."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.emb = nn.Embedding(20, 6)
        self.A = nn.Parameter(torch.randn(3, 6, generator=g))
        self.B = nn.Parameter(torch.randn(6, 3, generator=g))
        self.head = nn.Linear(6, 20)
        self.config = type("Cfg", (), {"pad_token_id": 0})()
        for p in (*self.emb.parameters(), *self.head.parameters()):
            p.requires_grad_(False)

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0, **_):
        h = self.emb(input_ids)
        h = h + h @ self.A.t() @ self.B.t()
        logits = self.head(h)
        if isinstance(logits_to_keep, torch.Tensor):
            logits = logits[:, logits_to_keep]
        elif logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        return type("Out", (), {"logits": logits})()


def lookahead_setup():
    """A TinyLM after one AdamW step (so the optimizer has state), its factors' MaskState, two
    training examples and a micro-dev loss on a third."""
    from grasp_lora.training.loss import per_example_losses

    model = TinyLM()
    ms = MaskState([FactorGroup("m", 0, [model.A], [model.B])])
    opt = torch.optim.AdamW([model.A, model.B], lr=0.05)
    train = [{"input_ids": [1, 5, 6, 7, 8], "labels": [-100, -100, 6, 7, 8]},
             {"input_ids": [1, 9, 3, 4], "labels": [-100, -100, 3, 4]}]
    micro = [{"input_ids": [1, 5, 6, 7], "labels": [-100, -100, 6, 7]}]
    model(torch.tensor([[1, 5, 6, 7, 8]])).logits.sum().backward()
    opt.step()
    opt.zero_grad()
    return model, ms, opt, train, lambda: float(per_example_losses(model, micro, 4).mean())


def test_lookahead_scorer_trains_then_restores_weights_and_optimizer_exactly():
    model, ms, opt, train, micro_loss = lookahead_setup()
    scorer = LookaheadScorer(ms, micro_loss, lambda: opt, model=model, train_set=train, steps=2, seed=0)
    before_w = [p.detach().clone() for p in ms.factors]
    before_opt = {k: v.clone() for k, v in opt.state[model.A].items()}
    immediate = micro_loss()
    l0 = scorer.committed_loss()
    scorer.refresh_importance()
    l1 = scorer.candidate_loss(0.5)
    assert l0 != pytest.approx(immediate)  # two training steps changed the micro-dev loss before scoring
    assert math.isfinite(l1) and l1 != pytest.approx(l0)
    assert all(torch.equal(b, p.detach()) for b, p in zip(before_w, ms.factors))
    assert all(torch.equal(before_opt[k], v) for k, v in opt.state[model.A].items())
    # the same round's examples for every candidate: scoring the committed mask again gives L0 again
    assert scorer.loss.trained_loss(ms.masks) == pytest.approx(l0)
    with pytest.raises(ValueError, match="lookahead"):
        LookaheadScorer(ms, micro_loss, lambda: opt, model=model, train_set=[], steps=2, seed=0)


def test_dense_run_lookahead_scorer_trains_each_mask_from_the_dense_weights_and_commits_a_ratio():
    model, ms, opt, train, micro_loss = lookahead_setup()
    dense_ahead = DenseRunLookaheadScorer(ms, micro_loss, lambda: opt, model=model, train_set=train, steps=2, seed=0)
    # the masked-run lookahead on the same weights, examples and optimizer is the reference
    masked_ahead = LookaheadScorer(ms, micro_loss, lambda: opt, model=model, train_set=train, steps=2, seed=0)
    before_w = [p.detach().clone() for p in ms.factors]
    l0 = dense_ahead.committed_loss()
    assert l0 == pytest.approx(masked_ahead.committed_loss())  # no commit: the dense model after 2 steps
    dense_ahead.refresh_importance()
    masked_ahead.refresh_importance()
    l_half = dense_ahead.candidate_loss(0.5)
    assert l_half == pytest.approx(masked_ahead.candidate_loss(0.5)) and l_half != pytest.approx(l0)
    sparsity = dense_ahead.commit(0.5)
    # a commit moves p_c only: nothing zeroed, nothing stashed, weights as they were
    assert sparsity == pytest.approx(0.5) and not ms.has_commit
    assert all(torch.equal(b, p.detach()) for b, p in zip(before_w, ms.factors))
    # next round: L0 is p_c's mask cut from the current dense weights, trained under, then scored;
    # the round's examples advance for both scorers alike
    l0_next = dense_ahead.committed_loss()
    masked_ahead.loss.start_round()
    assert l0_next == pytest.approx(masked_ahead.loss.trained_loss(masked_ahead.masks.at(0.5)))
    ranked = dense_ahead.masks.refreshes
    dense_ahead.refresh_importance()  # the ranking L0 just made is reused by the round
    assert dense_ahead.masks.refreshes == ranked
    again = DenseRunLookaheadScorer(ms, micro_loss, lambda: opt, model=model, train_set=train, steps=2, seed=0)
    again.load_state_dict(dense_ahead.state_dict())
    assert again.masks.committed_ratio == 0.5 and again.loss._cursor == dense_ahead.loss._cursor


def test_dense_run_scorer_commits_a_ratio_not_a_mask():
    A, B, groups = two_factors()
    ms = MaskState(groups)
    weights = lambda: [p.detach().clone() for p in ms.factors]  # noqa: E731
    # the loss is the sum of the live magnitudes: a mask's loss says which entries it zeroed
    scorer = DenseRunScorer(ms, lambda: float(sum(p.abs().sum() for p in ms.factors)), lambda: None)
    dense = weights()
    l0_dense = scorer.committed_loss()
    assert l0_dense == pytest.approx(sum(float(w.abs().sum()) for w in dense))  # before any commit: dense
    scorer.refresh_importance()
    l_half = scorer.candidate_loss(0.5)
    # per factor, the floor(n/2) smallest |w| go: A keeps 1.5, 2.0, 3.0, 1.0; B keeps 1.0, 2.0, 0.8
    assert l_half == pytest.approx(11.3)
    sparsity = scorer.commit(0.5)
    # 7 of 14 entries: the commit reports the mask's sparsity, but zeroes nothing and stashes nothing
    assert sparsity == pytest.approx(0.5) and not ms.has_commit
    assert all(torch.equal(a, b) for a, b in zip(dense, weights()))
    ms.rezero()
    assert all(torch.equal(a, b) for a, b in zip(dense, weights()))
    # after the commit, L0 is the committed ratio's mask cut from (and scored on) the current weights
    ranked = scorer.masks.refreshes
    assert scorer.committed_loss() == pytest.approx(l_half)
    scorer.refresh_importance()  # the controller's step 2 reuses the ranking L0 just made
    assert scorer.masks.refreshes == ranked + 1
    with torch.no_grad():
        A[0, 2] = 5.0  # training moved a small entry: the ratio's mask is recomputed, not replayed
    # A now keeps 5.0, 3.0, 2.0, 1.5 (its 0.1 grew to 5.0 and pushed 1.0 out); B keeps 3.8 as before
    assert scorer.committed_loss() == pytest.approx(11.5 + 3.8)
    assert all(torch.equal(a, b) for a, b in zip([p.detach() for p in ms.factors], weights()))
    state = scorer.state_dict()
    again = DenseRunScorer(ms, scorer.loss.evaluate_loss, lambda: None)
    again.load_state_dict(state)
    assert again.masks.committed_ratio == 0.5 and again.committed_loss() == pytest.approx(scorer.committed_loss())


@pytest.mark.parametrize("name", ["paper", "authors", "dense", "dense_lookahead", "masked_lookahead",
                                  "dense_lookahead_budget"])
def test_each_named_variant_sets_its_keys_and_explicit_keys_win(name):
    from grasp_lora.config import with_variant
    from grasp_lora.controller.variants import PRESET_KEYS, VARIANTS

    preset = VARIANTS[name]
    c = load_config(None, [f"controller.variant={name}", "controller.every_k_steps=7"]).controller
    assert {k: getattr(c, k) for k in PRESET_KEYS} == {k: getattr(preset, k) for k in PRESET_KEYS}
    assert c.every_k_steps == 7 and c.lookahead_steps == preset.lookahead_steps  # K does not move the lookahead
    # an explicit key wins over the preset, on the command line or in Python, in either order
    explicit = load_config(None, ["controller.budget_grid_points=5", f"controller.variant={name}",
                                  "controller.p_star_rule=fit"]).controller
    assert (explicit.budget_grid_points, explicit.p_star_rule, explicit.variant) == (5, "fit", name)
    assert with_variant(load_config(None, []).controller, name, p_star_rule="fit") == replace(
        load_config(None, [f"controller.variant={name}"]).controller, p_star_rule="fit")
    if name != "authors":  # the released scripts' controller takes no other advantage (fidelity's check)
        flipped = "standardized" if preset.advantage == "centered" else "centered"
        assert load_config(None, [f"controller.variant={name}", f"controller.advantage={flipped}"]).controller \
            .advantage == flipped


def test_the_default_preset_is_the_plain_defaults():
    from grasp_lora.config import ControllerConfig
    from grasp_lora.controller.variants import DEFAULT_VARIANT, PRESET_KEYS, preset_values

    plain = ControllerConfig()
    assert plain.variant == DEFAULT_VARIANT
    assert {k: getattr(plain, k) for k in PRESET_KEYS} == preset_values(DEFAULT_VARIANT)


def test_combinations_that_mean_nothing_are_refused_in_one_line():
    cases = {
        ("controller.variant=fast",): "controller.variant: expected one of paper, authors, dense",
        ("controller.reward=null",): "controller.reward",
        ("controller.variant=null",): "controller.variant",
        ("controller.fidelity=authors",): "controller.fidelity: authors reproduces the released scripts",
    }
    for overrides, expected in cases.items():
        with pytest.raises(ConfigError) as e:
            load_config(None, list(overrides))
        assert expected in str(e.value) and "\n" not in str(e.value), overrides


def test_config_prints_every_controller_key_with_its_value_and_reads_back_the_same(tmp_path):
    import yaml

    from grasp_lora.controller.variants import PRESET_KEYS

    cfg = load_config(None, ["controller.variant=paper"])
    text = cfg.to_yaml()
    section = yaml.safe_load(text)["controller"]
    assert set(PRESET_KEYS) <= set(section) and section["variant"] == "paper"
    # null is a value here, not "see another key": the paper's controller has no budget
    assert [k for k in PRESET_KEYS if section[k] is None] == ["budget_grid_points"]
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert load_config(path) == cfg  # the saved config pins every key: switching presets there changes nothing


def test_a_config_saved_before_presets_keeps_its_meaning(tmp_path):
    """Run folders' config.yaml (and recipes copied from the old shipped ones) wrote the preset keys as
    null, meaning "the variant's", with the variant following from how the run trains."""
    import yaml

    def legacy(**controller):
        data = {"controller": {"variant": None, "train_under_mask": None, "reward": None, "lookahead_steps": None,
                               "advantage": None, "p_star_rule": None, "budget_grid_points": None,
                               "max_rounds": None, "every_k_steps": 5, **controller}}
        path = tmp_path / "legacy.yaml"
        path.write_text(yaml.safe_dump(data))
        return load_config(path).controller

    c = legacy()
    assert (c.variant, c.reward, c.lookahead_steps, c.budget_grid_points) == ("dense_lookahead_budget", "lookahead", 5, 3.0)
    c = legacy(train_under_mask=True)
    assert (c.variant, c.reward, c.advantage, c.lookahead_steps, c.budget_grid_points) == (
        "paper", "immediate", "centered", 10, None)
    c = legacy(fidelity="authors")
    assert (c.variant, c.p_star_rule) == ("authors", "best_trial")
    c = legacy(variant=None, reward="immediate", advantage="centered")  # explicit values stay
    assert (c.variant, c.reward, c.advantage, c.train_under_mask) == ("dense_lookahead_budget", "immediate", "centered",
                                                                      False)
