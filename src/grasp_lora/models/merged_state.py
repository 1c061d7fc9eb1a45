"""Saving and re-loading a merged state (resume; the unpruned start point of the final run).

`save_merged_factors` writes every merged module's K factor pairs and the `MergeInfo`;
`load_merged_factors` injects them into a plain model or copies them into a merged one in place.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from grasp_lora.models.merged import MergeInfo, merge_loaded_adapters, merged_modules, merged_scaling
from grasp_lora.models.peft_adapter import AdapterError, AdapterMismatchError, LoraAdapter

MERGED_FACTORS = "merged_factors.safetensors"
MERGE_INFO = "merge_info.json"


def save_merged_factors(model: nn.Module, out_dir: str | Path, info: MergeInfo) -> Path:
    """Write every merged module's K factor pairs (safetensors) + merge_info.json, atomically."""
    from safetensors.torch import save

    from grasp_lora.io import atomic_write_bytes, write_json

    mods = merged_modules(model)
    if not mods:
        raise ValueError("save_merged_factors: the model holds no merged LoRA modules")
    tensors: dict[str, torch.Tensor] = {}
    for path, m in mods:
        for i, (a, b) in enumerate(zip(m.lora_A, m.lora_B)):
            tensors[f"{path}.lora_A.{i}"] = a.detach().to("cpu", torch.float32).contiguous()
            tensors[f"{path}.lora_B.{i}"] = b.detach().to("cpu", torch.float32).contiguous()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = info.to_dict()
    meta.update(scaling=merged_scaling(model), modules=[p for p, _ in mods], num_adapters=mods[0][1].num_adapters)
    # Factors first, info last: merge_info.json present means the factors beside it are whole.
    atomic_write_bytes(out / MERGED_FACTORS, save(tensors, metadata={"format": "pt"}))
    write_json(out / MERGE_INFO, meta)
    return out


def load_merged_factors(model: nn.Module, factors_dir: str | Path) -> MergeInfo:
    """Load factors written by `save_merged_factors`.

    On a plain model the merged modules are injected (backbone frozen); on a model merged with
    the same layout the values are copied in place, so Parameter identities (and optimizer
    references to them) survive."""
    from safetensors.torch import load_file

    src = Path(factors_dir)
    info_path, fac_path = src / MERGE_INFO, src / MERGED_FACTORS
    if not info_path.is_file() or not fac_path.is_file():
        raise AdapterError(f"merged factors folder {src}: expected {MERGE_INFO} and {MERGED_FACTORS}")
    try:
        info = MergeInfo.from_dict(json.loads(info_path.read_text(encoding="utf-8")))
        tensors = load_file(str(fac_path), device="cpu")
    except Exception as e:  # one clear line for any corrupt file
        raise AdapterError(f"merged factors folder {src}: not readable ({e})") from None
    K = info.num_adapters
    by_module: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for path in info.modules:
        try:
            by_module[path] = (
                [tensors[f"{path}.lora_A.{i}"] for i in range(K)],
                [tensors[f"{path}.lora_B.{i}"] for i in range(K)],
            )
        except KeyError as e:
            raise AdapterError(f"merged factors folder {src}: missing tensor {e.args[0]}") from None

    existing = dict(merged_modules(model))
    if existing:
        if set(existing) != set(by_module):
            raise AdapterMismatchError(
                f"merged factors {src} and the model's merged modules differ: "
                f"{len(by_module)} saved modules vs {len(existing)} in the model"
            )
        for path, (As, Bs) in by_module.items():
            m = existing[path]
            if m.num_adapters != K or any(
                p.shape != t.shape for p, t in zip([*m.lora_A, *m.lora_B], [*As, *Bs])
            ):
                raise AdapterMismatchError(f"merged factors {src} and the model differ at {path}: K or shapes")
        with torch.no_grad():
            for path, (As, Bs) in by_module.items():
                m = existing[path]
                for p, t in zip([*m.lora_A, *m.lora_B], [*As, *Bs]):
                    p.copy_(t.to(p.device, p.dtype))
                m.scaling = float(info.scaling)
        return info

    # Plain model: inject through the same path as a fresh merge (same checks, same freezing).
    adapters = [
        LoraAdapter(
            config={
                "r": info.r,
                "lora_alpha": info.alpha,
                "target_modules": info.target_modules,
                "use_rslora": info.use_rslora,
                "base_model_name_or_path": info.base_model_name_or_path,
            },
            A={p: by_module[p][0][i] for p in by_module},
            B={p: by_module[p][1][i] for p in by_module},
            path=src / f"adapter{i}",
        )
        for i in range(K)
    ]
    merge_loaded_adapters(model, adapters, float(info.scaling))
    return info
