"""TIES merge of the source and target adapters through PEFT (METHOD.md, "Baselines").

We call PEFT's own `add_weighted_adapter(..., combination_type="ties")` so the baseline is the
one the paper ran. What PEFT 0.21.2 does there (read from peft/tuners/lora/model.py):
- rank: for "ties" every input adapter must have the same r, and the result has that r (no SVD,
  no concatenation); the new adapter's config is the first adapter's with r = lora_alpha = that
  r, so its PEFT scaling is 1.
- the sources' own scaling α/r is folded into the factors: adapter i contributes
  √|w_i·α/r|·sign(w_i) · A_i and √|w_i·α/r| · B_i;
- TIES runs on the A factors and on the B factors separately, not on ΔW = B A (a factor-level
  approximation of TIES, which is what the paper's PEFT-based baseline got): each factor is
  trimmed to its top `density` fraction by magnitude, the sign is elected from the sum of the
  trimmed factors *before* weighting, then the weighted factors that agree with that sign are
  averaged (divided by how many agree, not by the weights' sum).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from torch import nn

from grasp_lora.models.export import atomic_dir
from grasp_lora.models.merged import check_plain_model
from grasp_lora.models.peft_adapter import check_compatible, read_adapter

TIES_INFO = "grasp_lora_ties.json"
_NAMES = ("source", "target")


def ties_merge(
    base_model: nn.Module,
    source_dir: str | Path,
    target_dir: str | Path,
    out_dir: str | Path,
    density: float = 0.5,
    weights: Sequence[float] = (1.0, 1.0),
    majority_sign_method: str = "total",
) -> Path:
    """Merge the two adapters with PEFT's TIES and save only the result as a standard PEFT
    LoRA folder at `out_dir` (atomically), with grasp_lora_ties.json beside it.

    `base_model` is a plain HF model; PEFT injects into it for the merge and the injection is
    removed again afterwards (the same object is left without adapters)."""
    from peft import PeftModel

    from grasp_lora.io import write_json

    if not 0 < density <= 1:
        raise ValueError(f"ties density: must be in (0, 1], got {density}")
    if len(weights) != 2:
        raise ValueError(f"ties weights: expected 2 (source, target), got {len(weights)}")
    # Check the pair before PEFT touches the model: PEFT's own errors do not name the folders.
    adapters = [read_adapter(source_dir), read_adapter(target_dir)]
    check_compatible(adapters)
    check_plain_model(base_model)

    peft_model = PeftModel.from_pretrained(base_model, str(source_dir), adapter_name=_NAMES[0])
    try:
        peft_model.load_adapter(str(target_dir), adapter_name=_NAMES[1])
        peft_model.add_weighted_adapter(
            list(_NAMES),
            [float(w) for w in weights],
            adapter_name="ties",
            combination_type="ties",
            density=float(density),
            majority_sign_method=majority_sign_method,
        )
        scratch = Path(tempfile.mkdtemp(prefix=".ties.", dir=Path(out_dir).parent if Path(out_dir).parent.exists() else None))
        try:
            # PEFT writes a non-default adapter to <dir>/<adapter_name>/.
            peft_model.save_pretrained(str(scratch), selected_adapters=["ties"])
            saved = scratch / "ties"
            r = adapters[0].r
            with atomic_dir(out_dir) as tmp:
                for f in saved.iterdir():
                    shutil.copy2(f, tmp / f.name)
                write_json(
                    tmp / TIES_INFO,
                    {
                        "method": "ties",
                        "peft_combination_type": "ties",
                        "density": float(density),
                        "weights": [float(w) for w in weights],
                        "majority_sign_method": majority_sign_method,
                        "source_dir": str(source_dir),
                        "target_dir": str(target_dir),
                        "r": r,
                        "lora_alpha": r,
                        "source_scaling": adapters[0].peft_scaling,
                        "note": "PEFT ties: same r as the inputs, lora_alpha = r (scaling 1), sources' "
                        "alpha/r folded into the factors as sqrt on A and B, TIES applied to A and B separately",
                    },
                )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    finally:
        # Remove PEFT's layers so the caller's model is plain again.
        peft_model.unload()
    return Path(out_dir)
