"""Importance scores for pruning LoRA factors (METHOD.md, "Pruning at a ratio p").

Pure tensor functions. Scores are computed in at least float32 (bf16 factors are upcast) so that
the ranking does not depend on the training dtype's rounding.
"""

from __future__ import annotations

import torch

__all__ = ["compute_dtype", "magnitude_importance", "input_aware_importance", "unit_rms_normalize"]


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float32, or float64 when any input is float64 (tests check against float64 autograd)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def magnitude_importance(t: torch.Tensor) -> torch.Tensor:
    """I = |theta| (the controller's importance). A new tensor, detached, in >= float32."""
    return t.detach().to(compute_dtype(t)).abs()


def input_aware_importance(
    A: torch.Tensor, B: torch.Tensor, norms: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input-aware importance of one adapter's factors (the authors' `input_parameter_zero`).

    A: r x d_in, B: d_out x r, norms: d_in (L2 norm of each input feature over the tokens).
    With dW = B A and S = sign(dW) * n (broadcast over rows: S_oj = sign(dW_oj) n_j):
        I(A) = |B^T S|   (r x d_in),     I(B) = |S A^T|   (d_out x r),
    the absolute gradients of sum_oj |dW_oj| n_j. sign(0) = 0, matching autograd of |.| at 0.
    Returns (I_A, I_B) on A's device, in >= float32.
    """
    if A.dim() != 2 or B.dim() != 2:
        raise ValueError(f"A and B must be matrices, got shapes {tuple(A.shape)} and {tuple(B.shape)}")
    r, d_in = A.shape
    if B.shape[1] != r:
        raise ValueError(f"B {tuple(B.shape)} does not match A {tuple(A.shape)}: B must be d_out x {r}")
    if norms.dim() != 1 or norms.shape[0] != d_in:
        raise ValueError(f"norms must have shape ({d_in},) (A's input dimension), got {tuple(norms.shape)}")
    dtype = compute_dtype(A, B, norms)
    a = A.detach().to(dtype)
    b = B.detach().to(device=a.device, dtype=dtype)
    n = norms.detach().to(device=a.device, dtype=dtype)
    # dW is d_out x d_in per module; formed once per adapter per pruning step (the closed form
    # needs its signs). It is a transient, never kept.
    s = torch.sign(b @ a)
    s.mul_(n)  # broadcast over rows: S_oj = sign(dW_oj) * n_j
    return (b.t() @ s).abs_(), (s @ a.t()).abs_()


def unit_rms_normalize(h: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm with unit weight over the last dimension, per token, in float32 (or float64).

    h / sqrt(mean(h^2) + eps): the same as the models' RMSNorm (Llama/Gemma style) minus the
    learned scale, so the statistic does not depend on a layer's input_layernorm weights.
    """
    x = h.to(compute_dtype(h))
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)

