"""Write LoRA factors as ONE standard PEFT LoRA folder that plain PEFT loads.

The merged module y = W x + c (ΣB_i)(ΣA_i) x is itself a rank-r LoRA with A = ΣA_i, B = ΣB_i;
PEFT scales a LoRA by lora_alpha / r, so writing lora_alpha = c · r makes PEFT's scaling equal c
(METHOD.md, "Adaptive merge"). The same writer serves LoRAHub's combined adapter (baselines.lorahub) and TIES.

Folders are written atomically: built in a temp folder beside the destination, then renamed into
place, so a crash never leaves a half-written adapter that a later stage would load.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from grasp_lora.models.merged import factor_sparsity, iter_merged_factor_tensors, merged_modules, merged_scaling
from grasp_lora.models.peft_adapter import ADAPTER_WEIGHTS, PEFT_PREFIX, LoraAdapter

EXPORT_INFO = "grasp_lora_export.json"


@contextmanager
def atomic_dir(out_dir: str | Path) -> Iterator[Path]:
    """Yield a temp folder; on success it replaces `out_dir` (an old folder there is removed)."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        yield tmp
        if out.exists():
            # os.replace cannot overwrite a non-empty folder: move the old one aside first.
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
            os.replace(out, old / "prev")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _tidy(x: float) -> float | int:
    # An integral alpha is written as an int (as PEFT users write it); the value is unchanged.
    return int(x) if float(x).is_integer() else float(x)


def _target_modules(adapter: LoraAdapter) -> list[str] | str:
    tm = adapter.target_modules
    if tm:
        return tm
    # No config to copy from: the last path component of every adapted module (q_proj, v_proj).
    return sorted({m.rsplit(".", 1)[-1] for m in adapter.A})


def write_peft_adapter(
    adapter: LoraAdapter,
    out_dir: str | Path,
    *,
    base_model_name_or_path: str | None = None,
    side_info: dict[str, Any] | None = None,
    side_file: str = EXPORT_INFO,
) -> Path:
    """Write `adapter` as a standard PEFT LoRA folder (adapter_config.json +
    adapter_model.safetensors): r and lora_alpha from `adapter.config`, lora_dropout 0, bias none,
    task_type CAUSAL_LM. `side_info`, if given, goes to `side_file` in the same folder."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    from grasp_lora.io import write_json

    base = base_model_name_or_path if base_model_name_or_path is not None else adapter.base_model_name_or_path
    config = LoraConfig(
        r=adapter.r,
        lora_alpha=_tidy(adapter.alpha),
        target_modules=_target_modules(adapter),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        use_rslora=adapter.use_rslora,
        base_model_name_or_path=base or None,
        inference_mode=True,
    )
    tensors: dict[str, torch.Tensor] = {}
    for module in adapter.modules:
        tensors[f"{PEFT_PREFIX}{module}.lora_A.weight"] = adapter.A[module].detach().to("cpu", torch.float32).contiguous()
        tensors[f"{PEFT_PREFIX}{module}.lora_B.weight"] = adapter.B[module].detach().to("cpu", torch.float32).contiguous()
    with atomic_dir(out_dir) as tmp:
        config.save_pretrained(str(tmp))
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        if side_info is not None:
            write_json(tmp / side_file, side_info)
    return Path(out_dir)


def merged_to_adapter(model: nn.Module, base_model_name_or_path: str = "") -> LoraAdapter:
    """The merged modules as one rank-r LoRA: A = ΣA_i, B = ΣB_i, lora_alpha = c · r."""
    mods = merged_modules(model)
    if not mods:
        raise ValueError("export: the model holds no merged LoRA modules (call merge_adapters first)")
    c = merged_scaling(model)
    r = mods[0][1].r
    A: dict[str, torch.Tensor] = {}
    B: dict[str, torch.Tensor] = {}
    for path, a, b in iter_merged_factor_tensors(model):
        A[path], B[path] = a, b
    config = {
        "r": r,
        # PEFT's scaling is lora_alpha / r: α = c · r reproduces c exactly.
        "lora_alpha": _tidy(c * r),
        "target_modules": sorted({p.rsplit(".", 1)[-1] for p in A}),
        "base_model_name_or_path": base_model_name_or_path,
    }
    return LoraAdapter(config=config, A=A, B=B, path=None)


def export_peft(
    model: nn.Module,
    out_dir: str | Path,
    base_model_name_or_path: str = "",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Export the merged (possibly pruned) factors of `model` as one PEFT LoRA folder.

    Side file grasp_lora_export.json records c, r, lora_alpha, the sparsity of the K factors
    (what pruning controls) and of the exported summed factors, plus `extra` (e.g. MergeInfo,
    the pruning ratio)."""
    adapter = merged_to_adapter(model, base_model_name_or_path)
    n_exported = sum(t.numel() for t in [*adapter.A.values(), *adapter.B.values()])
    z_exported = sum(int((t == 0).sum()) for t in [*adapter.A.values(), *adapter.B.values()])
    info: dict[str, Any] = {
        "format": "peft-lora",
        "scaling_c": merged_scaling(model),
        "r": adapter.r,
        "lora_alpha": adapter.alpha,
        "num_adapters_merged": merged_modules(model)[0][1].num_adapters,
        "factor_sparsity": factor_sparsity(model),
        "exported_sparsity": z_exported / n_exported if n_exported else 0.0,
        "base_model_name_or_path": base_model_name_or_path,
    }
    if extra:
        info.update(extra)
    return write_peft_adapter(adapter, out_dir, base_model_name_or_path=base_model_name_or_path, side_info=info)
