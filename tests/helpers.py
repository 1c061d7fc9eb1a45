"""Shared bits of the integration tests: a tiny recipe that runs the whole method in seconds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TINY_OVERRIDES = [
    "model.name=tiny-llama",
    "data.source_data=demo",
    "data.target_data=demo",
    "data.source_sizes={train: 6, val: 3, micro_dev: 0, test: 0}",
    "data.target_sizes={train: 6, val: 3, micro_dev: 3, test: 4}",
    "train.lr=1e-3",
    "train.grad_accum=2",
    "train.epochs=2",
    "train.patience=2",
    "train.eval_batch_size=4",
    "controller.every_k_steps=2",
    "controller.lookahead_steps=2",  # the default controller's lookahead is K steps
    "controller.micro_dev_size=3",
    "grid.ratios=[0.3, 0.6]",
    "generation.batch_size=4",
    "generation.max_new_tokens=8",
    "lorahub.steps=4",
    "lorahub.examples=2",
    "pipeline.seeds=[42]",
]


def cli_env(cache_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"GRASP_LORA_CACHE": str(cache_dir), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    return env


def run_cli(args: list[str], cache_dir: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grasp_lora", *args], env=cli_env(cache_dir), capture_output=True,
                          text=True, timeout=timeout)


# ---- PEFT adapters on the tiny model (adapter, merge, export, TIES and LoRAHub tests) -----------

def make_adapter(out: Path, seed: int, r: int = 4, alpha: int = 16, targets=("q_proj", "v_proj"),
                 base: str | None = None) -> Path:
    """A stage-1-like PEFT LoRA folder with non-trivial (random) A and B on tiny-llama."""
    import json

    import torch
    from peft import LoraConfig, get_peft_model

    from grasp_lora.models.tiny import tiny_model

    model, _ = tiny_model("llama", 0)
    pm = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.05, target_modules=list(targets)))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    pm.save_pretrained(str(out))
    if base is not None:
        # The base name goes in afterwards: saving with a hub-like name makes PEFT look it up online.
        cfg_path = out / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = base
        cfg_path.write_text(json.dumps(cfg))
    return out


def logits_of(model, ids):
    import torch

    with torch.no_grad():
        return model(input_ids=ids).logits


def comparable_results(results: Path | str) -> dict:
    """The parts of a run's results.json (a path, or its text) that must not depend on
    interruptions, resumes or redone units (timings may)."""
    import json

    r = json.loads(results if isinstance(results, str) else Path(results).read_text())
    return {
        "rows": [{k: row[k] for k in ("family", "systems", "ratio", "metrics")} for row in r["rows"]],
        "controller": [{k: c[k] for k in ("seed", "p_star", "rule", "rounds")} for c in r["controller"]],
    }


def run_tiny_pipeline(root: Path, *extra: str) -> tuple[Path, subprocess.CompletedProcess]:
    """The whole demo pipeline on the tiny recipe in `root/run` (model cache in `root/cache`); asserts it succeeded."""
    run = root / "run"
    proc = run_cli(["pipeline", "demo", *TINY_OVERRIDES, *extra, "--run-dir", str(run), "--quiet"], root / "cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run, proc


def cache_leftovers(models_dir: Path) -> list[str]:
    """Temp or set-aside folders a model-cache build left behind (names start with a dot)."""
    return sorted(p.name for p in models_dir.iterdir() if p.name.startswith("."))
