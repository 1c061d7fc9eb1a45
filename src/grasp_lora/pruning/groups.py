"""The unit that pruning works on: one adapted module's LoRA factors."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class FactorGroup:
    """The factors of one adapted module (for example `model.layers.3.self_attn.q_proj`).

    `A[i]` (r x d_in) and `B[i]` (d_out x r) belong to adapter i; a single PEFT LoRA has one of
    each, a merged module K of each. `layer_index` names the decoder layer whose input hidden
    state feeds this module (input-aware importance uses that layer's input norms).
    """

    name: str
    layer_index: int
    A: list[torch.nn.Parameter]
    B: list[torch.nn.Parameter]

    def factors(self) -> list[torch.nn.Parameter]:
        return [*self.A, *self.B]


def all_factors(groups: list[FactorGroup]) -> list[torch.nn.Parameter]:
    return [p for g in groups for p in g.factors()]
