"""The frozen base model of a run: loaded once per process, a fresh copy for every stage."""

from __future__ import annotations

import copy
from typing import Any

from grasp_lora import distributed as dist
from grasp_lora.config import ModelConfig


class BaseModel:
    """Loads `model_cfg` on first use and hands out copies, so that no stage sees what another
    one merged into or trained on its model. Several runs may share one provider (benchmarks)."""

    def __init__(self, model_cfg: ModelConfig) -> None:
        self.cfg = model_cfg
        self._master: Any = None
        self._tokenizer: Any = None

    def _load(self) -> None:
        from grasp_lora.models.loading import load_model, resolve_device, resolve_dtype

        if self._master is None:
            # The master copy stays in host memory in the target dtype; each stage gets its own copy
            # on the device, so a GPU holds one backbone (16 GB for Llama 3 8B in bf16), not two.
            # With several processes the load is collective (rank 0 first: it may fill the model
            # cache), so every process must reach the first use at the same point.
            device = resolve_device(self.cfg.device)
            with dist.main_first("load the base model"):
                self._master, self._tokenizer = load_model(self.cfg, device="cpu",
                                                           dtype=resolve_dtype(self.cfg.dtype, device))

    def fresh(self) -> tuple[Any, Any]:
        """(a new copy of the model on the configured device, the tokenizer)."""
        from grasp_lora.models.loading import resolve_device

        device = resolve_device(self.cfg.device)
        self._load()
        return copy.deepcopy(self._master).to(device), self._tokenizer

    @property
    def master(self) -> Any:
        """The host copy itself (read it, never train it: every later copy starts from it)."""
        self._load()
        return self._master

    @property
    def tokenizer(self) -> Any:
        self._load()
        return self._tokenizer
