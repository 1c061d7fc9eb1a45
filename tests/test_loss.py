"""The targets-only head gives the same loss and gradients as the full-logits path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model

from grasp_lora.models.tiny import BOS, EOS, tiny_config, tiny_model
from grasp_lora.training.loss import IGNORE, collate, lm_loss, per_example_losses, target_logits


def make_example(prompt_len: int, target_len: int, seed: int) -> dict[str, list[int]]:
    g = torch.Generator().manual_seed(seed)
    prompt = [BOS] + torch.randint(4, 260, (prompt_len - 1,), generator=g).tolist()
    target = torch.randint(4, 260, (target_len - 1,), generator=g).tolist() + [EOS]
    return {"input_ids": prompt + target, "labels": [IGNORE] * prompt_len + target}


def peft_tiny(arch: str, softcap: float | None = None):
    if softcap is None:
        model, _ = tiny_model(arch, seed=1)
    else:
        from transformers import AutoModelForCausalLM

        config = tiny_config(arch)
        config.final_logit_softcapping = softcap
        torch.manual_seed(1)
        model = AutoModelForCausalLM.from_config(config)
    torch.manual_seed(2)
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    )
    # B starts at zero; give it values so LoRA gradients flow through both factors.
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    # A "normal" parameter trained alongside the adapters: the LM head (the op we slice).
    lm_head = peft_model.get_base_model().lm_head.weight
    lm_head.requires_grad_(True)
    peft_model.eval()
    return peft_model, lm_head


def grads_of(model, batch, targets_only):
    model.zero_grad(set_to_none=True)
    loss_sum, n = lm_loss(model, batch, targets_only=targets_only)
    (loss_sum / n).backward()
    named = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
    return loss_sum.detach(), int(n), named


def reference_loss(model, batch):
    """The textbook path, written out independently of lm_loss."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1),
        ignore_index=IGNORE, reduction="sum",
    )


@pytest.mark.parametrize("arch,softcap", [("llama", None), ("gemma3", 5.0)])
@pytest.mark.parametrize("sizes", [[(12, 5)], [(12, 5), (7, 3), (20, 9)]])
def test_targets_only_matches_full_logits(arch, softcap, sizes):
    model, lm_head = peft_tiny(arch, softcap)
    examples = [make_example(p, t, seed=i) for i, (p, t) in enumerate(sizes)]
    batch = collate(examples, pad_id=0)

    loss_full, n_full, g_full = grads_of(model, batch, targets_only=False)
    loss_tgt, n_tgt, g_tgt = grads_of(model, batch, targets_only=True)

    assert n_full == n_tgt == sum(t for _, t in sizes)
    with torch.no_grad():
        assert torch.allclose(loss_full, reference_loss(model, batch), atol=1e-5, rtol=0)
    assert abs(float(loss_full) - float(loss_tgt)) < 1e-5 * max(1.0, abs(float(loss_full)))
    lora = [k for k in g_full if "lora_" in k]
    assert len(lora) == 2 * 2 * 2  # 2 layers x (q, v) x (A, B)
    assert any("lm_head" in k for k in g_full)
    for k in g_full:
        assert g_full[k].abs().max() > 0, k
        torch.testing.assert_close(g_tgt[k], g_full[k], atol=1e-5, rtol=0, msg=k)


def test_targets_only_sees_softcapping():
    """The sliced path keeps the model's own post-head softcapping (it goes through forward)."""
    capped, _ = peft_tiny("gemma3", softcap=0.5)
    batch = collate([make_example(10, 4, seed=0)], pad_id=0)
    with torch.no_grad():
        loss_capped, _ = lm_loss(capped, batch)
        # With a cap of 0.5, logits lie in (-0.5, 0.5): the loss is within 1 nat of log(vocab).
        assert abs(float(loss_capped) / 4 - torch.log(torch.tensor(260.0))) < 1.0
        capped.get_base_model().config.final_logit_softcapping = None
        loss_uncapped, _ = lm_loss(capped, batch)
    assert abs(float(loss_capped) - float(loss_uncapped)) > 1e-3


def test_head_is_applied_only_at_target_positions():
    model, _ = peft_tiny("llama")
    examples = [make_example(12, 5, seed=0), make_example(7, 3, seed=1)]
    logits, targets = target_logits(model, collate(examples, pad_id=0), targets_only=True)
    # Union of next-token target positions: 11..15 (first) and 6..8 (second) -> 8 positions.
    assert logits.shape[:2] == targets.shape == (2, 8)
    assert (targets != IGNORE).sum() == 8


def test_collate_right_pads():
    a = {"input_ids": [2, 5, 6], "labels": [IGNORE, IGNORE, 6]}
    b = {"input_ids": [2, 7], "labels": [IGNORE, 7]}
    batch = collate([a, b], pad_id=9)
    assert batch["input_ids"].tolist() == [[2, 5, 6], [2, 7, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[IGNORE, IGNORE, 6], [IGNORE, 7, IGNORE]]
    with pytest.raises(ValueError):
        collate([{"input_ids": [1, 2], "labels": [1]}], pad_id=0)


def test_collate_left_pads_with_positions():
    a = {"input_ids": [2, 5, 6], "labels": [IGNORE, IGNORE, 6]}
    b = {"input_ids": [2, 7], "labels": [IGNORE, 7]}
    batch = collate([a, b], pad_id=9, left=True)
    assert batch["input_ids"].tolist() == [[2, 5, 6], [9, 2, 7]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 1, 1]]
    assert batch["labels"].tolist() == [[IGNORE, IGNORE, 6], [IGNORE, IGNORE, 7]]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 0, 1]]
    assert "position_ids" not in collate([a, b], pad_id=9)


def test_left_padding_shrinks_the_targets_only_head_to_the_longest_target():
    model, _ = peft_tiny("llama")
    examples = [make_example(12, 5, seed=0), make_example(7, 3, seed=1)]
    logits, targets = target_logits(model, collate(examples, pad_id=0, left=True), targets_only=True)
    # Both targets end at the last column: the union is the longer target (5), not 8 positions.
    assert logits.shape[:2] == targets.shape == (2, 5)
    assert (targets != IGNORE).sum() == 8


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
def test_left_padded_scoring_equals_one_by_one(arch):
    # Gemma 3 brings sliding-window layers (window 64 in the tiny config: one example is longer)
    # and final-logit softcapping; GPT-2's absolute positions fail unless the batch's
    # position_ids reach the model. The left-padded batch must match unpadded scoring for all.
    if arch == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(4)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=260, n_embd=32, n_layer=2, n_head=4, n_positions=128,
                                           bos_token_id=BOS, eos_token_id=EOS))
    else:
        model, _ = tiny_model(arch, seed=4)
    model.eval()
    shapes = [(90, 4), (5, 2), (30, 7), (9, 3), (12, 1), (40, 6)]
    examples = [make_example(p, t, seed=20 + i) for i, (p, t) in enumerate(shapes)]
    batched = per_example_losses(model, examples, batch_size=6)
    for i, ex in enumerate(examples):
        with torch.no_grad():
            expected = reference_loss(model, collate([ex], pad_id=0)) / sum(1 for x in ex["labels"][1:] if x != IGNORE)
        assert abs(float(batched[i]) - float(expected)) < 1e-5, (arch, i)


def test_per_example_losses_order_and_values():
    model, _ = tiny_model("llama", seed=3)
    examples = [make_example(p, t, seed=10 + i) for i, (p, t) in enumerate([(15, 4), (5, 2), (30, 7), (9, 3), (12, 1)])]
    model.train()  # must be put in eval mode inside and restored after
    batched = per_example_losses(model, examples, batch_size=2)
    assert model.training
    assert batched.shape == (5,)
    model.eval()
    for i, ex in enumerate(examples):
        batch = collate([ex], pad_id=0)
        with torch.no_grad():
            expected = reference_loss(model, batch) / sum(1 for x in ex["labels"][1:] if x != IGNORE)
        assert abs(float(batched[i]) - float(expected)) < 1e-5, i
    # Plain path agrees too.
    torch.testing.assert_close(per_example_losses(model, examples, batch_size=3, targets_only=False), batched, atol=1e-5, rtol=0)
