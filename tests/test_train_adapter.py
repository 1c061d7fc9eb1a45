"""Stage 1 end to end on a tiny model: a PEFT folder that PEFT alone reloads to the same logits."""

from __future__ import annotations

import os

import json

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from grasp_lora.config import Config
from grasp_lora.io import manifest_complete, read_json
from grasp_lora.models.tiny import save_tiny_model, tiny_model, tiny_tokenizer
from grasp_lora.training.adapters import TRAIN_LOG, train_adapter


def qa_rows(n: int, offset: int = 0) -> list[dict]:
    cities = ["Paris", "Rome", "Oslo", "Lima", "Cairo", "Quito", "Seoul", "Hanoi"]
    rows = []
    for i in range(offset, offset + n):
        city = cities[i % len(cities)]
        rows.append({
            "id": f"q{i}",
            "context": f"The meeting number {i} was held in {city} last spring.",
            "question": f"Where was meeting {i} held?",
            "answers": [city],
        })
    return rows


def small_config(**train) -> Config:
    cfg = Config()
    cfg.lora.r = 4
    cfg.lora.alpha = 8.0
    cfg.train.lr = 1e-2
    cfg.train.epochs = 3
    cfg.train.grad_accum = 2
    cfg.train.eval_batch_size = 4
    cfg.data.max_length = 256
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def sample_batch(tok) -> dict[str, torch.Tensor]:
    enc = tok(["Context: a cat sat.\nAnswer:", "Question: where?"], return_tensors="pt", padding=True)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def test_train_adapter_writes_a_folder_peft_reloads(tmp_path):
    base_dir = save_tiny_model(tmp_path / "base", "llama", seed=0)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    tok = tiny_tokenizer()
    out = tmp_path / "adapters" / "mlqa_en"
    # Leftovers of a crashed earlier attempt are replaced, not mixed in.
    out.mkdir(parents=True)
    (out / "stale.txt").write_text("old")
    # A killed attempt's temp folder (its process is gone) is removed; a live process's is kept.
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = out.parent / f".mlqa_en.tmp-{gone.pid}"
    live = out.parent / f".mlqa_en.tmp-{os.getppid()}"
    dead.mkdir()
    live.mkdir()

    manifest = train_adapter(
        model, tok, qa_rows(6), qa_rows(4, offset=6), "mlqa", "en", small_config(), out,
        base_model_name=str(base_dir), data_hashes={"train": "abc"}, progress=False, unload=False,
    )

    assert manifest_complete(out)
    assert not (out / "stale.txt").exists()
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    assert list(out.parent.glob(".mlqa_en.tmp-*")) == [live]
    live.rmdir()
    on_disk = read_json(out / "manifest.json")
    assert on_disk["base_model"] == str(base_dir) and on_disk["seed"] == 42
    assert on_disk["data_hashes"] == {"train": "abc"}
    assert len(on_disk["epochs"]) == 3 and on_disk["best_epoch"] in (1, 2, 3)
    assert on_disk["steps"] == 3 * 3  # 6 examples, batch 1, accumulation 2
    assert on_disk["timings"]["training"] > 0 and on_disk["wall_clock_seconds"] > 0
    assert on_disk["config"]["train"]["lr"] == 1e-2
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["r"] == 4 and adapter_cfg["lora_alpha"] == 8
    assert sorted(adapter_cfg["target_modules"]) == ["q_proj", "v_proj"]
    log_rows = [json.loads(line) for line in (out / TRAIN_LOG).read_text().splitlines()]
    assert sum(1 for r in log_rows if r["event"] == "step") == 9

    # The in-memory model (adapter still active, best epoch) vs a fresh base + PEFT's own loader.
    batch = sample_batch(tok)
    model.eval()
    with torch.no_grad():
        trained = model(**batch).logits
    fresh = AutoModelForCausalLM.from_pretrained(base_dir)
    with torch.no_grad():
        base_logits = fresh(**batch).logits
    reloaded = PeftModel.from_pretrained(fresh, str(out)).eval()
    with torch.no_grad():
        again = reloaded(**batch).logits
    torch.testing.assert_close(again, trained, atol=1e-6, rtol=0)
    assert (again - base_logits).abs().max() > 1e-4  # the adapter does something


def test_unload_restores_the_base_and_seed_is_deterministic(tmp_path):
    tok = tiny_tokenizer()
    batch = sample_batch(tok)
    model, _ = tiny_model("llama", seed=0)
    with torch.no_grad():
        before = model(**batch).logits

    m1 = train_adapter(model, tok, qa_rows(4), qa_rows(2, 4), "mlqa", "en", small_config(epochs=2), tmp_path / "a",
                       base_model_name="tiny-llama", progress=False)
    with torch.no_grad():
        after = model(**batch).logits
    torch.testing.assert_close(after, before, atol=0, rtol=0)
    assert not any("lora" in name for name, _ in model.named_parameters())

    m2 = train_adapter(model, tok, qa_rows(4), qa_rows(2, 4), "mlqa", "en", small_config(epochs=2), tmp_path / "b",
                       base_model_name="tiny-llama", progress=False)
    assert [e["val_loss"] for e in m1["epochs"]] == [e["val_loss"] for e in m2["epochs"]]
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
