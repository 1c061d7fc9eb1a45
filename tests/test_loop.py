"""The one training loop: accumulation, hooks, StepLR, early stopping, best weights, determinism."""

from __future__ import annotations

import json
import math

import torch
from peft import LoraConfig, get_peft_model

from grasp_lora.config import TrainConfig
from grasp_lora.io import Timer
from grasp_lora.models.tiny import BOS, EOS, tiny_model
from grasp_lora.training.loop import EpochShuffle, LoopState, micro_dev_loss_fn, train
from grasp_lora.training.loss import IGNORE, collate, lm_loss, per_example_losses


def make_example(prompt: list[int], target: list[int]) -> dict[str, list[int]]:
    ids = [BOS] + prompt + target + [EOS]
    return {"input_ids": ids, "labels": [IGNORE] * (1 + len(prompt)) + target + [EOS]}


def random_examples(n: int, seed: int, prompt_len: int = 8, target_len: int = 4) -> list[dict[str, list[int]]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        p = torch.randint(4, 260, (prompt_len + i % 3,), generator=g).tolist()
        t = torch.randint(4, 260, (target_len + i % 2,), generator=g).tolist()
        out.append(make_example(p, t))
    return out


def lora_model(seed: int = 0):
    model, _ = tiny_model("llama", seed=0)
    torch.manual_seed(seed)
    return get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    )


def cfg(**kw) -> TrainConfig:
    base = dict(lr=1e-2, batch_size=1, grad_accum=1, epochs=3, lr_gamma=0.85, patience=3, eval_batch_size=4, seed=7)
    base.update(kw)
    return TrainConfig(**base)


class Recorder:
    def __init__(self) -> None:
        self.steps: list[int] = []
        self.epochs_seen: list[int] = []
        self.started = 0
        self.ended = 0
        self.snapshots: dict[int, list[torch.Tensor]] = {}

    def on_train_start(self, state: LoopState) -> None:
        self.started += 1

    def on_optimizer_step(self, state: LoopState) -> None:
        assert state.timer is not None and state.optimizer is not None
        self.steps.append(state.step)
        self.epochs_seen.append(state.epoch)

    def on_epoch_end(self, state: LoopState) -> None:
        self.snapshots[state.epoch] = [p.detach().clone() for p in state.model.parameters() if p.requires_grad]

    def on_train_end(self, state: LoopState) -> None:
        self.ended += 1


def test_overfits_four_examples():
    model, _ = tiny_model("llama", seed=0)  # every weight trainable: enough capacity to memorise
    data = random_examples(4, seed=1)
    before = float(per_example_losses(model, data, 4).mean())
    result = train(model, data, data, cfg(epochs=10, lr=1e-2, lr_gamma=1.0, patience=10), progress=False)
    after = float(per_example_losses(model, data, 4).mean())
    assert after < 0.5 * before, (before, after)
    train_losses = [e["train_loss"] for e in result.epochs]
    assert train_losses[-1] < train_losses[0]
    assert result.best_val_loss is not None and abs(result.best_val_loss - after) < 1e-5
    assert set(result.timings) >= {"training", "validation"}


def test_hooks_once_per_optimizer_step_with_trailing_partial_window(tmp_path):
    model = lora_model()
    rec = Recorder()
    log = tmp_path / "log.jsonl"
    result = train(
        model, random_examples(10, seed=2), random_examples(2, seed=3), cfg(epochs=2, grad_accum=3),
        hooks=[rec], log_path=log, progress=False,
    )
    # 10 micro-batches, accumulation 3 -> windows 3, 3, 3, 1 -> 4 optimizer steps per epoch.
    assert result.steps == 8
    assert rec.steps == list(range(1, 9))
    assert rec.epochs_seen == [1] * 4 + [2] * 4
    assert rec.started == 1 and rec.ended == 1
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    step_rows = [r for r in rows if r["event"] == "step"]
    assert [r["step"] for r in step_rows] == list(range(1, 9))
    assert all(set(r) >= {"step", "epoch", "loss", "lr", "time"} for r in step_rows)
    assert [r["epoch"] for r in rows if r["event"] == "epoch"] == [1, 2]


def test_accumulation_matches_a_hand_written_reference():
    """Windows of 3, 3, 3, 1: each step's gradient is the mean over its window's micro-batches."""
    data = random_examples(10, seed=4)
    c = cfg(epochs=1, grad_accum=3, lr=1e-2)

    model = lora_model()
    train(model, data, None, c, progress=False)
    got = [p.detach().clone() for p in model.parameters() if p.requires_grad]

    ref = lora_model()
    ref.train()
    params = [p for p in ref.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
    sampler = EpochShuffle(len(data), c.seed)
    sampler.epoch = 1
    order = list(sampler)
    for w in range(0, len(order), 3):
        window = order[w : w + 3]
        for i in window:
            loss_sum, n = lm_loss(ref, collate([data[i]], pad_id=0))
            (loss_sum / n / len(window)).backward()
        opt.step()
        opt.zero_grad()
    for a, b in zip(got, params):
        torch.testing.assert_close(a, b.detach(), atol=1e-6, rtol=0)


def test_step_lr_once_per_epoch():
    model = lora_model()
    # Batch 2 (padded): 5 examples -> 3 micro-batches -> windows of 2 and 1 -> 2 steps per epoch.
    result = train(model, random_examples(5, seed=5), None, cfg(epochs=4, batch_size=2, grad_accum=2, lr=1e-3, lr_gamma=0.5), desc="steplr")
    assert [e["lr"] for e in result.epochs] == [1e-3 * 0.5**k for k in range(4)]
    assert [e["steps"] for e in result.epochs] == [2, 4, 6, 8]
    assert result.best_epoch is None and result.best_val_loss is None


def test_early_stopping_restores_best_weights():
    # The validation set asks for other targets after the same prompts: fitting the training
    # targets makes it worse after at most a few epochs.
    g = torch.Generator().manual_seed(6)
    prompts = [torch.randint(4, 260, (6,), generator=g).tolist() for _ in range(4)]
    train_set = [make_example(p, [10, 11, 12]) for p in prompts]
    val_set = [make_example(p, [200, 201, 202]) for p in prompts]
    model = lora_model()
    rec = Recorder()
    result = train(model, train_set, val_set, cfg(epochs=20, lr=3e-2, patience=2, lr_gamma=1.0), hooks=[rec], progress=False)

    assert result.stopped_early
    assert len(result.epochs) == result.best_epoch + 2 < 20
    vals = [e["val_loss"] for e in result.epochs]
    assert result.best_val_loss == min(vals) == vals[result.best_epoch - 1]
    assert vals[-1] > result.best_val_loss
    # The model now holds exactly the best epoch's weights, not the last epoch's.
    final = [p.detach() for p in model.parameters() if p.requires_grad]
    for a, b in zip(final, rec.snapshots[result.best_epoch]):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(final, rec.snapshots[len(result.epochs)]))
    assert abs(float(per_example_losses(model, val_set, 4).mean()) - result.best_val_loss) < 1e-6


def test_same_seed_same_losses_and_max_steps():
    data = random_examples(6, seed=8)
    a = train(lora_model(), data, data[:2], cfg(epochs=2, grad_accum=2), progress=False)
    b = train(lora_model(), data, data[:2], cfg(epochs=2, grad_accum=2), progress=False)
    c = train(lora_model(), data, data[:2], cfg(epochs=2, grad_accum=2), progress=False, seed=99)
    assert [e["train_loss"] for e in a.epochs] == [e["train_loss"] for e in b.epochs]
    assert [e["val_loss"] for e in a.epochs] == [e["val_loss"] for e in b.epochs]
    assert [e["train_loss"] for e in a.epochs] != [e["train_loss"] for e in c.epochs]

    rec = Recorder()
    capped = train(lora_model(), data, data[:2], cfg(epochs=5, grad_accum=2, max_steps=4), hooks=[rec], progress=False)
    assert capped.steps == 4 and rec.steps == [1, 2, 3, 4]
    assert len(capped.epochs) == 2 and capped.epochs[-1]["val_loss"] is not None
    assert not capped.stopped_early


def test_hook_can_stop_and_timer_is_shared():
    class Stopper:
        def on_optimizer_step(self, state: LoopState) -> None:
            with state.timer.phase("pruning"):
                pass
            if state.step == 3:
                state.stop = True

    timer = Timer()
    result = train(lora_model(), random_examples(8, seed=9), None, cfg(epochs=3), hooks=[Stopper()], timer=timer, progress=False)
    assert result.steps == 3 and len(result.epochs) == 1
    assert "pruning" in result.timings and "pruning" in timer.timings


def test_micro_dev_loss_fn_tracks_the_model():
    model = lora_model()
    data = random_examples(5, seed=10)
    score = micro_dev_loss_fn(model, data, batch_size=2)
    first = score()
    assert math.isclose(first, float(per_example_losses(model, data, 3).mean()), abs_tol=1e-6)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)
    assert abs(score() - first) > 1e-4
