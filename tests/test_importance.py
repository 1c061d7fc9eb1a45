import math

import pytest
import torch

from grasp_lora.pruning.importance import input_aware_importance, magnitude_importance, unit_rms_normalize


def test_magnitude_is_abs_detached_float32():
    t = torch.tensor([[-1.5, 0.0], [2.0, -0.25]], dtype=torch.bfloat16, requires_grad=True)
    imp = magnitude_importance(t)
    assert imp.dtype == torch.float32
    assert not imp.requires_grad
    assert torch.equal(imp, torch.tensor([[1.5, 0.0], [2.0, 0.25]]))


def test_input_aware_hand_computed():
    # dW = B A = [[1,-2],[-1,2]]; S = sign(dW) * n = [[3,-4],[-3,4]]
    A = torch.tensor([[1.0, -2.0]])  # r=1, d_in=2
    B = torch.tensor([[1.0], [-1.0]])  # d_out=2, r=1
    n = torch.tensor([3.0, 4.0])
    ia, ib = input_aware_importance(A, B, n)
    assert torch.equal(ia, torch.tensor([[6.0, 8.0]]))  # |B^T S| = |[3+3, -4-4]|
    assert torch.equal(ib, torch.tensor([[11.0], [11.0]]))  # |S A^T| = |[3+8, -3-8]|


def test_sign_zero_contributes_nothing():
    # dW has an exact zero column: its sign is 0, so feature j=1 adds nothing (as autograd of |.|).
    A = torch.tensor([[1.0, 0.0]])
    B = torch.tensor([[2.0]])
    ia, ib = input_aware_importance(A, B, torch.tensor([1.0, 100.0]))
    assert torch.equal(ia, torch.tensor([[2.0, 0.0]]))
    assert torch.equal(ib, torch.tensor([[1.0]]))


@pytest.mark.parametrize("r,d_in,d_out,seed", [(2, 5, 3, 0), (4, 7, 9, 1), (8, 16, 4, 2)])
def test_input_aware_matches_autograd(r, d_in, d_out, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(r, d_in, generator=g, dtype=torch.float64, requires_grad=True)
    B = torch.randn(d_out, r, generator=g, dtype=torch.float64, requires_grad=True)
    n = torch.rand(d_in, generator=g, dtype=torch.float64) * 3
    n[0] = 0.0  # a dead feature
    objective = ((B @ A).abs() * n).sum()  # sum_oj |dW_oj| n_j
    objective.backward()
    ia, ib = input_aware_importance(A, B, n)
    assert ia.dtype == torch.float64 and ia.shape == A.shape and ib.shape == B.shape
    torch.testing.assert_close(ia, A.grad.abs(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ib, B.grad.abs(), rtol=1e-12, atol=1e-12)


def test_input_aware_bf16_computed_in_float32():
    g = torch.Generator().manual_seed(3)
    A = torch.randn(4, 6, generator=g).to(torch.bfloat16)
    B = torch.randn(5, 4, generator=g).to(torch.bfloat16)
    n = torch.rand(6, generator=g).to(torch.bfloat16)
    ia, ib = input_aware_importance(A, B, n)
    ea, eb = input_aware_importance(A.float(), B.float(), n.float())
    assert ia.dtype == torch.float32 and ib.dtype == torch.float32
    assert torch.equal(ia, ea) and torch.equal(ib, eb)


def test_input_aware_shape_errors():
    with pytest.raises(ValueError, match="norms"):
        input_aware_importance(torch.ones(2, 3), torch.ones(4, 2), torch.ones(4))
    with pytest.raises(ValueError, match="does not match"):
        input_aware_importance(torch.ones(2, 3), torch.ones(4, 3), torch.ones(3))


def test_unit_rms_normalize_hand_value_and_dtype():
    h = torch.tensor([[[3.0, 4.0], [0.0, 2.0]]], dtype=torch.bfloat16)
    out = unit_rms_normalize(h)
    assert out.dtype == torch.float32 and out.shape == h.shape
    expected = torch.tensor([[[3 / math.sqrt(12.5 + 1e-6), 4 / math.sqrt(12.5 + 1e-6)], [0.0, 2 / math.sqrt(2 + 1e-6)]]])
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=0)
    # per token the mean square is m / (m + eps), m = the token's own mean square: 1 up to eps
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 8, generator=g, dtype=torch.float64) * torch.tensor([0.1, 10.0, 1000.0, 1.0], dtype=torch.float64).view(1, 4, 1)
    m = x.pow(2).mean(-1)
    ms = unit_rms_normalize(x).pow(2).mean(-1)
    torch.testing.assert_close(ms, m / (m + 1e-6), rtol=1e-12, atol=0)
    assert (ms[:, 1:] > 1 - 1e-5).all()  # tokens of scale >= 1
