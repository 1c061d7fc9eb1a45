"""Teacher-forced causal-LM loss on target tokens only, and per-example losses for validation.

An encoded example is `{"input_ids": [int], "labels": [int]}`, both the same length, labels
-100 on the prompt (the Hugging Face convention: `labels[t]` is the token at position t; the model
predicts it from position t - 1). Losses are in nats.

The targets-only head: the LM head (a vocab-sized matmul, plus Gemma's final softcapping) is the
largest single op for small models with big vocabularies, yet only the few answer positions carry
a label. We ask the model for logits only at those positions through its own `logits_to_keep`
argument (transformers 5 takes a 1-D LongTensor of sequence indices), so whatever the model does
after the head (softcapping) is kept, and PEFT wrappers pass it through untouched.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

IGNORE = -100


def collate(examples: Sequence[dict[str, Any]], pad_id: int, left: bool = False) -> dict[str, torch.Tensor]:
    """Pad a list of encoded examples into a batch (labels -100 and mask 0 on padding).

    Right padding (training) keeps every real token at the same index as in the unpadded
    sequence, so a causal model's outputs on real tokens do not depend on the padding at all.
    Left padding (scoring) ends every row's targets at the last column, so the union of target
    positions that the targets-only head computes is the longest target, not the spread of the
    sequence lengths times the target length; the batch then carries `position_ids` counting
    real tokens from 0, so every real token keeps its unpadded position too.
    """
    if len(examples) == 0:
        raise ValueError("collate: empty batch")
    width = max(len(ex["input_ids"]) for ex in examples)
    n = len(examples)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    position_ids = torch.zeros((n, width), dtype=torch.long)
    for i, ex in enumerate(examples):
        ids, lab = ex["input_ids"], ex["labels"]
        if len(ids) != len(lab):
            raise ValueError(f"collate: input_ids and labels differ in length ({len(ids)} vs {len(lab)})")
        k = len(ids)
        cols = slice(width - k, width) if left else slice(0, k)
        input_ids[i, cols] = torch.as_tensor(ids, dtype=torch.long)
        labels[i, cols] = torch.as_tensor(lab, dtype=torch.long)
        attention_mask[i, cols] = 1
        position_ids[i, cols] = torch.arange(k)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    if left:
        batch["position_ids"] = position_ids
    return batch


def model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def pad_id_of(model: torch.nn.Module) -> int:
    """The pad id to collate with. Its value never matters for the loss (mask 0, label -100)."""
    config = getattr(model, "config", None)
    pad = getattr(config, "pad_token_id", None)
    if isinstance(pad, int):
        return pad
    return 0


def target_logits(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], targets_only: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and their next-token targets: `(logits [B, P, V], targets [B, P])`, targets -100
    where no label applies. With `targets_only`, P = the union over the batch of the positions t
    whose next token has a label; otherwise P = every position but the last.
    """
    device = model_device(model)
    input_ids = batch["input_ids"].to(device)
    attention_mask = batch["attention_mask"].to(device)
    labels = batch["labels"].to(device)
    extra = {"position_ids": batch["position_ids"].to(device)} if "position_ids" in batch else {}
    # Causal shift: the logits at position t predict the token at t + 1.
    next_labels = labels[:, 1:]
    seq_len = input_ids.shape[1]
    if not targets_only:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **extra).logits
        return logits[:, :-1], next_labels

    positions = (next_labels != IGNORE).any(dim=0).nonzero().squeeze(1)
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=positions, **extra
    ).logits
    if logits.shape[1] != positions.numel():
        # A model that ignores `logits_to_keep` (custom forward swallowing **kwargs) returns every
        # position; select the target ones ourselves so the result is still right.
        if logits.shape[1] != seq_len:
            raise RuntimeError(
                f"model returned logits for {logits.shape[1]} positions; expected {positions.numel()} "
                f"(logits_to_keep) or {seq_len} (all)"
            )
        logits = logits[:, positions]
    return logits, next_labels[:, positions]


def lm_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], targets_only: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(loss_sum, n_target_tokens)`: summed target-token cross-entropy over the batch (a scalar
    tensor carrying the graph) and the number of target tokens (a long scalar tensor).

    Cross-entropy is computed in fp32 whatever the model's dtype (bf16 logits lose too much
    precision in the log-sum-exp over a large vocabulary).
    """
    logits, targets = target_logits(model, batch, targets_only)
    vocab = logits.shape[-1]
    loss_sum = F.cross_entropy(
        logits.float().reshape(-1, vocab), targets.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    return loss_sum, (targets != IGNORE).sum()


@torch.no_grad()
def per_example_losses(
    model: torch.nn.Module,
    examples: Sequence[dict[str, Any]],
    batch_size: int,
    targets_only: bool = True,
) -> torch.Tensor:
    """Mean target-token cross-entropy of each example (fp32, CPU), in the order given.

    Runs in eval mode (no dropout) and restores the model's mode afterwards. Examples are batched
    in length-sorted buckets so a batch pads to almost nothing, and left-padded so that the
    targets-only head computes only the last few positions of the batch. An example with no target
    token scores 0.
    """
    n = len(examples)
    out = torch.zeros(n, dtype=torch.float32)
    if n == 0:
        return out
    was_training = model.training
    model.eval()
    try:
        pad = pad_id_of(model)
        order = sorted(range(n), key=lambda i: len(examples[i]["input_ids"]))
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            batch = collate([examples[i] for i in idx], pad, left=True)
            logits, targets = target_logits(model, batch, targets_only)
            vocab = logits.shape[-1]
            tok = F.cross_entropy(
                logits.float().reshape(-1, vocab), targets.reshape(-1), ignore_index=IGNORE, reduction="none"
            ).view(targets.shape)
            counts = (targets != IGNORE).sum(dim=1)
            means = tok.sum(dim=1) / counts.clamp(min=1)
            out[torch.as_tensor(idx)] = means.float().cpu()
    finally:
        model.train(was_training)
    return out
