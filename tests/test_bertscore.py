"""BERTScore: matching, idf and rescaling checked by hand on a stub encoder whose vectors we set.

Stub vectors (2-d): BOS = (1, 0) like "a", so a score that forgot to drop it would show;
a = (1, 0), b = (0, 1), c = (1, 1) (cos 1/sqrt2 to a and b), d = (3, 0) (same direction as a:
only equal to a after L2 normalisation). Layer 0 maps every token to (1, 1); layers 1 and 2 use
the table above, so the layer choice is visible.
"""

import math
from types import SimpleNamespace

import pytest
import torch

from grasp_lora.evaluation.bertscore import (
    bertscore,
    bertscore_f1,
    cyclic_permutation,
    default_layer,
    idf_table,
)
from grasp_lora.models.tiny import tiny_model

S = 1 / math.sqrt(2)
PAD, BOS = 0, 1
VOCAB = {"a": 4, "b": 5, "c": 6, "d": 7}


class StubTokenizer:
    all_special_ids = [PAD, BOS]
    pad_token_id = PAD
    model_max_length = 512

    def __call__(self, texts, add_special_tokens=True, truncation=True, max_length=None, return_special_tokens_mask=False):
        ids = [[BOS] + [VOCAB[w] for w in t.split()] for t in texts]
        out = {"input_ids": ids}
        if return_special_tokens_mask:
            out["special_tokens_mask"] = [[1] + [0] * (len(x) - 1) for x in ids]
        return out


class StubEncoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        table = torch.zeros(8, 2)
        table[PAD] = torch.tensor([1.0, 1.0])
        table[BOS] = torch.tensor([1.0, 0.0])
        table[VOCAB["a"]] = torch.tensor([1.0, 0.0])
        table[VOCAB["b"]] = torch.tensor([0.0, 1.0])
        table[VOCAB["c"]] = torch.tensor([1.0, 1.0])
        table[VOCAB["d"]] = torch.tensor([3.0, 0.0])
        self.register_buffer("table", table)
        self.config = SimpleNamespace(num_hidden_layers=2, _name_or_path="stub-encoder")
        self.calls = 0

    def forward(self, input_ids, attention_mask=None, output_hidden_states=True):
        self.calls += 1
        h = self.table[input_ids]
        return SimpleNamespace(hidden_states=(torch.ones_like(h), h, h))


@pytest.fixture
def stub():
    return StubEncoder(), StubTokenizer()


def f1_items(stub, cands, refs, **kw):
    model, tok = stub
    return bertscore(cands, refs, model, tok, **kw).f1


def test_greedy_matching_by_hand(stub):
    # "a" vs "a b": P = 1; R = (1 + 0) / 2; F = 2/3
    assert f1_items(stub, ["a"], ["a b"]) == pytest.approx([2 / 3])
    res = bertscore(["a"], ["a b"], *stub)
    assert res.precision == pytest.approx([1.0]) and res.recall == pytest.approx([0.5])
    # identical strings: every token matches itself
    score, _ = bertscore_f1(["a b c"], ["a b c"], *stub)
    assert score == pytest.approx(100.0)
    # BOS is excluded: with it, "b" vs "a" would get P = R = 0.5
    assert f1_items(stub, ["b"], ["a"]) == pytest.approx([0.0])
    # embeddings are L2-normalised: d = 3a matches a with cosine 1
    assert f1_items(stub, ["d"], ["a"]) == pytest.approx([1.0])
    # corpus score = mean item F x 100
    score, _ = bertscore_f1(["a", "b"], ["a b", "a"], *stub)
    assert score == pytest.approx(100 * (2 / 3 + 0) / 2)


@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_pairs_stay_aligned_whatever_the_length_order(stub, batch_size):
    # candidate lengths 4, 1, 2 and reference lengths 1, 4, 2: sorting by length must not mix pairs.
    # "a b c a" vs "b": P = (0 + 1 + S + 0) / 4, R = 1;  "b" vs "a b c a": the mirror image.
    p = (1 + S) / 4
    f = 2 * p / (p + 1)
    assert f1_items(stub, ["a b c a", "b", "a c"], ["b", "a b c a", "c a"], batch_size=batch_size) == pytest.approx(
        [f, f, 1.0]
    )


def test_layer_choice(stub):
    # layer 0 maps every token to (1, 1): everything matches perfectly
    assert f1_items(stub, ["b"], ["a"], layer=0) == pytest.approx([1.0])
    assert f1_items(stub, ["b"], ["a"], layer=2) == pytest.approx([0.0])
    model, tok = stub
    assert default_layer(model) == 1  # num_hidden_layers // 2
    assert default_layer(model, "google-bert/bert-base-multilingual-cased") == 9  # BERTScore's table
    with pytest.raises(ValueError, match="out of range"):
        bertscore_f1(["a"], ["a"], model, tok, layer=3)


def test_idf_weighting_by_hand(stub):
    # references "a b", "a c" (M = 2): idf(a) = log(3/3) = 0, idf(b) = idf(c) = log(3/2), unseen: log 3
    table, unseen = idf_table([[4, 5], [4, 6]])
    assert table == pytest.approx({4: 0.0, 5: math.log(1.5), 6: math.log(1.5)})
    assert unseen == pytest.approx(math.log(3))
    refs = ["a b", "a c"]
    # "a b" vs "a b": 1.  "b" vs "a c": P = S; R = (0 * 0 + w * S) / w = S -> F = S
    assert f1_items(stub, ["a b", "b"], refs, idf=True) == pytest.approx([1.0, S])
    # without idf, "b" vs "a c": P = S, R = (0 + S) / 2 -> F = 2 * S * (S/2) / (1.5 S) = sqrt(2)/3
    assert f1_items(stub, ["a b", "b"], refs) == pytest.approx([1.0, math.sqrt(2) / 3])
    # unseen token d (same direction as a) weighs log 3: "d b" vs "a c" (and "b" vs "a b": 1)
    wd, wb = math.log(3), math.log(1.5)
    p = (wd * 1.0 + wb * S) / (wd + wb)
    r = S  # only c carries weight; its best match (d or b) has cosine S
    assert f1_items(stub, ["b", "d b"], refs, idf=True) == pytest.approx([1.0, 2 * p * r / (p + r)])
    # a single reference gives every token idf log(2/2) = 0: BERTScore's NaN -> 0
    assert f1_items(stub, ["a"], ["a"], idf=True) == pytest.approx([0.0])


def test_rescale_with_given_and_computed_baseline(stub):
    model, tok = stub
    score, settings = bertscore_f1(["a"], ["a b"], model, tok, rescale=True, baseline=0.5)
    assert score == pytest.approx(100 * (2 / 3 - 0.5) / 0.5)
    assert settings["baseline"] == 0.5 and settings["baseline_source"] == "given"
    # computed: the two references swapped: "a c" vs "a b" -> P = R = (1 + S) / 2 both ways
    b = (1 + S) / 2
    score, settings = bertscore_f1(["a b", "b"], ["a b", "a c"], model, tok, rescale=True)
    assert settings["baseline"] == pytest.approx(b)
    assert "mismatched reference pairs" in settings["baseline_source"]
    expected = ((1 - b) / (1 - b) + (math.sqrt(2) / 3 - b) / (1 - b)) / 2
    assert score == pytest.approx(100 * expected)
    with pytest.raises(ValueError, match=">= 2 references"):
        bertscore_f1(["a"], ["a"], model, tok, rescale=True)


def test_empty_texts_score_zero_after_rescaling_and_stay_out_of_the_baseline(stub):
    model, tok = stub
    # references "a b", "a c", "": of the three mismatched pairs of a 3-cycle, the two touching ""
    # are undefined; the one left is "a b" / "a c" (either way round): b = (1 + S) / 2
    res = bertscore(["", "a c", "a b"], ["a b", "a c", ""], model, tok, rescale=True)
    assert res.settings["baseline"] == pytest.approx((1 + S) / 2)
    assert "of 1 mismatched" in res.settings["baseline_source"]
    # empty candidate -> 0 (not -b / (1 - b)); identical -> 1; empty reference -> 0
    assert res.f1 == pytest.approx([0.0, 1.0, 0.0])


def test_multiple_references_take_the_max(stub):
    # "a" vs "b" -> 0, vs "a b" -> 2/3, vs "c" -> S: the max is S
    assert f1_items(stub, ["a"], [["b", "a b", "c"]]) == pytest.approx([S])


def test_empty_candidate_scores_zero_and_texts_are_embedded_once(stub):
    model, tok = stub
    assert f1_items(stub, ["", "a"], ["a", "a"]) == pytest.approx([0.0, 1.0])
    model.calls = 0
    bertscore(["a b"] * 5, ["a b"] * 5, model, tok, batch_size=1)
    assert model.calls == 1  # one distinct non-empty text -> one forward pass


def test_cyclic_permutation_has_no_fixed_point():
    for n in range(2, 12):
        perm = cyclic_permutation(n, seed=3)
        assert sorted(perm) == list(range(n))
        assert all(perm[i] != i for i in range(n))
    assert cyclic_permutation(7, seed=1) == cyclic_permutation(7, seed=1)


def test_tiny_causal_lm():
    model, tok = tiny_model("llama", seed=0)
    model.train()  # evaluation must not depend on dropout, and must leave the mode as it was
    cands = ["hello world", "مرحبا بالعالم", "你好世界", ""]
    refs = ["hello world", "مرحبا", "你好", "something"]
    score1, settings = bertscore_f1(cands, refs, model, tok, name="tiny-llama", batch_size=1)
    score3, _ = bertscore_f1(cands, refs, model, tok, name="tiny-llama", batch_size=3)
    assert model.training
    assert score1 == pytest.approx(score3, abs=1e-4)  # padding does not change the embeddings
    res = bertscore(cands, refs, model, tok, batch_size=4)
    assert res.f1[0] == pytest.approx(1.0, abs=1e-5)  # identical
    assert all(f < 0.9999 for f in res.f1[1:3])  # different texts
    assert res.f1[3] == 0.0  # empty candidate
    assert settings["encoder"] == "tiny-llama@layer1" and settings["layer"] == 1
    assert settings["num_layers"] == 2 and settings["model_class"] == "LlamaForCausalLM"
    assert settings["idf"] is False and settings["rescale"] is False and settings["baseline"] is None
