"""LoRAHub baseline stage: the few-shot loss of our training code drives the weight search."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from grasp_lora.config import Config
from grasp_lora.io import write_manifest


def run_lorahub(cfg: Config, model, tokenizer, adapter_dirs: Sequence[str | Path], train_rows: list[dict],
                out_dir: str | Path) -> dict:
    from grasp_lora.baselines.lorahub import lorahub_merge
    from grasp_lora.data.tasks import task_spec
    from grasp_lora.data.tokenize import encode_for_training
    from grasp_lora.training.loss import per_example_losses

    started = time.perf_counter()
    out = Path(out_dir)
    task, lang = task_spec(cfg.data), cfg.data.target_lang  # the task's prompts plus data.prompts
    # LoraHub scores candidates on a handful of target examples (few-shot), not the whole train set.
    shots = [encode_for_training(tokenizer, task, lang, r, cfg.data.max_length, cfg.data.max_article_tokens)
             for r in train_rows[: cfg.lorahub.examples]]
    if not shots:
        raise ValueError("LoRAHub needs target train examples (data.target_sizes.train >= 1)")

    def few_shot_loss(m) -> float:
        return float(per_example_losses(m, shots, cfg.train.eval_batch_size).mean())

    result = lorahub_merge(model, adapter_dirs, few_shot_loss, cfg.lorahub, out / "adapter", seed=cfg.train.seed)
    summary = {"weights": result.weights.tolist(), "scaling": result.scaling, "evaluations": len(result.history),
               "wall_clock_s": time.perf_counter() - started}
    write_manifest(out, stage="lorahub", config=cfg.to_dict(), adapters=[str(d) for d in adapter_dirs], **summary)
    return summary
