"""training.finetune.train_merged, the one builder of a merged run: the pipeline's runs and the
benchmarks' options (mask agreement, step cap, no validation) go through it."""

from __future__ import annotations

from dataclasses import replace

import torch

from grasp_lora.config import Config
from grasp_lora.io import Timer
from grasp_lora.models.tiny import tiny_model
from grasp_lora.pruning.groups import all_factors
from grasp_lora.training.finetune import train_merged

from helpers import make_adapter


def examples(n: int, seed: int) -> list[dict]:
    """Encoded rows (they pass through `encode_rows` as they are): prompt, 3 target tokens, EOS."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        prompt = [1] + torch.randint(4, 260, (4 + i % 3,), generator=g).tolist()
        target = torch.randint(4, 260, (3,), generator=g).tolist() + [2]
        out.append({"input_ids": prompt + target, "labels": [-100] * len(prompt) + target})
    return out


def run(adapters, cfg, **kw):
    model, _ = tiny_model("llama", 0)
    res = train_merged(cfg, model, None, adapters, examples(6, 1), kw.pop("val", examples(3, 2)), ratio=0.4,
                       kind="test", log_path=None, timer=Timer(), progress=False, **kw)
    return res, [p.detach().clone() for p in all_factors(res.groups)]


def test_agreement_and_benchmark_options_leave_the_run_unchanged(tmp_path):
    adapters = [make_adapter(tmp_path / "en", 1, base="tiny-llama"), make_adapter(tmp_path / "ar", 2, base="tiny-llama")]
    cfg = Config()
    cfg.train = replace(cfg.train, lr=1e-2, grad_accum=2, epochs=2, patience=2, eval_batch_size=2, seed=3)
    plain, plain_factors = run(adapters, cfg)
    agreed, agreed_factors = run(adapters, cfg, agreement=True)
    # The agreement pruner prunes with train_forward's masks: the same trajectory, bit for bit.
    assert all(torch.equal(a, b) for a, b in zip(plain_factors, agreed_factors, strict=True))
    assert agreed.result.best_val_loss == plain.result.best_val_loss
    records = agreed.pruner.records
    assert len(records) == agreed.result.steps and all(0.0 <= r["entries"] <= 1.0 for r in records)
    capped, _ = run(adapters, cfg, max_steps=2, val=None)
    assert capped.result.steps == 2 and capped.result.best_epoch is None and capped.train_s > 0
