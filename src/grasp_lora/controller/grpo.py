"""The GRPO sparsity controller (METHOD.md, "The GRASP controller"). No model code: it talks to a `RatioScorer`.

State: committed ratio p_c and a Gaussian policy N(mu, sigma^2) over ratios. Each round:
 1. L0 = micro-dev loss with the committed mask;
 2. importance refresh (every round under `fidelity: fixed`; only the first round under `authors`);
 3. C candidates rho_i = clamp(z_i, p_min, p_max), z_i ~ N(mu, sigma^2), own seeded generator
    (`sampling: reflect`: z_i folded back into the range instead);
 4. L_i = loss with candidate i's mask, r_i = L0 - L_i;
 5. a_i = r_i - mean(r), v = max(sigma^2, 1e-4),
    g_mu = mean(a_i (rho_i - mu) / v),  g_sigma = mean(a_i ((rho_i - mu)^2 / v - 1)),
    mu <- clamp(mu + eta (g_mu - beta (mu - p_c)), p_min, p_max)   (the move bounded by max_mu_step),
    sigma <- max(1e-3, sigma + eta g_sigma + lambda)       (old mu, sigma, p_c on the right);
 6. i* = argmax r (first on ties); if r_i* >= 0:
    p_c <- clamp(p_c + clip(rho_i* - p_c, -Delta, Delta), p_min, p_max) and commit the mask at the
    new p_c (fixed) or at candidate i*'s own rho_i* (authors); else keep p_c and the mask;
 7. one history record.
Every process runs the same generator from the same seed and sees the same (all-reduced) losses,
so every process takes the same decisions.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from grasp_lora.config import ControllerConfig

__all__ = [
    "GaussianPolicy",
    "RatioScorer",
    "GRPOController",
    "policy_update",
    "bounded_step",
    "clamp",
    "reflect",
    "fitted_ratio",
    "SIGMA_FLOOR",
    "VARIANCE_FLOOR",
]

SIGMA_FLOOR = 1e-3
VARIANCE_FLOOR = 1e-4
STD_FLOOR = 1e-12  # rewards whose spread is below this are equal: no direction to learn


def clamp(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


def reflect(x: float, lo: float, hi: float) -> float:
    """x folded back into [lo, hi] at its bounds, as often as it takes (a mirror at each bound).
    Unlike clamping, draws beyond a bound do not pile up on the bound itself."""
    width = hi - lo
    y = (x - lo) % (2.0 * width)
    return lo + (y if y <= width else 2.0 * width - y)


@dataclass
class GaussianPolicy:
    mu: float
    sigma: float

    def sample(self, rng: np.random.Generator, n: int) -> list[float]:
        """n draws z ~ N(mu, sigma^2): mu + sigma * standard normal, from `rng`."""
        return [self.mu + self.sigma * float(e) for e in rng.standard_normal(n)]


@runtime_checkable
class RatioScorer(Protocol):
    def committed_loss(self) -> float:
        """L0: micro-dev loss of the model with the committed mask."""
        ...

    def refresh_importance(self) -> None:
        """Recompute importance (magnitude of the current weights) for the coming masks."""
        ...

    def candidate_loss(self, ratio: float) -> float:
        """Loss with the mask at `ratio` (from the current importance) in place of the committed
        one; the weights are restored exactly afterwards."""
        ...

    def commit(self, ratio: float) -> float:
        """Commit the mask at `ratio` from this round's importance; returns its real sparsity."""
        ...


def policy_update(
    mu: float,
    sigma: float,
    p_c: float,
    candidates: Sequence[float],
    rewards: Sequence[float],
    *,
    lr: float,
    kl_coef: float,
    entropy_bonus: float,
    p_min: float,
    p_max: float,
    advantage: str = "centered",
    max_mu_step: float = 1.0,
) -> tuple[float, float, list[float]]:
    """Step 5 of METHOD.md, "The GRASP controller". Returns (new mu, new sigma, advantages). Inputs
    are the values before the update (mu, sigma and p_c of this round, before its commit).

    advantage: "centered" (the paper: a_i = r_i - mean r) or "standardized" (GRPO's
    (r_i - mean r) / std r, population std; all zero when the rewards are all equal), which makes
    the step size independent of the rewards' scale (micro-dev loss differences of ~0.01).
    max_mu_step bounds |new mu - mu| (1.0: no bound in a range within [0, 1])."""
    n = len(candidates)
    if n == 0 or n != len(rewards):
        raise ValueError(f"need as many rewards as candidates (>= 1), got {n} and {len(rewards)}")
    mean_r = sum(rewards) / n
    adv = [r - mean_r for r in rewards]
    if advantage == "standardized":
        std = math.sqrt(sum(a * a for a in adv) / n)
        adv = [a / std if std > STD_FLOOR else 0.0 for a in adv]
    elif advantage != "centered":
        raise ValueError(f"advantage must be centered or standardized, got {advantage!r}")
    v = max(sigma * sigma, VARIANCE_FLOOR)
    g_mu = sum(a * (rho - mu) / v for a, rho in zip(adv, candidates)) / n
    g_sigma = sum(a * ((rho - mu) ** 2 / v - 1.0) for a, rho in zip(adv, candidates)) / n
    new_mu = clamp(mu + clamp(lr * (g_mu - kl_coef * (mu - p_c)), -max_mu_step, max_mu_step), p_min, p_max)
    new_sigma = max(SIGMA_FLOOR, sigma + lr * g_sigma + entropy_bonus)
    return new_mu, new_sigma, adv


def fitted_ratio(history: Sequence[dict[str, Any]], lo: float, hi: float) -> Optional[float]:
    """`p_star_rule: fit`: the ratio that minimises a quadratic fitted to every scored candidate of
    the run, with one intercept per round (losses are comparable within a round only: the run
    trains between rounds). The minimum is searched within the candidates' own range, clipped to
    [lo, hi], so the rule never extrapolates. None when the candidates span fewer than 3 distinct
    ratios (nothing to fit; the caller falls back to `final`)."""
    rows = [(r, float(rho), float(loss)) for r, rec in enumerate(history)
            for rho, loss in zip(rec["candidates"], rec["losses"])]
    ratios = sorted({rho for _, rho, _ in rows})
    if len(ratios) < 3:
        return None
    rounds = len(history)
    x = np.zeros((len(rows), rounds + 2))
    y = np.array([loss for _, _, loss in rows])
    for i, (r, rho, _) in enumerate(rows):
        x[i, r], x[i, rounds], x[i, rounds + 1] = 1.0, rho, rho * rho
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    a1, a2 = float(coef[rounds]), float(coef[rounds + 1])
    left, right = max(lo, ratios[0]), min(hi, ratios[-1])
    if left > right:
        return None
    ends = sorted([left, right], key=lambda p: a1 * p + a2 * p * p)
    if a2 > 0:
        vertex = -a1 / (2 * a2)
        if left <= vertex <= right:
            return float(vertex)
    return float(ends[0])


def bounded_step(p_c: float, target: float, max_step: float, p_min: float, p_max: float) -> float:
    """clamp(p_c + clip(target - p_c, -max_step, max_step), p_min, p_max)."""
    return clamp(p_c + clamp(target - p_c, -max_step, max_step), p_min, p_max)


SAMPLING = {"clamp": clamp, "reflect": reflect}  # controller.sampling: a draw outside the range -> a candidate


class GRPOController:
    def __init__(self, cfg: ControllerConfig) -> None:
        if not (0 <= cfg.p_min < cfg.p_max < 1):
            raise ValueError(f"controller: need 0 <= p_min < p_max < 1, got {cfg.p_min}, {cfg.p_max}")
        if not (cfg.p_min <= cfg.p_init <= cfg.p_max):
            raise ValueError(f"controller: p_init {cfg.p_init} outside [{cfg.p_min}, {cfg.p_max}]")
        if cfg.candidates < 2:
            raise ValueError(f"controller: candidates must be >= 2, got {cfg.candidates}")
        if cfg.sampling not in SAMPLING:
            raise ValueError(f"controller: sampling must be one of {sorted(SAMPLING)}, got {cfg.sampling!r}")
        if cfg.fidelity not in ("fixed", "authors"):
            raise ValueError(f"controller: fidelity must be fixed or authors, got {cfg.fidelity!r}")
        self.cfg = cfg
        self.p_c: float = float(cfg.p_init)
        self.policy = GaussianPolicy(mu=float(cfg.p_init), sigma=(cfg.p_max - cfg.p_min) / 6.0)
        # Own generator: the same stream on every process, untouched by anyone else's sampling.
        self.rng = np.random.default_rng(cfg.seed)
        self.round = 0
        self.history: list[dict[str, Any]] = []
        self.committed_ratio: Optional[float] = None  # ratio of the committed mask (None: no mask)
        self.sparsity: float = 0.0  # real sparsity of the committed mask
        self.importance_ready = False

    @property
    def fidelity(self) -> str:
        return self.cfg.fidelity

    def run_round(self, step: int, scorer: RatioScorer) -> dict[str, Any]:
        cfg = self.cfg
        mu, sigma, p_c = self.policy.mu, self.policy.sigma, self.p_c

        # 1. baseline loss with the committed mask
        l0 = float(scorer.committed_loss())
        # 2. importance: every round (fixed), or once and reused (authors)
        if cfg.fidelity == "fixed" or not self.importance_ready:
            scorer.refresh_importance()
            self.importance_ready = True
        # 3. candidates
        z = self.policy.sample(self.rng, cfg.candidates)
        candidates = [SAMPLING[cfg.sampling](zi, cfg.p_min, cfg.p_max) for zi in z]
        # 4. score each candidate mask (the scorer restores the weights after each)
        losses = [float(scorer.candidate_loss(rho)) for rho in candidates]
        rewards = [l0 - li for li in losses]
        if not all(math.isfinite(x) for x in [l0, *losses]):
            raise FloatingPointError(
                f"controller round {self.round + 1} (step {step}): non-finite micro-dev loss "
                f"(L0={l0}, candidates={losses}); the model has diverged"
            )
        # 5. policy update with the old mu, sigma, p_c
        new_mu, new_sigma, adv = policy_update(
            mu, sigma, p_c, candidates, rewards,
            lr=cfg.policy_lr, kl_coef=cfg.kl_coef, entropy_bonus=cfg.entropy_bonus,
            p_min=cfg.p_min, p_max=cfg.p_max, advantage=cfg.advantage, max_mu_step=cfg.max_mu_step,
        )
        self.policy.mu, self.policy.sigma = new_mu, new_sigma
        # 6. commit
        best = max(range(len(rewards)), key=lambda i: (rewards[i], -i))  # first index on ties
        committed: Optional[float] = None
        if rewards[best] >= 0:
            self.p_c = bounded_step(p_c, candidates[best], cfg.max_step, cfg.p_min, cfg.p_max)
            committed = self.p_c if cfg.fidelity == "fixed" else candidates[best]
            self.sparsity = float(scorer.commit(committed))
            self.committed_ratio = committed
        self.round += 1
        # 7. history
        record = {
            "step": int(step),
            "round": self.round,
            "p_c": self.p_c,
            "mu": self.policy.mu,
            "sigma": self.policy.sigma,
            "candidates": candidates,
            "losses": losses,
            "rewards": rewards,
            "advantages": adv,
            "L0": l0,
            "best": best,
            "committed_ratio": committed,
            "sparsity": self.sparsity,
        }
        self.history.append(record)
        return copy.deepcopy(record)

    # -- result ------------------------------------------------------------------------------
    def p_star(self, rule: Optional[str] = None) -> float:
        """The controller's answer.

        final: the p_c recorded at the last round that committed (p_init when no round ever
        committed: the policy then never found a ratio that did not hurt; `result()` says so).
        best_trial: the candidate ratio with the largest reward over all rounds, ties to the lower
        loss, then to the earliest (p_init when no round ran).
        fit: the minimum of a quadratic in the ratio fitted to every candidate's loss with one
        intercept per round (`fitted_ratio`); `final` when fewer than 3 distinct ratios were scored.
        """
        rule = rule or self.cfg.p_star_rule
        if rule == "final":
            for rec in reversed(self.history):
                if rec["committed_ratio"] is not None:
                    return float(rec["p_c"])
            return float(self.cfg.p_init)
        if rule == "best_trial":
            best: Optional[tuple[float, float]] = None
            best_ratio = float(self.cfg.p_init)
            for rec in self.history:
                for rho, loss, r in zip(rec["candidates"], rec["losses"], rec["rewards"]):
                    key = (r, -loss)
                    if best is None or key > best:  # strict: earlier wins on full ties
                        best, best_ratio = key, float(rho)
            return best_ratio
        if rule == "fit":
            fitted = fitted_ratio(self.history, self.cfg.p_min, self.cfg.p_max)
            return self.p_star("final") if fitted is None else fitted
        raise ValueError(f"p* rule must be final, best_trial or fit, got {rule!r}")

    def result(self, rule: Optional[str] = None) -> dict[str, Any]:
        rule = rule or self.cfg.p_star_rule
        return {
            "p_star": self.p_star(rule),
            "rule": rule,
            "fidelity": self.cfg.fidelity,
            "rounds": self.round,
            "commits": sum(1 for r in self.history if r["committed_ratio"] is not None),
            "committed_ratio": self.committed_ratio,
            "sparsity": self.sparsity,
        }

    # -- resume ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: policy, p_c, round, generator state, history."""
        return {
            "mu": self.policy.mu,
            "sigma": self.policy.sigma,
            "p_c": self.p_c,
            "round": self.round,
            "rng": copy.deepcopy(self.rng.bit_generator.state),
            "history": copy.deepcopy(self.history),
            "committed_ratio": self.committed_ratio,
            "sparsity": self.sparsity,
            "importance_ready": self.importance_ready,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy = GaussianPolicy(mu=float(state["mu"]), sigma=float(state["sigma"]))
        self.p_c = float(state["p_c"])
        self.round = int(state["round"])
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = copy.deepcopy(state["rng"])
        self.history = copy.deepcopy(list(state["history"]))
        cr = state.get("committed_ratio")
        self.committed_ratio = None if cr is None else float(cr)
        self.sparsity = float(state.get("sparsity", 0.0))
        self.importance_ready = bool(state.get("importance_ready", self.round > 0))
