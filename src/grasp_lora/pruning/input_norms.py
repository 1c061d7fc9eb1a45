"""Per-layer input norms n for input-aware importance (METHOD.md, "Pruning at a ratio p").

n_j of decoder layer l = L2 norm, over all non-padding tokens, of feature j of the layer's input
hidden state (the residual stream entering the layer) after a unit-weight RMSNorm per token.
The accumulator keeps running sums of squares (float32); forward PRE-hooks on the decoder layers
feed it. The hooks never change the forward: they read a detached copy and return None.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import nn

from grasp_lora.pruning.importance import unit_rms_normalize

__all__ = ["InputNormAccumulator", "LayerInputHooks", "find_decoder_layers"]


class InputNormAccumulator:
    """Running sum over tokens of the squared unit-RMS-normalised hidden state, per layer."""

    def __init__(self, eps: float = 1e-6) -> None:
        self.eps = eps
        self._sums: dict[int, torch.Tensor] = {}
        # Token counts stay tensors (summed on the device) so that no forward waits on a host sync.
        self._tokens: dict[int, torch.Tensor] = {}

    def add(self, layer_index: int, hidden: torch.Tensor, token_mask: Optional[torch.Tensor] = None) -> None:
        """Add the tokens of `hidden` (..., d); `token_mask` (hidden.shape[:-1]) marks real tokens."""
        with torch.no_grad():
            h = hidden.detach()
            sq = unit_rms_normalize(h, self.eps).square()
            if token_mask is not None:
                if tuple(token_mask.shape) != tuple(h.shape[:-1]):
                    raise ValueError(
                        f"token mask shape {tuple(token_mask.shape)} does not match the hidden state's "
                        f"token dimensions {tuple(h.shape[:-1])} (layer {layer_index})"
                    )
                keep = token_mask.to(device=sq.device) != 0
                sq = sq * keep.unsqueeze(-1).to(sq.dtype)
                n_tokens = keep.sum()
            else:
                n_tokens = torch.tensor(h.numel() // h.shape[-1], device=sq.device)
            s = sq.reshape(-1, sq.shape[-1]).sum(dim=0).float()
            if layer_index in self._sums:
                prev = self._sums[layer_index]
                if prev.shape != s.shape:
                    raise ValueError(f"layer {layer_index}: feature size changed from {prev.shape[0]} to {s.shape[0]}")
                prev.add_(s.to(prev.device))
            else:
                self._sums[layer_index] = s
            if layer_index in self._tokens:
                self._tokens[layer_index] = self._tokens[layer_index] + n_tokens.to(self._tokens[layer_index].device)
            else:
                self._tokens[layer_index] = n_tokens

    def has(self, layer_index: int) -> bool:
        return layer_index in self._sums

    def layers(self) -> list[int]:
        return sorted(self._sums)

    def tokens(self, layer_index: int) -> int:
        """How many (non-padding) tokens were added for this layer since the last reset."""
        t = self._tokens.get(layer_index)
        return 0 if t is None else int(t.item())

    def sum_of_squares(self, layer_index: int) -> torch.Tensor:
        if layer_index not in self._sums:
            raise KeyError(f"no inputs recorded for decoder layer {layer_index}")
        return self._sums[layer_index]

    def norms(self, layer_index: int) -> torch.Tensor:
        return self.sum_of_squares(layer_index).sqrt()

    def reset(self) -> None:
        self._sums.clear()
        self._tokens.clear()


def _is_token_mask(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.dim() == 2 and not t.is_floating_point()


class LayerInputHooks:
    """Forward pre-hooks on decoder layers that feed an InputNormAccumulator.

    Layer index = position in `layers` (the FactorGroup.layer_index convention).
    - `set_token_mask(attention_mask)` excludes padding from the next forwards. With
      `mask_source` (the model that receives `attention_mask`), a pre-hook on it picks up each
      call's attention mask automatically (None when the call has none: every token counts).
    - `grad_forwards_only`: accumulate only in forwards run with autograd enabled, i.e. the
      training forwards; validation, micro-dev scoring and generation run under no_grad and are
      ignored without the training loop having to toggle anything.
    Hooks start disabled; `enable()` / `disable()`; `remove()` detaches them.
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        accumulator: InputNormAccumulator,
        mask_source: Optional[nn.Module] = None,
        grad_forwards_only: bool = False,
    ) -> None:
        self.accumulator = accumulator
        self.enabled = False
        self.grad_forwards_only = grad_forwards_only
        self.num_layers = len(layers)
        self._token_mask: Optional[torch.Tensor] = None
        self._handles = []
        for idx, layer in enumerate(layers):
            self._handles.append(layer.register_forward_pre_hook(self._make_hook(idx), with_kwargs=True))
        if mask_source is not None:
            self._handles.append(mask_source.register_forward_pre_hook(self._capture_mask, with_kwargs=True))

    def _make_hook(self, idx: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if not self.enabled:
                return None
            if self.grad_forwards_only and not torch.is_grad_enabled():
                return None
            hidden = args[0] if args else kwargs.get("hidden_states")
            if not isinstance(hidden, torch.Tensor):
                raise TypeError(
                    f"decoder layer {idx}: expected the hidden state as the first positional argument "
                    "or the keyword 'hidden_states'"
                )
            self.accumulator.add(idx, hidden, self._token_mask)
            return None

        return hook

    def _capture_mask(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        mask = kwargs.get("attention_mask")
        if mask is None and len(args) > 1 and _is_token_mask(args[1]):
            mask = args[1]  # HF causal LMs and PEFT wrappers: (input_ids, attention_mask, ...)
        self._token_mask = mask if _is_token_mask(mask) else None
        return None

    def set_token_mask(self, attention_mask: Optional[torch.Tensor]) -> None:
        """(batch, seq) mask, nonzero = real token; None: every token counts."""
        if attention_mask is not None and attention_mask.dim() != 2:
            raise ValueError(f"token mask must be (batch, seq), got shape {tuple(attention_mask.shape)}")
        self._token_mask = attention_mask

    def enable(self) -> None:
        self.enabled = True

    def disable(self) -> None:
        self.enabled = False

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.enabled = False


_NON_TEXT = ("vision", "visual", "audio", "image", "multi_modal_projector")


def find_decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ModuleList named `layers` holding the decoder layers (Llama/Gemma style, PEFT-wrapped too).

    Vision/audio towers of multimodal models are skipped; anything else ambiguous is an error.
    """
    found = [
        (name, mod)
        for name, mod in model.named_modules()
        if isinstance(mod, nn.ModuleList) and name.split(".")[-1] == "layers" and len(mod) > 0
    ]
    text = [(n, m) for n, m in found if not any(k in n.lower() for k in _NON_TEXT)]
    if len(text) == 1:
        return text[0][1]
    if not text:
        raise ValueError(
            f"{type(model).__name__}: no ModuleList named 'layers' (decoder layers) found; "
            "input-aware pruning supports Llama/Gemma-style models"
        )
    names = ", ".join(n for n, _ in text)
    raise ValueError(f"{type(model).__name__}: several ModuleLists named 'layers' ({names}); cannot tell which are the decoder layers")
