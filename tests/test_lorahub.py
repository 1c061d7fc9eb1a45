"""LoRAHub baseline: the nevergrad search, the combination math, and the written PEFT folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from grasp_lora.baselines.lorahub import (
    LORAHUB_INFO,
    attach_combination,
    combine_adapters,
    lorahub_merge,
    lorahub_search,
    write_peft_adapter,
)
from grasp_lora.config import LoraHubConfig
from grasp_lora.models.merged import merged_modules, unmerge
from grasp_lora.models.peft_adapter import AdapterMismatchError, read_adapter
from grasp_lora.models.tiny import tiny_model
from helpers import logits_of, make_adapter

IDS = torch.tensor([[2, 40, 41, 77, 90, 101, 5, 66], [2, 9, 120, 33, 33, 200, 7, 1]])


def logits(model: nn.Module) -> torch.Tensor:
    return logits_of(model, IDS)


TARGET = np.array([0.7, -0.4, 1.1])


def quadratic(w: np.ndarray) -> float:
    return float(((w - TARGET) ** 2).sum())


def test_search_finds_the_optimum_of_a_quadratic_and_is_seeded():
    cfg = LoraHubConfig(steps=60, l1=0.0)
    w, history = lorahub_search(3, quadratic, cfg, seed=42)
    assert np.abs(w - TARGET).max() < 0.05
    assert len(history) == 60
    assert all(cfg.weight_min <= x <= cfg.weight_max for h in history for x in h["weights"])
    # Returned weights are the best evaluated point.
    assert quadratic(w) == min(h["objective"] for h in history)
    w2, history2 = lorahub_search(3, quadratic, cfg, seed=42)
    assert np.array_equal(w, w2) and history == history2


def test_l1_term_is_applied():
    # argmin (w - t)^2 + l1 |w| is soft thresholding: t - sign(t) l1/2, and 0 where |t| <= l1/2.
    target = np.array([1.0, 0.1])
    cfg = LoraHubConfig(steps=80, l1=0.5)
    w, history = lorahub_search(2, lambda w: float(((w - target) ** 2).sum()), cfg, seed=0)
    # The penalised optimum, not the unpenalised one [1.0, 0.1]; the small coordinate is cut to 0.
    assert np.abs(w - np.array([0.75, 0.0])).max() < 0.1 and abs(w[1]) < 0.02
    for h in history:
        assert h["l1_penalty"] == pytest.approx(0.5 * np.abs(h["weights"]).sum())
        assert h["objective"] == pytest.approx(h["loss"] + h["l1_penalty"])


def test_search_rejects_unknown_optimizer():
    with pytest.raises(ValueError, match="NoSuchOptimizer"):
        lorahub_search(2, quadratic, LoraHubConfig(optimizer="NoSuchOptimizer"), seed=0)


def test_combine_math(adapters, tmp_path):
    ads = [read_adapter(a) for a in adapters]
    w = [0.5, -2.0]
    comb = combine_adapters(ads, w)
    assert comb.r == 4 and comb.alpha == 16 and comb.peft_scaling == 4.0
    for m in ads[0].modules:
        torch.testing.assert_close(comb.A[m], 0.5 * ads[0].A[m] - 2.0 * ads[1].A[m])
        torch.testing.assert_close(comb.B[m], 0.5 * ads[0].B[m] - 2.0 * ads[1].B[m])
    with pytest.raises(ValueError, match="3 weights for 2 adapters"):
        combine_adapters(ads, [1.0, 1.0, 1.0])
    odd = read_adapter(make_adapter(tmp_path / "odd", 3, alpha=8))
    with pytest.raises(AdapterMismatchError, match="lora_alpha"):
        combine_adapters([ads[0], odd], w)


def test_written_folder_loads_in_peft(adapters, tmp_path):
    from peft import PeftModel

    ads = [read_adapter(a) for a in adapters]
    comb = combine_adapters(ads, [0.3, 0.9])
    out = write_peft_adapter(comb, tmp_path / "hub", side_info={"weights": [0.3, 0.9]}, side_file=LORAHUB_INFO)
    base, _ = tiny_model("llama", 0)
    theirs = logits(PeftModel.from_pretrained(base, str(out)))

    # Reference: each weight W + (α/r) B A of the combined factors, without PEFT.
    ref, _ = tiny_model("llama", 0)
    with torch.no_grad():
        for m in comb.modules:
            ref.get_submodule(m).weight += 4.0 * comb.B[m] @ comb.A[m]
    torch.testing.assert_close(theirs, logits(ref), rtol=0, atol=1e-5)

    # attach_combination computes the same function in place, for any w.
    model, _ = tiny_model("llama", 0)
    set_weights = attach_combination(model, ads)
    set_weights(np.array([0.3, 0.9]))
    torch.testing.assert_close(logits(model), theirs, rtol=0, atol=1e-5)
    plain, _ = tiny_model("llama", 0)
    set_weights(np.zeros(2))  # w = 0: no adapter at all
    torch.testing.assert_close(logits(model), logits(plain), rtol=0, atol=0)
    set_weights(np.array([0.3, 0.9]))
    unmerge(model)
    torch.testing.assert_close(logits(model), logits(plain), rtol=0, atol=0)


def test_lorahub_merge_end_to_end(adapters, tmp_path):
    from peft import PeftModel

    model, _ = tiny_model("llama", 0)
    cfg = LoraHubConfig(steps=12, l1=0.05)
    seen: list[float] = []

    def loss_of_model(m: nn.Module) -> float:
        with torch.no_grad():
            loss = float(m(input_ids=IDS, labels=IDS).loss)
        seen.append(loss)
        return loss

    res = lorahub_merge(model, adapters, loss_of_model, cfg, tmp_path / "hub", seed=42)
    assert len(seen) == 12 and len(res.history) == 12 and res.scaling == 4.0
    assert merged_modules(model) == []  # left plain

    side = json.loads((tmp_path / "hub" / LORAHUB_INFO).read_text())
    assert side["weights"] == res.weights.tolist() and side["scaling"] == 4.0 and side["l1"] == 0.05
    best = min(res.history, key=lambda h: h["objective"])
    assert best["weights"] == res.weights.tolist()

    # Loading the written adapter with plain PEFT reproduces the loss measured for those weights.
    fresh, _ = tiny_model("llama", 0)
    pm = PeftModel.from_pretrained(fresh, str(tmp_path / "hub"))
    with torch.no_grad():
        loss = float(pm(input_ids=IDS, labels=IDS).loss)
    assert loss == pytest.approx(best["loss"], abs=1e-5)
