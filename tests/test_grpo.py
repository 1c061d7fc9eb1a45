import json
import math

import numpy as np
import pytest

from grasp_lora.config import ControllerConfig, with_variant
from grasp_lora.controller.grpo import GRPOController, GaussianPolicy, RatioScorer, bounded_step, policy_update, reflect

KW = dict(lr=0.05, kl_coef=0.05, entropy_bonus=0.01, p_min=0.1, p_max=0.8)


class ScriptedScorer:
    """Losses by call order; records every call."""

    def __init__(self, l0s, cand_losses):
        self.l0s = list(l0s)
        self.cand_losses = list(cand_losses)
        self.calls = []
        self.committed = []

    def committed_loss(self):
        self.calls.append("L0")
        return self.l0s.pop(0)

    def refresh_importance(self):
        self.calls.append("refresh")

    def candidate_loss(self, ratio):
        self.calls.append(("cand", ratio))
        return self.cand_losses.pop(0)

    def commit(self, ratio):
        self.calls.append(("commit", ratio))
        self.committed.append(ratio)
        return 0.5 * ratio  # a "real sparsity" distinguishable from the ratio


class FnScorer:
    """Loss = f(ratio); committed_loss = f(committed ratio), 0.0 (no mask) before any commit."""

    def __init__(self, f):
        self.f = f
        self.committed = 0.0
        self.commits = []
        self.refreshes = 0

    def committed_loss(self):
        return self.f(self.committed)

    def refresh_importance(self):
        self.refreshes += 1

    def candidate_loss(self, ratio):
        return self.f(ratio)

    def commit(self, ratio):
        self.committed = ratio
        self.commits.append(ratio)
        return ratio


def test_scorers_satisfy_protocol():
    assert isinstance(ScriptedScorer([], []), RatioScorer)


def test_policy_update_hand_computed_basic():
    # mean r = 0, a = [0.1, -0.1, 0], v = 0.01
    # g_mu = mean(0.1*(-0.1)/0.01, -0.1*0.1/0.01, 0) = -2/3;  g_sigma = mean(0.1*(1-1), -0.1*(1-1), 0*(0-1)) = 0
    mu, sigma, adv = policy_update(0.4, 0.1, 0.4, [0.3, 0.5, 0.4], [0.1, -0.1, 0.0], **KW)
    assert adv == pytest.approx([0.1, -0.1, 0.0])
    assert mu == pytest.approx(0.4 + 0.05 * (-2 / 3))
    assert sigma == pytest.approx(0.1 + 0.01)


def test_policy_update_hand_computed_kl_and_sigma():
    # mean r = 0.2, a = [0.1, -0.1], v = 0.04
    # g_mu = mean(0.1*0.2/0.04, -0.1*(-0.4)/0.04) = mean(0.5, 1.0) = 0.75
    # g_sigma = mean(0.1*(0.04/0.04-1), -0.1*(0.16/0.04-1)) = mean(0, -0.3) = -0.15
    # mu = 0.5 + 0.05*(0.75 - 0.05*(0.5-0.3)) = 0.537;  sigma = 0.2 - 0.05*0.15 + 0.01 = 0.2025
    mu, sigma, _ = policy_update(0.5, 0.2, 0.3, [0.7, 0.1], [0.3, 0.1], **KW)
    assert mu == pytest.approx(0.537)
    assert sigma == pytest.approx(0.2025)


def test_policy_update_variance_floor_clamp_and_sigma_floor():
    # sigma = 0.005: v = max(2.5e-5, 1e-4) = 1e-4; a = [0.5, -0.5]
    # g_mu = mean(0.5*0.01/1e-4, -0.5*(-0.01)/1e-4) = 50 -> mu = 0.4 + 0.05*50 = 2.9 -> clamped to 0.8
    # g_sigma = mean(0.5*(1e-4/1e-4 - 1), -0.5*(1e-4/1e-4 - 1)) = 0 -> sigma = 0.005 + 0.01
    mu, sigma, _ = policy_update(0.4, 0.005, 0.4, [0.41, 0.39], [1.0, 0.0], **KW)
    assert mu == 0.8
    assert sigma == pytest.approx(0.015)
    # g_sigma = mean(0.5*(0-1), -0.5*(0.04/0.0025-1)) = -4 -> sigma = 0.05 - 0.2 + 0.01 < 0 -> 1e-3
    mu, sigma, _ = policy_update(0.4, 0.05, 0.4, [0.4, 0.6], [1.0, 0.0], **KW)
    assert sigma == 1e-3
    # mu: g_mu = mean(0, -0.5*0.2/0.0025) = -20 -> 0.4 - 1.0 -> clamped to p_min
    assert mu == 0.1


def test_bounded_step():
    assert bounded_step(0.4, 0.75, 0.1, 0.1, 0.8) == pytest.approx(0.5)
    assert bounded_step(0.4, 0.33, 0.1, 0.1, 0.8) == pytest.approx(0.33)
    assert bounded_step(0.15, 0.0, 0.1, 0.1, 0.8) == pytest.approx(0.1)


def test_initial_state():
    c = GRPOController(ControllerConfig())
    assert c.p_c == 0.4 and c.policy.mu == 0.4
    assert c.policy.sigma == pytest.approx((0.8 - 0.1) / 6)
    assert c.committed_ratio is None and c.sparsity == 0.0 and c.history == []


def test_run_round_hand_computed():
    cfg = ControllerConfig(advantage="centered")  # the paper's step 5, computed by hand
    c = GRPOController(cfg)
    sigma0 = 0.7 / 6
    z = 0.4 + sigma0 * np.random.default_rng(42).standard_normal(3)  # the controller's stream
    rho = [min(max(float(x), 0.1), 0.8) for x in z]
    s = ScriptedScorer([1.0], [0.9, 1.2, 1.0])
    rec = c.run_round(10, s)
    assert rec["candidates"] == pytest.approx(rho)
    assert rec["losses"] == [0.9, 1.2, 1.0]
    assert rec["rewards"] == pytest.approx([0.1, -0.2, 0.0])
    assert rec["L0"] == 1.0 and rec["step"] == 10 and rec["round"] == 1
    a = [0.1 - (-0.1 / 3), -0.2 - (-0.1 / 3), 0.0 - (-0.1 / 3)]
    v = sigma0**2
    g_mu = sum(ai * (r - 0.4) / v for ai, r in zip(a, rho)) / 3
    g_sigma = sum(ai * ((r - 0.4) ** 2 / v - 1) for ai, r in zip(a, rho)) / 3
    assert rec["mu"] == pytest.approx(min(max(0.4 + 0.05 * g_mu, 0.1), 0.8))  # KL term 0: mu = p_c
    assert rec["sigma"] == pytest.approx(max(1e-3, sigma0 + 0.05 * g_sigma + 0.01))
    p_c = min(max(0.4 + min(max(rho[0] - 0.4, -0.1), 0.1), 0.1), 0.8)  # i* = 0 (r = 0.1 >= 0)
    assert rec["p_c"] == pytest.approx(p_c) and rec["committed_ratio"] == pytest.approx(p_c)
    assert s.committed == [pytest.approx(p_c)]
    assert rec["sparsity"] == pytest.approx(0.5 * p_c)
    # order of operations: L0, importance, the candidates, then the commit
    assert s.calls[:2] == ["L0", "refresh"] and [k[0] for k in s.calls[2:5]] == ["cand"] * 3
    assert s.calls[5][0] == "commit" and len(s.calls) == 6
    json.dumps(rec)  # a history line


def test_kl_term_uses_old_p_c():
    cfg = ControllerConfig()
    c = GRPOController(cfg)
    c.p_c = 0.3  # mu = 0.4 stays; the KL pull is towards the pre-commit p_c
    c.policy = GaussianPolicy(0.4, 0.1)
    s = ScriptedScorer([1.0], [2.0, 2.0, 2.0])  # equal rewards: zero advantages, no commit
    rec = c.run_round(10, s)
    assert rec["advantages"] == [0.0, 0.0, 0.0]
    assert rec["mu"] == pytest.approx(0.4 + 0.05 * (0 - 0.05 * 0.1))
    assert rec["sigma"] == pytest.approx(0.11)
    assert rec["committed_ratio"] is None and rec["p_c"] == 0.3 and s.committed == []


def test_all_negative_rewards_never_commit():
    c = GRPOController(ControllerConfig(seed=3))
    s = FnScorer(lambda r: 1.0 + r)  # any mask hurts: L_i > L0 = f(0)
    for i in range(15):
        rec = c.run_round(10 * (i + 1), s)
        assert rec["committed_ratio"] is None and max(rec["rewards"]) < 0
        assert rec["p_c"] == 0.4 and rec["sparsity"] == 0.0
    assert s.commits == [] and c.committed_ratio is None
    assert c.p_star("final") == 0.4
    assert c.result("final")["commits"] == 0


def test_moves_toward_peaked_reward():
    c = GRPOController(ControllerConfig(seed=0))
    s = FnScorer(lambda r: (r - 0.62) ** 2)
    prev = c.p_c
    for i in range(30):
        rec = c.run_round(10 * (i + 1), s)
        assert abs(rec["p_c"] - prev) <= 0.1 + 1e-12  # max step
        prev = rec["p_c"]
    assert abs(c.p_c - 0.62) < 0.05
    assert abs(c.policy.mu - 0.62) < 0.1
    assert c.p_star("final") == c.p_c
    assert s.commits[-1] == c.p_c  # fixed: the committed mask is the recorded ratio's


def test_same_seed_same_history_other_seed_differs():
    def run(seed):
        c = GRPOController(ControllerConfig(seed=seed))
        s = FnScorer(lambda r: (r - 0.5) ** 2 + 0.1 * math.sin(40 * r))
        for i in range(6):
            c.run_round(i, s)
        return c.history

    assert run(11) == run(11)
    assert run(11)[0]["candidates"] != run(12)[0]["candidates"]


def test_fidelity_authors_vs_fixed():
    jumped = False
    for fidelity in ("fixed", "authors"):
        c = GRPOController(ControllerConfig(seed=5, fidelity=fidelity))
        s = FnScorer(lambda r: 1.0 - abs(r - c.p_c))  # the farther from p_c, the better
        s.committed_loss = lambda: 1.0  # every candidate has reward |rho - p_c| >= 0: always commits
        for i in range(8):
            p_c_before = c.p_c
            rec = c.run_round(10 * (i + 1), s)
            best = rec["candidates"][rec["best"]]
            assert rec["best"] == int(np.argmax(rec["rewards"]))
            assert rec["p_c"] == pytest.approx(bounded_step(p_c_before, best, 0.1, 0.1, 0.8))
            if fidelity == "fixed":
                assert s.commits[-1] == rec["p_c"] == rec["committed_ratio"]
            else:
                assert s.commits[-1] == best == rec["committed_ratio"]  # the unbounded rho*
                jumped |= abs(best - rec["p_c"]) > 1e-9
        assert len(s.commits) == 8
        assert s.refreshes == (8 if fidelity == "fixed" else 1)
    assert jumped  # the test saw a round where the two rules commit different ratios


def test_p_star_rules():
    c = GRPOController(with_variant(ControllerConfig(), "authors"))
    c.history = [
        {"candidates": [0.2, 0.3], "losses": [1.0, 0.9], "rewards": [0.05, 0.15], "committed_ratio": 0.3, "p_c": 0.3},
        {"candidates": [0.55, 0.6], "losses": [0.7, 0.8], "rewards": [0.15, -0.1], "committed_ratio": None, "p_c": 0.3},
        {"candidates": [0.45, 0.5], "losses": [0.8, 0.85], "rewards": [0.01, 0.02], "committed_ratio": 0.4, "p_c": 0.4},
    ]
    assert c.p_star() == 0.55  # authors -> best_trial; reward tie 0.15 goes to the lower loss
    assert c.p_star("best_trial") == 0.55
    assert c.p_star("final") == 0.4
    c.history[2]["committed_ratio"] = None
    assert c.p_star("final") == 0.3
    c.history[1]["losses"] = [0.9, 0.8]  # full tie: the earlier wins
    assert c.p_star("best_trial") == 0.3
    assert GRPOController(ControllerConfig()).p_star() == 0.4  # nothing run: p_init
    with pytest.raises(ValueError):
        c.p_star("median")


def test_state_dict_resume_identical():
    f = lambda r: (r - 0.3) ** 2

    full = GRPOController(ControllerConfig(seed=9))
    s_full = FnScorer(f)
    for i in range(5):
        full.run_round(i, s_full)

    first = GRPOController(ControllerConfig(seed=9))
    s = FnScorer(f)
    for i in range(3):
        first.run_round(i, s)
    saved = json.loads(json.dumps(first.state_dict()))  # survives JSON
    resumed = GRPOController(ControllerConfig(seed=9))
    resumed.load_state_dict(saved)
    for i in range(3, 5):
        resumed.run_round(i, s)
    assert resumed.history == full.history
    assert (resumed.p_c, resumed.policy, resumed.round) == (full.p_c, full.policy, 5)


def test_non_finite_loss_raises():
    c = GRPOController(ControllerConfig())
    with pytest.raises(FloatingPointError):
        c.run_round(10, ScriptedScorer([1.0], [0.5, float("nan"), 0.7]))


def test_config_checks():
    with pytest.raises(ValueError):
        GRPOController(ControllerConfig(candidates=1))
    with pytest.raises(ValueError):
        GRPOController(ControllerConfig(fidelity="paper"))


def fit_history(curve, offsets, candidates):
    """Rounds whose losses are curve(rho) + that round's offset (the run trains between rounds)."""
    return [{"candidates": list(c), "losses": [curve(r) + off for r in c]} for off, c in zip(offsets, candidates)]


@pytest.mark.parametrize("best", [0.2, 0.55, 0.85])  # low, interior, high: the answer is no bound
def test_fit_rule_finds_the_minimum_of_a_curve_seen_through_shifting_rounds(best):
    from grasp_lora.controller.grpo import fitted_ratio

    curve = lambda r: 3.0 * (r - best) ** 2  # noqa: E731
    cands = [(0.1, 0.4, 0.7), (0.3, 0.6, 0.9), (0.15, 0.5, 0.95)]
    history = fit_history(curve, [1.0, 0.6, 0.3], cands)  # later rounds lower: training went on
    assert fitted_ratio(history, 0.1, 0.95) == pytest.approx(best, abs=1e-6)


def test_fit_rule_never_extrapolates_and_needs_three_ratios():
    from grasp_lora.controller.grpo import fitted_ratio

    down = lambda r: -r  # noqa: E731  best beyond every candidate: the highest one seen
    history = fit_history(down, [0.0, 0.0], [(0.3, 0.4, 0.5), (0.35, 0.45, 0.5)])
    assert fitted_ratio(history, 0.1, 0.95) == pytest.approx(0.5)
    assert fitted_ratio(history, 0.1, 0.42) == pytest.approx(0.42)  # and never beyond [p_min, p_max]
    assert fitted_ratio(fit_history(down, [0.0], [(0.3, 0.3, 0.5)]), 0.1, 0.95) is None


def test_fit_rule_in_the_controller_falls_back_to_final_without_three_ratios():
    c = GRPOController(ControllerConfig(p_star_rule="fit"))
    c.history = [{"candidates": [0.3, 0.3, 0.3], "losses": [1.0, 1.0, 1.0], "rewards": [0, 0, 0],
                  "committed_ratio": 0.35, "p_c": 0.35}]
    assert c.p_star() == 0.35
    c.history[0]["candidates"] = [0.2, 0.4, 0.6]
    c.history[0]["losses"] = [1.0, 0.9, 1.0]
    assert c.p_star() == pytest.approx(0.4)


@pytest.mark.parametrize("x, expected", [(0.5, 0.5), (0.85, 0.75), (0.05, 0.15), (0.8, 0.8), (0.1, 0.1),
                                         (1.55, 0.15), (-0.65, 0.75), (1.6, 0.2)])
def test_reflect_mirrors_at_each_bound_as_often_as_it_takes(x, expected):
    assert reflect(x, 0.1, 0.8) == pytest.approx(expected)


def test_reflected_draws_near_a_bound_are_distinct_where_clamped_ones_pile_up():
    def first_round(sampling):
        cfg = ControllerConfig(seed=3, p_init=0.8, candidates=8, sampling=sampling)
        c = GRPOController(cfg)
        c.policy.mu = 0.8  # the mean at the top bound: half the draws fall beyond it
        return c.run_round(10, FnScorer(lambda r: r))["candidates"]

    clamped, reflected = first_round("clamp"), first_round("reflect")
    assert clamped.count(0.8) >= 2 and len(set(reflected)) == 8 and max(reflected) < 0.8
    # the same draws (same generator): within the range they agree, beyond it the excess is mirrored
    draws = GaussianPolicy(0.8, 0.7 / 6).sample(np.random.default_rng(3), 8)
    for z, c, r in zip(draws, clamped, reflected):
        assert (c, r) == (pytest.approx((z, z)) if z <= 0.8 else (0.8, pytest.approx(1.6 - z)))


def test_max_mu_step_bounds_the_policy_mean_per_round_and_one_is_no_bound():
    # rewards that pull mu hard towards the top: unbounded it crosses most of the range at once
    cands, rewards = [0.2, 0.75], [-1.0, 1.0]
    free, _, _ = policy_update(0.3, 0.05, 0.3, cands, rewards, **KW, advantage="standardized")
    bounded, _, _ = policy_update(0.3, 0.05, 0.3, cands, rewards, **KW, advantage="standardized", max_mu_step=0.15)
    one, _, _ = policy_update(0.3, 0.05, 0.3, cands, rewards, **KW, advantage="standardized", max_mu_step=1.0)
    assert free > 0.6 and bounded == pytest.approx(0.45) and one == free
    down, _, _ = policy_update(0.7, 0.05, 0.7, cands, [1.0, -1.0], **KW, advantage="standardized", max_mu_step=0.15)
    assert down == pytest.approx(0.55)


def test_a_bounded_controller_never_moves_mu_more_than_its_bound():
    c = GRPOController(with_variant(ControllerConfig(seed=0), "bounded"))
    assert (c.cfg.sampling, c.cfg.max_mu_step) == ("reflect", 0.15)
    s = FnScorer(lambda r: -10 * r)  # the higher the better, steeply: the paper's policy jumps
    mus = [c.policy.mu]
    for i in range(6):
        rec = c.run_round(10 * (i + 1), s)
        assert all(c.cfg.p_min <= x < c.cfg.p_max for x in rec["candidates"])
        mus.append(rec["mu"])
    assert all(abs(b - a) <= 0.15 + 1e-12 for a, b in zip(mus, mus[1:]))
    assert mus[-1] > mus[0]  # it still goes where the reward is
