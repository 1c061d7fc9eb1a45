"""Tiny random-init models built in code, for tests and for trying the CLI in seconds.

`tiny-llama` and `tiny-gemma3` are builtin model names (see models.registry): they have the real
architectures (q_proj/v_proj attention, decoder layers) at toy sizes, with a byte-level tokenizer
that round-trips any Unicode text (Arabic and Chinese included) in 256 byte tokens + 4 specials.
"""

from __future__ import annotations

from pathlib import Path

import torch

PAD, EOS, BOS, UNK = 0, 1, 2, 3
TINY_NAMES = ("tiny-llama", "tiny-gemma3")


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": PAD, "<eos>": EOS, "<bos>": BOS, "<unk>": UNK}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", BOS)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=4096,
    )


def tiny_config(arch: str = "llama", vocab_size: int = 260):
    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        tie_word_embeddings=False,
    )
    if arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(**common)
    if arch == "gemma3":
        from transformers import Gemma3TextConfig

        return Gemma3TextConfig(**common, head_dim=8, sliding_window=64, query_pre_attn_scalar=8)
    raise ValueError(f"unknown tiny architecture {arch!r} (known: llama, gemma3)")


def tiny_model(arch: str = "llama", seed: int = 0):
    """A deterministic random-init causal LM (fp32) and its byte-level tokenizer."""
    from transformers import AutoModelForCausalLM

    config = tiny_config(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.eval()
    return model, tiny_tokenizer()


def save_tiny_model(out_dir: str | Path, arch: str = "llama", seed: int = 0) -> Path:
    """Write a tiny model as a normal Hugging Face folder (safetensors + tokenizer)."""
    out = Path(out_dir)
    model, tok = tiny_model(arch, seed)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
