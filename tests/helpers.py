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
