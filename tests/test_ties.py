"""TIES baseline: PEFT's add_weighted_adapter(combination_type="ties"), saved as one PEFT folder."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from grasp_lora.baselines.ties import TIES_INFO, ties_merge
from grasp_lora.models.peft_adapter import AdapterMismatchError, read_adapter
from grasp_lora.models.tiny import tiny_model
from helpers import logits_of, make_adapter

IDS = torch.tensor([[2, 40, 41, 77, 90, 101, 5, 66]])
KEY = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"


def logits(model: nn.Module) -> torch.Tensor:
    return logits_of(model, IDS)


def test_ties_folder_loads_in_peft_and_changes_logits(tmp_path, adapters):
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    model, _ = tiny_model("llama", 0)
    base_logits = logits(model)
    out = ties_merge(model, adapters[0], adapters[1], tmp_path / "ties", density=0.5, weights=[1.0, 1.0])

    # The caller's model is plain again afterwards.
    assert not any(isinstance(m, LoraLayer) for m in model.modules())
    torch.testing.assert_close(logits(model), base_logits, rtol=0, atol=0)

    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", TIES_INFO]
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["lora_alpha"] == 4  # PEFT: same r, scaling 1
    side = json.loads((out / TIES_INFO).read_text())
    assert side["density"] == 0.5 and side["weights"] == [1.0, 1.0] and side["source_scaling"] == 4.0

    fresh, _ = tiny_model("llama", 0)
    merged = logits(PeftModel.from_pretrained(fresh, str(out)))
    assert (merged - base_logits).abs().max() > 1e-3


def _peft_ties_factor(tensors: list[torch.Tensor], weights: list[float], scaling: float, density: float, side: str):
    """PEFT's TIES on one factor, written out: trim each factor, elect the sign on the trimmed
    factors before weighting, then the weighted (sqrt-folded α/r) mean over the agreeing ones."""
    trimmed, factors = [], []
    for t, w in zip(tensors, weights):
        ws = w * scaling
        factors.append(abs(ws) ** 0.5 * ((1 if ws >= 0 else -1) if side == "A" else 1))
        keep = torch.zeros(t.numel(), dtype=torch.bool)
        if density < 1:
            keep[t.abs().flatten().topk(int(density * t.numel())).indices] = True
        else:
            keep[:] = True
        trimmed.append(t * keep.view_as(t))
    stack = torch.stack(trimmed)
    sign = torch.where(stack.sum(0) >= 0, 1.0, -1.0)
    agree = stack.sign() == sign
    weighted = stack * torch.tensor(factors).view(-1, 1, 1)
    return (weighted * agree).sum(0) / agree.sum(0).clamp(min=1)


def test_density_changes_result_as_peft_documents(tmp_path, adapters):
    model, _ = tiny_model("llama", 0)
    outs = {d: ties_merge(model, adapters[0], adapters[1], tmp_path / f"d{d}", density=d, weights=[1.0, 0.5])
            for d in (0.3, 1.0)}
    t = {d: load_file(str(o / "adapter_model.safetensors")) for d, o in outs.items()}
    assert not torch.equal(t[0.3][KEY], t[1.0][KEY])
    assert (t[0.3][KEY] == 0).float().mean() > (t[1.0][KEY] == 0).float().mean()

    # What the module docstring says PEFT does, checked on one module's A and B (weights -0.5
    # to exercise the sign going on A only).
    out = ties_merge(model, adapters[0], adapters[1], tmp_path / "neg", density=0.3, weights=[1.0, -0.5])
    t[-1] = load_file(str(out / "adapter_model.safetensors"))
    ads = [read_adapter(a) for a in adapters]
    path = "model.layers.0.self_attn.q_proj"
    for d, w in ((0.3, [1.0, 0.5]), (1.0, [1.0, 0.5]), (-1, [1.0, -0.5])):
        dens = 0.3 if d == -1 else d
        for side, factors in (("A", [a.A[path] for a in ads]), ("B", [a.B[path] for a in ads])):
            expected = _peft_ties_factor(factors, w, 4.0, dens, side)
            torch.testing.assert_close(t[d][KEY.replace("lora_A", f"lora_{side}")], expected, rtol=1e-6, atol=1e-6)


def test_mismatched_adapters_raise_before_peft(tmp_path, adapters):
    odd = make_adapter(tmp_path / "odd", 3, r=2)
    model, _ = tiny_model("llama", 0)
    with pytest.raises(AdapterMismatchError, match="r 4 vs 2"):
        ties_merge(model, adapters[0], odd, tmp_path / "ties")
    assert not (tmp_path / "ties").exists()
    with pytest.raises(ValueError, match="density"):
        ties_merge(model, adapters[0], adapters[1], tmp_path / "ties", density=0.0)
