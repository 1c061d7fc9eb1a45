"""Stage 1: one PEFT LoRA adapter per (task, language) on the frozen base (METHOD.md, "Stage 1: adapters").

The output folder is a standard PEFT adapter (adapter_config.json + adapter_model.safetensors),
loadable with `peft.PeftModel.from_pretrained(base, folder)` and no grasp-lora code, plus our
`manifest.json` (config, seed, versions, per-epoch losses, wall-clock, base model, data hashes)
and the per-step training log. The folder appears only when complete: everything is written
into a temporary sibling, which is renamed into place last.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch

from grasp_lora.config import Config
from grasp_lora.data.encode import encode_rows
from grasp_lora.data.tasks import TaskSpec, get_task
from grasp_lora.io import MANIFEST, Timer, write_manifest
from grasp_lora.training.loop import train

TRAIN_LOG = "train_log.jsonl"


def peft_lora_config(cfg: Config, base_model_name: Optional[str] = None) -> Any:
    from peft import LoraConfig

    lora = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    if base_model_name is not None:
        lora.base_model_name_or_path = base_model_name
    return lora


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or cannot tell: leave its folder alone
    return True


def _remove_dead_attempts(out_dir: Path) -> None:
    """Temp folders of earlier attempts at this adapter whose process is gone (killed: no clean-up
    ran). The unit is complete now, so they can never be finished; a live process's is kept."""
    for p in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def train_adapter(
    model: torch.nn.Module,
    tokenizer: Any,
    train_rows: Sequence[Mapping[str, Any]],
    val_rows: Sequence[Mapping[str, Any]],
    task: str | TaskSpec,
    lang: str,
    cfg: Config,
    out_dir: str | Path,
    base_model_name: str,
    *,
    data_hashes: Optional[dict[str, str]] = None,
    accelerator: Any = None,
    progress: bool = True,
    unload: bool = True,
) -> dict[str, Any]:
    """Train one LoRA adapter on `model` (frozen) and write it to `out_dir`; returns the manifest.

    `get_peft_model` injects LoRA layers into `model` in place. With `unload` (default) they are
    removed again after saving, so the caller's base model is pristine for the next language; with
    `unload=False` the model keeps the trained (best-epoch) adapter active, e.g. to evaluate it
    right away.
    """
    from accelerate.utils import set_seed
    from peft import get_peft_model

    from grasp_lora import distributed as dist

    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    timer = Timer()
    seed = cfg.train.seed
    # Python, NumPy and torch (CPU and CUDA): LoRA's A init is random, and so is dropout.
    set_seed(seed)

    with timer.phase("tokenize"):
        train_set = encode_rows(tokenizer, train_rows, task, lang, cfg.data.max_length, cfg.data.max_article_tokens)
        val_set = encode_rows(tokenizer, val_rows, task, lang, cfg.data.max_length, cfg.data.max_article_tokens)

    for p in model.parameters():
        p.requires_grad_(False)  # the backbone stays frozen whatever the caller left on
    peft_model = get_peft_model(model, peft_lora_config(cfg, base_model_name))

    # Rank 0 owns the folder (its pid names it); the other ranks never write to it.
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"

    def fresh_tmp() -> None:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)

    dist.run_on_main(fresh_tmp, f"train adapter {lang}: create {tmp}")

    result = train(
        peft_model, train_set, val_set, cfg.train,
        log_path=str(tmp / TRAIN_LOG), progress=progress, accelerator=accelerator, timer=timer, seed=seed,
    )

    trained = [p for p in peft_model.parameters() if p.requires_grad]
    digests = dist.agree_on_digest(dist.tensors_digest(trained), f"train adapter {lang}: trained weights")
    manifest: dict[str, Any] = {}

    def save() -> None:
        with timer.phase("save"):
            # The loop restored the best epoch's weights; those are what we save.
            peft_model.save_pretrained(str(tmp), safe_serialization=True)
        timings = dict(timer.timings)
        timings["total"] = time.perf_counter() - t0
        parallel = {"processes": dist.world_size(), "rank_digests": digests} if dist.world_size() > 1 else {}
        manifest.update(write_manifest(
            tmp,
            stage="train_adapter",
            task=get_task(task).name,
            lang=lang,
            base_model=base_model_name,
            seed=seed,
            lora={"r": cfg.lora.r, "alpha": cfg.lora.alpha, "dropout": cfg.lora.dropout,
                  "target_modules": list(cfg.lora.target_modules)},
            config=cfg.to_dict(),
            n_train=len(train_set),
            n_val=len(val_set),
            train_target_tokens=sum(sum(1 for x in ex["labels"] if x != -100) for ex in train_set),
            epochs=result.epochs,
            best_epoch=result.best_epoch,
            best_val_loss=result.best_val_loss,
            steps=result.steps,
            stopped_early=result.stopped_early,
            timings=timings,
            wall_clock_seconds=timings["total"],
            data_hashes=dict(data_hashes or {}),
            files=sorted(p.name for p in tmp.iterdir()) + [MANIFEST],
            **parallel,
        ))
        # A leftover incomplete out_dir (an earlier crash) is replaced; a rename onto a non-empty
        # directory is not possible, so remove it first. The manifest inside tmp is written last,
        # so an out_dir that exists is always complete.
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
        _remove_dead_attempts(out_dir)

    dist.run_on_main(save, f"train adapter {lang}: write {out_dir}")

    if unload:
        peft_model.unload()  # strips the LoRA layers from `model` in place
    return manifest
