import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from grasp_lora.io import Timer
from grasp_lora.pruning.groups import FactorGroup
from grasp_lora.pruning.importance import input_aware_importance, unit_rms_normalize
from grasp_lora.pruning.input_norms import InputNormAccumulator, LayerInputHooks, find_decoder_layers
from grasp_lora.pruning.masks import prune_mask
from grasp_lora.pruning.pruner import (
    FixedRatioPruner,
    FullPassNorms,
    TrainForwardNorms,
    compute_masks,
    magnitude_group_importance,
    make_norms_source,
    zero_masks_at_ratio,
)

D, R = 6, 2


class ToyLayer(nn.Module):
    """A decoder-ish layer with a LoRA-style low-rank path (A: r x d, B: d x r)."""

    def __init__(self, g):
        super().__init__()
        self.A = nn.Parameter(torch.randn(R, D, generator=g) + 0.01)
        self.B = nn.Parameter(torch.randn(D, R, generator=g) + 0.01)

    def forward(self, hidden_states, attention_mask=None):
        return hidden_states + 0.1 * torch.tanh(hidden_states @ self.A.t() @ self.B.t())


class ToyModel(nn.Module):
    def __init__(self, seed=0, n_layers=2):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed = nn.Embedding(11, D)
        with torch.no_grad():
            self.embed.weight.copy_(torch.randn(11, D, generator=g) * 3)
        self.model = nn.Module()
        self.model.layers = nn.ModuleList([ToyLayer(g) for _ in range(n_layers)])

    def layer_inputs(self, input_ids):
        h = self.embed(input_ids)
        ins = []
        for layer in self.model.layers:
            ins.append(h)
            h = layer.forward(h)  # .forward: bypasses the hooks under test
        return ins

    def forward(self, input_ids, attention_mask=None):
        h = self.embed(input_ids)
        for i, layer in enumerate(self.model.layers):
            # layer 0 gets the hidden state positionally, the others as a keyword
            h = layer(h, attention_mask=attention_mask) if i == 0 else layer(hidden_states=h, attention_mask=attention_mask)
        return h

    def groups(self):
        return [FactorGroup(f"layers.{i}.lora", i, [l.A], [l.B]) for i, l in enumerate(self.model.layers)]


def manual_sums(model, batches):
    """sum over real tokens of unit_rms(h)^2 per layer, computed independently of the hooks."""
    out = {}
    with torch.no_grad():
        for ids, mask in batches:
            for i, h in enumerate(model.layer_inputs(ids)):
                sq = unit_rms_normalize(h).square()
                if mask is not None:
                    sq = sq[mask.bool()]
                s = sq.reshape(-1, D).sum(0)
                out[i] = out.get(i, 0) + s
    return out


IDS = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])


def test_accumulator_sums_masks_and_resets():
    acc = InputNormAccumulator()
    h = torch.tensor([[[3.0, 4.0], [1.0, 1.0]]])
    acc.add(0, h)
    acc.add(0, h, token_mask=torch.tensor([[1, 0]]))
    u = unit_rms_normalize(h)[0]
    expected = 2 * u[0].square() + u[1].square()
    torch.testing.assert_close(acc.sum_of_squares(0), expected)
    torch.testing.assert_close(acc.norms(0), expected.sqrt())
    assert acc.tokens(0) == 3 and acc.has(0) and not acc.has(1) and acc.layers() == [0]
    with pytest.raises(ValueError, match="token mask shape"):
        acc.add(0, h, token_mask=torch.ones(1, 3))
    acc.reset()
    assert not acc.has(0) and acc.layers() == []
    with pytest.raises(KeyError):
        acc.norms(0)


def test_hooks_match_manual_and_exclude_padding():
    model = ToyModel()
    acc = InputNormAccumulator()
    hooks = LayerInputHooks(find_decoder_layers(model), acc, mask_source=model)
    with torch.no_grad():
        ref = model(IDS, attention_mask=MASK)
    hooks.enable()
    out = model(IDS, attention_mask=MASK)  # with grad
    assert torch.equal(out.detach(), ref)  # the hooks never change the forward
    exp = manual_sums(model, [(IDS, MASK)])
    for i in (0, 1):
        torch.testing.assert_close(acc.sum_of_squares(i), exp[i])
    assert acc.tokens(0) == 6
    # the same again under no_grad, positional attention mask this time
    acc.reset()
    with torch.no_grad():
        model(IDS, MASK)
    for i in (0, 1):
        torch.testing.assert_close(acc.sum_of_squares(i), exp[i])
    # padding matters: without a mask every token counts
    acc.reset()
    with torch.no_grad():
        model(IDS)
    assert not torch.allclose(acc.sum_of_squares(0), exp[0])
    torch.testing.assert_close(acc.sum_of_squares(0), manual_sums(model, [(IDS, None)])[0])
    # disable / remove
    acc.reset()
    hooks.disable()
    model(IDS)
    assert acc.layers() == []
    hooks.enable()
    hooks.remove()
    model(IDS)
    assert acc.layers() == []


def test_manual_token_mask_and_grad_only():
    model = ToyModel()
    acc = InputNormAccumulator()
    hooks = LayerInputHooks(model.model.layers, acc, grad_forwards_only=True)
    hooks.enable()
    hooks.set_token_mask(MASK)
    with torch.no_grad():
        model(IDS)  # not a training forward: ignored
    assert acc.layers() == []
    model(IDS)
    torch.testing.assert_close(acc.sum_of_squares(1), manual_sums(model, [(IDS, MASK)])[1])


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_hooks_on_tiny_models_match_hidden_states(arch):
    from grasp_lora.models.tiny import tiny_model

    model, _ = tiny_model(arch, seed=0)
    layers = find_decoder_layers(model)
    assert len(layers) == 2
    acc = InputNormAccumulator()
    hooks = LayerInputHooks(layers, acc, mask_source=model)
    hooks.enable()
    ids = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    for i in range(2):
        h = out.hidden_states[i]  # the input of decoder layer i
        exp = unit_rms_normalize(h).square()[mask.bool()].sum(0)
        torch.testing.assert_close(acc.sum_of_squares(i), exp, rtol=1e-5, atol=1e-5)
    hooks.remove()


def test_find_decoder_layers_variants():
    base = ToyModel()
    assert find_decoder_layers(base) is base.model.layers
    wrapper = nn.Module()  # PEFT-style: base_model.model.model.layers
    wrapper.base_model = nn.Module()
    wrapper.base_model.model = base
    assert find_decoder_layers(wrapper) is base.model.layers
    mm = nn.Module()  # multimodal: the vision tower's encoder layers are skipped
    mm.vision_tower = nn.Module()
    mm.vision_tower.encoder = nn.Module()
    mm.vision_tower.encoder.layers = nn.ModuleList([nn.Linear(2, 2)])
    mm.language_model = base
    assert find_decoder_layers(mm) is base.model.layers
    with pytest.raises(ValueError, match="no ModuleList named 'layers'"):
        find_decoder_layers(nn.Linear(2, 2))
    two = nn.Module()
    two.a, two.b = ToyModel(), ToyModel()
    with pytest.raises(ValueError, match="several"):
        find_decoder_layers(two)


class FixedNorms:
    def __init__(self, norms):
        self.norms = norms
        self.calls = 0

    def norms_for_step(self):
        self.calls += 1
        return self.norms


def test_pruner_zeroes_lowest_input_aware_entries():
    model = ToyModel(seed=1)
    groups = model.groups()
    g = torch.Generator().manual_seed(5)
    norms = {0: torch.rand(D, generator=g) + 0.1, 1: torch.rand(D, generator=g) + 0.1}
    before = [(l.A.detach().clone(), l.B.detach().clone()) for l in model.model.layers]
    pruner = FixedRatioPruner(groups, 0.5, FixedNorms(norms))
    state = SimpleNamespace(step=1, timer=Timer())
    pruner.on_optimizer_step(state)
    assert "pruning" in state.timer.timings
    for i, layer in enumerate(model.model.layers):
        A0, B0 = before[i]
        ia, ib = input_aware_importance(A0, B0, norms[i])  # from the PRE-pruning A and B
        ma, mb = prune_mask(ia, 0.5), prune_mask(ib, 0.5)
        assert int(ma.sum()) == math.floor(0.5 * R * D) and int(mb.sum()) == math.floor(0.5 * D * R)
        assert torch.equal(layer.A.detach(), A0.masked_fill(ma, 0))
        assert torch.equal(layer.B.detach(), B0.masked_fill(mb, 0))


def test_pruner_recomputes_every_step_and_revived_entries_survive():
    model = ToyModel(seed=2)
    layer = model.model.layers[0]
    norms = {0: torch.ones(D), 1: torch.ones(D)}
    pruner = FixedRatioPruner(model.groups(), 0.25, FixedNorms(norms))
    pruner.on_optimizer_step(SimpleNamespace(step=1))
    first = layer.A.detach() == 0
    assert int(first.sum()) == 3
    # a "gradient step" revives the pruned entries of A with large values
    with torch.no_grad():
        layer.A[first] = 50.0
    revived, b_before = layer.A.detach().clone(), layer.B.detach().clone()
    pruner.on_optimizer_step(SimpleNamespace(step=2))
    ia, _ = input_aware_importance(revived, b_before, norms[0])
    m = prune_mask(ia, 0.25)
    assert torch.equal(layer.A.detach(), revived.masked_fill(m, 0))
    assert (layer.A.detach()[first] != 0).any()  # not blindly re-zeroed from a stash
    assert pruner.norms_source.calls == 2


def test_ratio_zero_and_at_least_one():
    model = ToyModel(seed=3)
    before = [p.detach().clone() for g in model.groups() for p in g.factors()]
    FixedRatioPruner(model.groups(), 0.0, FixedNorms({0: torch.ones(D), 1: torch.ones(D)})).on_optimizer_step(SimpleNamespace(step=1))
    assert all(torch.equal(b, p.detach()) for b, p in zip(before, [p for g in model.groups() for p in g.factors()]))
    FixedRatioPruner(model.groups(), 0.0, FixedNorms({0: torch.ones(D), 1: torch.ones(D)}), at_least_one=True).on_optimizer_step(SimpleNamespace(step=1))
    assert [int((p.detach() == 0).sum()) for g in model.groups() for p in g.factors()] == [1, 1, 1, 1]


def test_zero_masks_at_ratio_magnitude_helper():
    A = nn.Parameter(torch.tensor([[0.1, -0.5, 0.3], [0.2, 0.05, -0.9]]))
    B = nn.Parameter(torch.tensor([[1.0, -2.0], [0.5, 3.0]]))
    groups = [FactorGroup("m", 0, [A], [B])]
    masks = compute_masks(groups, 0.5, magnitude_group_importance)
    assert torch.equal(masks[0], torch.tensor([[True, False, False], [True, True, False]]))
    masks2 = zero_masks_at_ratio(groups, 0.5, magnitude_group_importance)
    assert all(torch.equal(a, b) for a, b in zip(masks, masks2))
    assert torch.equal(A.detach(), torch.tensor([[0.0, -0.5, 0.3], [0.0, 0.0, -0.9]]))
    assert torch.equal(B.detach(), torch.tensor([[0.0, -2.0], [0.0, 3.0]]))


def test_train_forward_norms_counts_training_forwards_only():
    model = ToyModel(seed=4)
    hooks = LayerInputHooks(model.model.layers, InputNormAccumulator(), mask_source=model)
    src = make_norms_source("train_forward", hooks)
    assert isinstance(src, TrainForwardNorms) and hooks.enabled
    ids2 = torch.tensor([[3, 3, 9, 1]])
    model(IDS, attention_mask=MASK)  # training forwards (grad on)
    model(ids2)
    with torch.no_grad():
        model(torch.tensor([[7, 7, 7, 7]]))  # evaluation: not counted
    norms = src.norms_for_step()
    exp = manual_sums(model, [(IDS, MASK), (ids2, None)])
    for i in (0, 1):
        torch.testing.assert_close(norms[i], exp[i].sqrt())
    assert hooks.accumulator.layers() == []  # reset after each step
    with pytest.raises(RuntimeError, match="no training forward"):
        src.norms_for_step()
    # a multi-process sum (here: 4 identical processes) scales the norms by 2
    model(ids2)
    src4 = TrainForwardNorms(hooks, reduce_sum=lambda t: 4 * t)
    norms4 = src4.norms_for_step()
    torch.testing.assert_close(norms4[1], 2 * manual_sums(model, [(ids2, None)])[1].sqrt())


def test_full_pass_norms_runs_the_pass_with_hooks_on_only_then():
    model = ToyModel(seed=5)
    hooks = LayerInputHooks(model.model.layers, InputNormAccumulator(), mask_source=model)
    data = [(IDS, MASK), (torch.tensor([[2, 4, 6, 8]]), None)]
    seen = []

    def run_full_pass():
        seen.append(hooks.enabled)
        with torch.no_grad():
            for ids, mask in data:
                model(ids, attention_mask=mask)

    src = make_norms_source("full_pass", hooks, run_full_pass=run_full_pass)
    assert isinstance(src, FullPassNorms) and not hooks.enabled
    model(torch.tensor([[9, 9]]))  # a training forward: not part of the full-pass statistic
    norms = src.norms_for_step()
    assert seen == [True] and not hooks.enabled
    exp = manual_sums(model, data)
    for i in (0, 1):
        torch.testing.assert_close(norms[i], exp[i].sqrt())
    with pytest.raises(ValueError):
        make_norms_source("full_pass", hooks)
    with pytest.raises(ValueError):
        make_norms_source("nope", hooks)


def test_training_loop_with_train_forward_pruner():
    torch.manual_seed(0)
    model = ToyModel(seed=6)
    hooks = LayerInputHooks(find_decoder_layers(model), InputNormAccumulator(), mask_source=model)
    pruner = FixedRatioPruner(model.groups(), 0.5, TrainForwardNorms(hooks))
    opt = torch.optim.AdamW([p for g in model.groups() for p in g.factors()], lr=0.05)
    state = SimpleNamespace(step=0, timer=Timer(), model=model, optimizer=opt)
    pruner.on_train_start(state)
    target = torch.randn(2, 4, D)
    for step in range(1, 4):
        for _ in range(2):  # gradient accumulation 2
            loss = (model(IDS, attention_mask=MASK) - target).pow(2).mean()
            loss.backward()
        opt.step()
        opt.zero_grad()
        state.step = step
        pruner.on_optimizer_step(state)
        for p in [p for g in model.groups() for p in g.factors()]:
            assert int((p.detach() == 0).sum()) == p.numel() // 2
    pruner.on_train_end(state)
    assert not hooks.enabled
