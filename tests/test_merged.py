"""Adaptive merge: adapter reading, compatibility checks, the merged module's math, plumbing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from grasp_lora.models.merged import (
    MergedLoRALinear,
    factor_groups,
    layer_index,
    merge_adapters,
    merge_loaded_adapters,
    merged_modules,
    set_dense,
    trainable_factors,
    unmerge,
)
from grasp_lora.models.merged_state import load_merged_factors, save_merged_factors
from grasp_lora.models.peft_adapter import AdapterError, AdapterMismatchError, LoraAdapter, read_adapter
from grasp_lora.models.tiny import tiny_model

import helpers

IDS = torch.tensor([[2, 40, 41, 77, 90, 101, 5, 66], [2, 9, 120, 33, 33, 200, 7, 1]])


def make_adapter(out: Path, seed: int, **kw) -> Path:
    return helpers.make_adapter(out, seed, **{"base": "tiny-llama", **kw})


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("adapters")
    return [make_adapter(root / "en", 1), make_adapter(root / "ar", 2)]


def logits(model: nn.Module) -> torch.Tensor:
    return helpers.logits_of(model, IDS)


# ---------------------------------------------------------------------------------------------
# reading


def test_read_adapter_gives_factors_per_module(adapters):
    ad = read_adapter(adapters[0])
    assert ad.r == 4 and ad.alpha == 16 and ad.peft_scaling == 4.0
    assert ad.target_modules == ["q_proj", "v_proj"]
    assert ad.base_model_name_or_path == "tiny-llama"
    assert ad.modules == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.v_proj",
        "model.layers.1.self_attn.q_proj",
        "model.layers.1.self_attn.v_proj",
    ]
    assert ad.A["model.layers.0.self_attn.q_proj"].shape == (4, 32)
    assert ad.B["model.layers.0.self_attn.v_proj"].shape == (16, 4)  # 2 kv heads x head_dim 8
    assert ad.A["model.layers.1.self_attn.q_proj"].dtype == torch.float32
    assert ad.B["model.layers.1.self_attn.q_proj"].abs().sum() > 0


def test_read_adapter_errors(tmp_path, adapters):
    with pytest.raises(AdapterError, match="not found"):
        read_adapter(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterError, match="adapter_config.json"):
        read_adapter(tmp_path / "empty")
    ia3 = tmp_path / "ia3"
    ia3.mkdir()
    (ia3 / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3", "r": 4}))
    with pytest.raises(AdapterError, match="not LORA"):
        read_adapter(ia3)
    dora = tmp_path / "dora"
    dora.mkdir()
    cfg = json.loads((adapters[0] / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    with pytest.raises(AdapterError, match="use_dora"):
        read_adapter(dora)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text(json.dumps(cfg))
    (broken / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(AdapterError, match=str(broken)):
        read_adapter(broken)


# ---------------------------------------------------------------------------------------------
# the module's math


def test_merged_module_equals_dense_formula_with_cross_terms():
    torch.manual_seed(0)
    d_in, d_out, r, K, c = 12, 10, 3, 3, 2.5
    base = nn.Linear(d_in, d_out, bias=True).double()
    As = [torch.randn(r, d_in) for _ in range(K)]
    Bs = [torch.randn(d_out, r) for _ in range(K)]
    mod = MergedLoRALinear(base, As, Bs, scaling=c)
    assert all(p.dtype == torch.float32 for p in [*mod.lora_A, *mod.lora_B])  # master weights
    x = torch.randn(5, 7, d_in, dtype=torch.float64)
    y = mod(x)
    assert y.dtype == torch.float64

    # The dense formula from the module's own (float32) values, in float64.
    A64 = [a.detach().double() for a in mod.lora_A]
    B64 = [b.detach().double() for b in mod.lora_B]
    W, bias = base.weight.detach(), base.bias.detach()
    dense = W + c * sum(B64) @ sum(A64)
    torch.testing.assert_close(y, x @ dense.T + bias, rtol=0, atol=1e-12)
    # The same thing written as all K^2 products B_i A_j: cross terms included ...
    all_pairs = W + c * sum(Bi @ Aj for Bi in B64 for Aj in A64)
    torch.testing.assert_close(y, x @ all_pairs.T + bias, rtol=0, atol=1e-12)
    # ... and they matter: the sum of the separate adapters is a different function.
    separate = W + c * sum(Bi @ Ai for Bi, Ai in zip(B64, A64))
    assert (y - (x @ separate.T + bias)).abs().max() > 1e-3


def test_dense_mode_equals_low_rank_outputs_and_grads():
    """The opt-in dense-ΔW forward (the authors' formulation, for benchmarks) is the same function
    with the same gradients as the default low-rank path; the default stays low-rank."""
    torch.manual_seed(0)
    d_in, d_out, r, K, c = 12, 10, 3, 2, 1.7
    base = nn.Linear(d_in, d_out, bias=True).double()
    As = [torch.randn(r, d_in) for _ in range(K)]
    Bs = [torch.randn(d_out, r) for _ in range(K)]
    low = MergedLoRALinear(base, As, Bs, scaling=c)
    dense = MergedLoRALinear(base, As, Bs, scaling=c, dense=True)
    assert not low.dense and dense.dense and "dense" in repr(dense)
    x = torch.randn(4, 5, d_in, dtype=torch.float64, requires_grad=True)
    outs, grads = [], []
    for mod in (low, dense):
        y = mod(x)
        (y * torch.linspace(-1, 1, d_out, dtype=torch.float64)).square().sum().backward()
        outs.append(y.detach())
        grads.append([p.grad.clone() for p in [*mod.lora_A, *mod.lora_B]] + [x.grad.clone()])
        x.grad = None
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-12, atol=1e-12)
    for g_low, g_dense in zip(*grads, strict=True):
        torch.testing.assert_close(g_low, g_dense, rtol=1e-10, atol=1e-10)


def test_dense_mode_on_a_merged_model(adapters):
    """merge_adapters(dense=True) and set_dense give the low-rank model's logits and factor grads."""
    low_model, _ = tiny_model("llama", 0)
    dense_model, _ = tiny_model("llama", 0)
    merge_adapters(low_model, adapters)
    merge_adapters(dense_model, adapters, dense=True)
    assert all(not m.dense for _, m in merged_modules(low_model))
    assert all(m.dense for _, m in merged_modules(dense_model))
    torch.testing.assert_close(logits(low_model), logits(dense_model), rtol=1e-5, atol=1e-5)
    for model in (low_model, dense_model):
        model(input_ids=IDS, labels=IDS).loss.backward()
    for p_low, p_dense in zip(trainable_factors(low_model), trainable_factors(dense_model), strict=True):
        assert p_low.grad.abs().sum() > 0
        torch.testing.assert_close(p_low.grad, p_dense.grad, rtol=1e-4, atol=1e-6)
    assert set_dense(dense_model, False) == 4
    assert all(not m.dense for _, m in merged_modules(dense_model))


def test_merged_module_low_precision_input_keeps_fp32_factors():
    base = nn.Linear(8, 6).to(torch.bfloat16)
    mod = MergedLoRALinear(base, [torch.randn(2, 8)], [torch.randn(6, 2)], scaling=1.0)
    y = mod(torch.randn(3, 8, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16
    assert mod.lora_A[0].dtype == torch.float32 and mod.weight is base.weight


def test_merged_module_rejects_bad_shapes():
    with pytest.raises(ValueError, match="do not fit"):
        MergedLoRALinear(nn.Linear(8, 6), [torch.randn(2, 7)], [torch.randn(6, 2)], 1.0)


# ---------------------------------------------------------------------------------------------
# plumbing


@pytest.mark.parametrize("scaling,c", [("none", 1.0), ("lora", 4.0)])
def test_merge_adapters_injects_freezes_and_matches_dense_model(adapters, scaling, c):
    model, _ = tiny_model("llama", 0)
    ref, _ = tiny_model("llama", 0)
    info = merge_adapters(model, adapters, scaling=scaling)
    assert info.scaling == c and info.scaling_mode == scaling
    assert info.r == 4 and info.alpha == 16 and info.num_adapters == 2
    assert info.target_modules == ["q_proj", "v_proj"] and info.base_model_name_or_path == "tiny-llama"
    assert info.adapter_dirs == [str(a) for a in adapters]

    mods = merged_modules(model)
    assert len(mods) == 4 and all(m.scaling == c and m.num_adapters == 2 for _, m in mods)
    factors = trainable_factors(model)
    assert len(factors) == 16 and all(p.requires_grad for p in factors)
    factor_ids = {id(p) for p in factors}
    base_params = [p for p in model.parameters() if id(p) not in factor_ids]
    assert base_params and not any(p.requires_grad for p in base_params)

    # End to end: the same logits as the backbone with W + c (ΣB)(ΣA) written into each weight.
    ads = [read_adapter(a) for a in adapters]
    with torch.no_grad():
        for path in ads[0].modules:
            lin = ref.get_submodule(path)
            lin.weight += c * sum(a.B[path] for a in ads) @ sum(a.A[path] for a in ads)
    torch.testing.assert_close(logits(model), logits(ref), rtol=0, atol=1e-5)

    # Gradients reach every factor and nothing else.
    model(input_ids=IDS, labels=IDS).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in factors)
    assert all(p.grad is None for p in base_params)


def test_factor_groups_in_module_order_with_layer_index(adapters):
    model, _ = tiny_model("llama", 0)
    merge_adapters(model, adapters)
    groups = factor_groups(model)
    assert [(g.name, g.layer_index) for g in groups] == [
        ("model.layers.0.self_attn.q_proj", 0),
        ("model.layers.0.self_attn.v_proj", 0),
        ("model.layers.1.self_attn.q_proj", 1),
        ("model.layers.1.self_attn.v_proj", 1),
    ]
    mod = model.get_submodule("model.layers.1.self_attn.v_proj")
    assert groups[3].A[1] is mod.lora_A[1] and groups[3].B[0] is mod.lora_B[0]
    assert layer_index("model.layers.12.self_attn.q_proj") == 12
    with pytest.raises(ValueError, match="layer index"):
        layer_index("encoder.q_proj")


def _assert_untouched(model: nn.Module) -> None:
    assert merged_modules(model) == []
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize(
    "kwargs,scaling,what",
    [
        ({"targets": ("q_proj",)}, "none", "target_modules"),
        ({"r": 2}, "none", "r 4 vs 2"),
        ({"base": "someone/other-model"}, "none", "base_model_name_or_path"),
        ({"alpha": 8}, "lora", "lora_alpha"),  # c = α/r would be ambiguous
    ],
)
def test_mismatch_raises_before_injection(tmp_path, adapters, kwargs, scaling, what):
    odd = make_adapter(tmp_path / "odd", 3, **kwargs)
    model, _ = tiny_model("llama", 0)
    with pytest.raises(AdapterMismatchError) as e:
        merge_adapters(model, [adapters[0], odd], scaling=scaling)
    msg = str(e.value)
    assert what in msg and str(adapters[0]) in msg and str(odd) in msg and "\n" not in msg
    _assert_untouched(model)


def test_empty_base_name_and_other_alpha_allowed_under_c1(tmp_path, adapters):
    anon = make_adapter(tmp_path / "anon", 4, base=None, alpha=8)
    model, _ = tiny_model("llama", 0)
    info = merge_adapters(model, [adapters[0], anon], scaling="none")  # c = 1: α plays no part
    assert info.base_model_name_or_path == "tiny-llama" and len(merged_modules(model)) == 4


def test_adapter_model_mismatch_raises_before_injection(adapters):
    ad = read_adapter(adapters[0])
    wrong = LoraAdapter(config=dict(ad.config), A={k: torch.zeros(4, 20) for k in ad.A},
                        B=dict(ad.B), path=Path("wrong-width"))
    model, _ = tiny_model("llama", 0)
    with pytest.raises(AdapterMismatchError, match="wrong-width.*is 32->32"):
        merge_loaded_adapters(model, [wrong])
    _assert_untouched(model)
    with pytest.raises(ValueError, match="scaling"):
        merge_adapters(model, adapters, scaling="alpha")
    _assert_untouched(model)


def test_merge_twice_refused_and_unmerge_restores(adapters):
    model, _ = tiny_model("llama", 0)
    before = logits(model)
    merge_adapters(model, adapters)
    assert (logits(model) - before).abs().max() > 1e-4
    with pytest.raises(ValueError, match="unmerge"):
        merge_adapters(model, adapters)
    unmerge(model)
    assert merged_modules(model) == []
    assert type(model.get_submodule("model.layers.0.self_attn.q_proj")) is nn.Linear
    torch.testing.assert_close(logits(model), before, rtol=0, atol=0)


def test_save_and_load_merged_factors(tmp_path, adapters):
    model, _ = tiny_model("llama", 0)
    info = merge_adapters(model, adapters, scaling="lora")
    with torch.no_grad():  # stand-in for training + pruning
        for p in trainable_factors(model):
            p.mul_(1.5)
            p.view(-1)[::3] = 0
    expected = logits(model)
    save_merged_factors(model, tmp_path / "state", info)
    assert (tmp_path / "state" / "merge_info.json").is_file()

    fresh, _ = tiny_model("llama", 0)
    loaded = load_merged_factors(fresh, tmp_path / "state")
    assert loaded.scaling == 4.0 and loaded.adapter_dirs == info.adapter_dirs
    torch.testing.assert_close(logits(fresh), expected, rtol=0, atol=0)
    assert not any(p.requires_grad for n, p in fresh.named_parameters() if ".base." in n or "lora_" not in n)

    # Into a merged model (resume): values copied in place, the Parameter objects survive.
    again, _ = tiny_model("llama", 0)
    merge_adapters(again, adapters, scaling="lora")
    ids_before = [id(p) for p in trainable_factors(again)]
    load_merged_factors(again, tmp_path / "state")
    assert [id(p) for p in trainable_factors(again)] == ids_before
    torch.testing.assert_close(logits(again), expected, rtol=0, atol=0)

    with pytest.raises(AdapterError, match="merge_info.json"):
        load_merged_factors(again, tmp_path)


def test_merge_on_gemma3_matches_dense_model():
    # The default model family (Gemma 3): same injection, same function as the dense weights.
    model, _ = tiny_model("gemma3", 0)
    ref, _ = tiny_model("gemma3", 0)
    g = torch.Generator().manual_seed(5)
    paths = [n for n, m in model.named_modules() if n.endswith(("q_proj", "v_proj"))]
    ads = []
    for k in range(2):
        A = {p: torch.randn(4, model.get_submodule(p).in_features, generator=g) * 0.2 for p in paths}
        B = {p: torch.randn(model.get_submodule(p).out_features, 4, generator=g) * 0.2 for p in paths}
        ads.append(LoraAdapter(config={"r": 4, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]},
                               A=A, B=B, path=Path(f"mem{k}")))
    merge_loaded_adapters(model, ads, scaling="none")
    assert [g_.layer_index for g_ in factor_groups(model)] == [0, 0, 1, 1]
    with torch.no_grad():
        for p in paths:
            ref.get_submodule(p).weight += sum(a.B[p] for a in ads) @ sum(a.A[p] for a in ads)
    torch.testing.assert_close(logits(model), logits(ref), rtol=0, atol=1e-5)
