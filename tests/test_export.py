"""Export of the merged (and pruned) factors as one standard PEFT LoRA folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from grasp_lora.models.export import EXPORT_INFO, export_peft
from grasp_lora.models.merged import merge_adapters, trainable_factors
from grasp_lora.models.tiny import tiny_model
from helpers import logits_of

IDS = torch.tensor([[2, 40, 41, 77, 90, 101, 5, 66], [2, 9, 120, 33, 33, 200, 7, 1]])


def logits(model: nn.Module) -> torch.Tensor:
    return logits_of(model, IDS)


def peft_logits(out_dir: Path) -> torch.Tensor:
    """Plain PEFT on a fresh base: no grasp-lora code involved in applying the adapter."""
    from peft import PeftModel

    base, _ = tiny_model("llama", 0)
    return logits(PeftModel.from_pretrained(base, str(out_dir)))


@pytest.mark.parametrize("scaling,c", [("none", 1.0), ("lora", 4.0)])
@pytest.mark.parametrize("pruned", [False, True])
def test_export_loads_in_peft_with_same_logits(tmp_path, adapters, scaling, c, pruned):
    model, _ = tiny_model("llama", 0)
    info = merge_adapters(model, adapters, scaling=scaling)
    if pruned:
        g = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for p in trainable_factors(model):
                p.masked_fill_(torch.rand(p.shape, generator=g) < 0.5, 0.0)
    ours = logits(model)
    out = export_peft(model, tmp_path / "export", "tiny-llama", extra={"merge": info.to_dict()})

    theirs = peft_logits(out)
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
    base, _ = tiny_model("llama", 0)
    assert (theirs - logits(base)).abs().max() > 1e-3  # the adapter does something

    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and cfg["lora_alpha"] / cfg["r"] == c
    assert cfg["lora_dropout"] == 0 and cfg["bias"] == "none" and cfg["task_type"] == "CAUSAL_LM"
    assert sorted(cfg["target_modules"]) == ["q_proj", "v_proj"]
    assert cfg["base_model_name_or_path"] == "tiny-llama"
    side = json.loads((out / EXPORT_INFO).read_text())
    assert side["scaling_c"] == c and side["num_adapters_merged"] == 2
    assert side["merge"]["adapter_dirs"] == [str(a) for a in adapters]
    if pruned:
        assert 0.45 < side["factor_sparsity"] < 0.55
    else:
        assert side["factor_sparsity"] == 0.0


def test_export_overwrites_atomically_and_needs_a_merged_model(tmp_path, adapters):
    model, _ = tiny_model("llama", 0)
    merge_adapters(model, adapters)
    out = tmp_path / "export"
    export_peft(model, out)
    with torch.no_grad():
        for p in trainable_factors(model):
            p.mul_(0.5)
    export_peft(model, out)  # replaces the old folder
    torch.testing.assert_close(peft_logits(out), logits(model), rtol=0, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temp folders left
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", EXPORT_INFO]

    plain, _ = tiny_model("llama", 0)
    with pytest.raises(ValueError, match="no merged LoRA modules"):
        export_peft(plain, tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()
