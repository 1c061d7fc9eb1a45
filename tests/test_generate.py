"""Batched, left-padded, KV-cached greedy generation equals one-by-one generation; resume works."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model

from grasp_lora.evaluation.generate import clean_prediction, generate_batch, generate_predictions, read_predictions
from grasp_lora.models.tiny import EOS, tiny_model


def qa_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        # Contexts of very different lengths, so batches really are padded.
        context = " ".join(["The river flows past the old mill."] * (1 + (i * 3) % 7))
        rows.append({"id": f"ex{i}", "context": context, "question": f"What flows past mill {i}?", "answers": ["river"]})
    return rows


def stopping_model(arch: str = "llama", seed: int = 0):
    """A tiny model that emits EOS wherever it would have emitted its most frequent token, so
    sequences in one batch stop at different steps."""
    model, tok = tiny_model(arch, seed=seed)
    g = torch.Generator().manual_seed(0)
    probe = [[2] + torch.randint(4, 260, (n,), generator=g).tolist() for n in (5, 20, 40)]
    outs = generate_batch(model, probe, max_new_tokens=24, pad_id=0, eos_ids=[EOS])
    counts = torch.bincount(torch.tensor([t for o in outs for t in o]), minlength=260)
    frequent = int(counts.argmax())
    with torch.no_grad():
        head = model.lm_head.weight
        head[EOS] = head[frequent] * 1.01
    return model, tok


class Recording(torch.nn.Module):
    """Any module with .generate: records the prompt widths it is asked to continue."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.widths: list[int] = []
        self.calls = 0

    def generate(self, **kwargs):
        self.calls += 1
        self.widths.append(kwargs["input_ids"].shape[1])
        return self.inner.generate(**kwargs)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_batched_equals_one_by_one(tmp_path, arch):
    model, tok = stopping_model(arch)
    rows = qa_rows(5)
    batched = generate_predictions(model, tok, "mlqa", "en", rows, tmp_path / "b.jsonl", batch_size=3,
                                   max_new_tokens=10, progress=False)
    single = generate_predictions(model, tok, "mlqa", "en", rows, tmp_path / "s.jsonl", batch_size=1,
                                  max_new_tokens=10, progress=False)
    authors = generate_predictions(model, tok, "mlqa", "en", rows, tmp_path / "a.jsonl", batch_size=1,
                                   max_new_tokens=10, progress=False, use_cache=False)
    assert list(batched) == [r["id"] for r in rows]
    assert batched == single == authors
    assert read_predictions(tmp_path / "b.jsonl") == batched


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_generate_batch_stops_per_sequence(arch):
    """Random prompts of very different lengths: sequences in one left-padded batch stop at EOS
    at different steps, and each equals its own unpadded run (with and without the KV cache)."""
    model, _ = stopping_model(arch)
    g = torch.Generator().manual_seed(1)
    prompts = [[2] + torch.randint(4, 260, (n,), generator=g).tolist() for n in (3, 50, 12, 90, 7, 33)]
    batched = generate_batch(model, prompts, max_new_tokens=16, pad_id=0, eos_ids=[EOS])
    for p, out in zip(prompts, batched):
        assert out == generate_batch(model, [p], max_new_tokens=16, pad_id=0, eos_ids=[EOS])[0]
        assert out == generate_batch(model, [p], max_new_tokens=16, pad_id=0, eos_ids=[EOS], use_cache=False)[0]
        assert EOS not in out
    lengths = [len(o) for o in batched]
    assert min(lengths) < 16 and max(lengths) == 16


def test_peft_model_and_generic_module(tmp_path):
    base, tok = stopping_model("llama")
    torch.manual_seed(0)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    rows = qa_rows(4)
    a = generate_predictions(peft_model, tok, "mlqa", "en", rows, tmp_path / "p4.jsonl", batch_size=4, max_new_tokens=6, progress=False)
    b = generate_predictions(peft_model, tok, "mlqa", "en", rows, tmp_path / "p1.jsonl", batch_size=1, max_new_tokens=6, progress=False)
    assert a == b
    wrapped = Recording(peft_model)
    c = generate_predictions(wrapped, tok, "mlqa", "en", rows, tmp_path / "w.jsonl", batch_size=2, max_new_tokens=6, progress=False)
    assert c == a and wrapped.calls == 2
    with peft_model.disable_adapter():
        plain = generate_predictions(peft_model, tok, "mlqa", "en", rows, tmp_path / "base.jsonl", batch_size=4, max_new_tokens=6, progress=False)
    assert plain != a  # the adapter is really used


def test_resume_skips_done_ids_and_survives_a_torn_line(tmp_path):
    model, tok = stopping_model("llama")
    rows = qa_rows(6)
    out = tmp_path / "preds.jsonl"
    first = generate_predictions(model, tok, "mlqa", "en", rows[:3], out, batch_size=2, max_new_tokens=8, progress=False)
    with open(out, "a", encoding="utf-8") as f:
        f.write('{"id": "ex3", "predic')  # a crash mid-append
    wrapped = Recording(model)
    stats: dict = {}
    full = generate_predictions(wrapped, tok, "mlqa", "en", rows, out, batch_size=2, max_new_tokens=8, progress=False, stats=stats)
    assert stats["sequences"] == 3 and wrapped.calls == 2  # only ex3..ex5, in batches of 2
    assert {k: full[k] for k in first} == first
    lines = out.read_text(encoding="utf-8").splitlines()
    # Lines are in completion order (longest prompts first); the first three are the old ones.
    assert sorted(json.loads(line)["id"] for line in lines[:3]) == ["ex0", "ex1", "ex2"]
    assert sorted(json.loads(line)["id"] for line in lines) == [r["id"] for r in rows]
    fresh = generate_predictions(model, tok, "mlqa", "en", rows, tmp_path / "fresh.jsonl", batch_size=4, max_new_tokens=8, progress=False)
    assert full == fresh
    # Everything done: nothing is generated again.
    again = Recording(model)
    assert generate_predictions(again, tok, "mlqa", "en", rows, out, max_new_tokens=8, progress=False) == full
    assert again.calls == 0


def test_prompt_cut_and_length_sorted_batches(tmp_path):
    model, tok = tiny_model("llama", seed=0)
    rows = qa_rows(6)
    wrapped = Recording(model)
    stats: dict = {}
    generate_predictions(wrapped, tok, "mlqa", "en", rows, tmp_path / "p.jsonl", batch_size=2,
                         max_new_tokens=4, max_total=140, progress=False, stats=stats)
    assert max(wrapped.widths) <= 140 - 4
    assert wrapped.widths == sorted(wrapped.widths, reverse=True)
    assert stats["new_tokens"] == 6 * 4 and stats["seconds"] > 0
    with pytest.raises(ValueError):
        generate_predictions(model, tok, "mlqa", "en", rows[:1] * 2, tmp_path / "dup.jsonl", progress=False)


def test_clean_prediction():
    assert clean_prediction(" Paris\nis the\r\nanswer ", "Answer:") == "Paris is the answer"
    assert clean_prediction(" Answer: Paris", "Answer:") == "Paris"
    assert clean_prediction("x\nAnswer: a\nAnswer: b ", "\nAnswer:") == "b"
    assert clean_prediction("答案:北京", "答案:") == "北京"
    assert clean_prediction("", "Answer:") == ""
