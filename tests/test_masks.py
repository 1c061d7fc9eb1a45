import math

import pytest
import torch

from grasp_lora.pruning.masks import mask_agreement, mask_from_order, prune_count, prune_mask, prune_order, sparsity


@pytest.mark.parametrize(
    "n,ratio,expected",
    [(10, 0.35, 3), (10, 0.0, 0), (10, 0.99, 9), (7, 0.5, 3), (100, 0.29, 29), (1000, 0.7, 700), (3, 0.1, 0), (0, 0.5, 0)],
)
def test_prune_count_floor(n, ratio, expected):
    assert prune_count(n, ratio) == expected


def test_prune_count_at_least_one():
    assert prune_count(10, 0.0, at_least_one=True) == 1
    assert prune_count(3, 0.1, at_least_one=True) == 1
    assert prune_count(10, 0.35, at_least_one=True) == 3
    assert prune_count(0, 0.5, at_least_one=True) == 0  # never more than there is


@pytest.mark.parametrize("bad", [1.0, -0.01, 1.5, math.nan])
def test_ratio_out_of_range(bad):
    with pytest.raises(ValueError):
        prune_count(10, bad)
    with pytest.raises(ValueError):
        prune_mask(torch.ones(4), bad)


def test_mask_prunes_lowest_exact_count():
    imp = torch.tensor([[0.5, 0.1, 0.9], [0.3, 0.7, 0.2]])
    m = prune_mask(imp, 0.5)  # floor(3.0) = 3: 0.1, 0.2, 0.3
    assert m.dtype == torch.bool and m.shape == imp.shape
    assert torch.equal(m, torch.tensor([[False, True, False], [True, False, True]]))


def test_ties_lowest_flat_index_first():
    imp = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])
    # 3 entries: the two zeros (1, 3), then among the tied ones the lowest index (0)
    assert torch.equal(prune_mask(imp, 0.6), torch.tensor([True, True, False, True, False]))
    flat_ties = torch.full((2, 4), 2.5)
    assert torch.equal(prune_mask(flat_ties, 0.5), torch.tensor([[True] * 4, [False] * 4]))  # row-major


def test_ratio_zero_and_at_least_one():
    imp = torch.tensor([3.0, 1.0, 2.0])
    assert not prune_mask(imp, 0.0).any()
    assert torch.equal(prune_mask(imp, 0.0, at_least_one=True), torch.tensor([False, True, False]))


def test_deterministic_and_nested():
    g = torch.Generator().manual_seed(0)
    imp = torch.randint(0, 5, (16, 9), generator=g).float()  # many ties
    a, b = prune_mask(imp, 0.37), prune_mask(imp.clone(), 0.37)
    assert torch.equal(a, b)
    assert int(a.sum()) == math.floor(0.37 * 144)
    order = prune_order(imp)
    lo, hi = mask_from_order(order, imp.shape, 0.2), mask_from_order(order, imp.shape, 0.6)
    assert torch.equal(lo & hi, lo)  # same ranking -> nested masks
    # every pruned entry is <= every kept one
    assert imp[a].max() <= imp[~a].min()


def test_bf16_importance():
    imp = torch.tensor([0.3, 0.1, 0.2, 0.4], dtype=torch.bfloat16)
    assert torch.equal(prune_mask(imp, 0.5), torch.tensor([False, True, True, False]))


def test_sparsity_counts_exact_zeros():
    ts = [torch.tensor([0.0, 1.0, -0.0, 1e-30]), torch.zeros(2, 2), torch.ones(2)]
    assert sparsity(ts) == pytest.approx(6 / 10)
    assert sparsity([]) == 0.0


def test_mask_agreement():
    a = [torch.tensor([True, True, False, False]), torch.tensor([[False, True]])]
    b = [torch.tensor([True, False, True, False]), torch.tensor([[False, True]])]
    agree = mask_agreement(a, b)
    assert agree["entries"] == pytest.approx(4 / 6)  # entries 0, 3 and both of the second tensor
    assert agree["pruned"] == pytest.approx(2 / 4)  # {0, t2} shared of {0, 1, 2, t2}
    assert mask_agreement(a, a) == {"entries": 1.0, "pruned": 1.0}
    with pytest.raises(ValueError):
        mask_agreement(a, a[:1])
