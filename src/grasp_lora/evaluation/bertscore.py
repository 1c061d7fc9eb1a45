"""BERTScore F1 (Zhang et al., 2020), implemented here, with any Hugging Face encoder or causal LM.

Why our own implementation (checked against transformers 5.23):
- bert-score 0.3.13 fails with the Gemma tokenizer (it tokenises to the tokenizer's
  model_max_length, which is astronomically large for Gemma);
- torchmetrics 1.9.0's BERTScore accepts a user model, tokenizer and forward function, but
  (a) restores the length-sorted order with the permutation instead of its inverse, so candidates
  and references of different length orders are scored against the wrong partners (we saw a
  non-identical pair score exactly 1.0 on the tiny model; torchmetrics issue #2728 is still open),
  and (b) drops the first and the last attended token of every text as [CLS]/[SEP], which for a
  decoder tokenizer (BOS only, no EOS) deletes a real content token.

The metric: contextual embeddings from one hidden layer, L2-normalised; every candidate token is
matched to its most similar reference token (precision) and every reference token to its most
similar candidate token (recall), F = 2PR / (P + R). Special tokens (BOS, CLS, SEP) are excluded.
Optional idf weighting with BERTScore's +1 smoothing, computed on the reference corpus:
idf(w) = log((M + 1) / (df(w) + 1)), M = number of references, a token never seen in a reference
gets log(M + 1). Optional baseline rescaling F' = (F - b) / (1 - b).

Baselines: BERTScore publishes b only for its own encoders and layers. For any other encoder we
compute b as the mean F over mismatched pairs of the evaluated references themselves (reference i
against reference pi(i), pi a seeded random cyclic permutation, so no text meets itself). Using the
references only, not the candidates, makes b a property of encoder + test set: every system scored
on the same test set with the same encoder is rescaled by the same b. A published b can be passed
as `baseline=`.

Encoders: (a) a causal LM (our model), hidden states with ``output_hidden_states=True``, default
layer = num_layers // 2, reported under a name like "gemma-3-270m@layer9" so nobody mistakes it for
the paper's (unnamed) encoder; (b) any HF encoder through `load_encoder` (AutoModel); default layers
from BERTScore's table for the multilingual models it lists, else the middle layer.

An empty text (no content token) makes a pair's F undefined; such a pair scores 0 on the reported
scale, also when rescaling (bert-score would rescale its raw 0 to -b / (1 - b), which for a causal
LM's hidden states, b ~ 0.99, is about -99 per item), and is left out of a computed baseline.
With several references per candidate (MLQA's gold answers) an item's score is the maximum F.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import torch

# BERTScore's recommended layers for the multilingual encoders its table lists.
BERTSCORE_DEFAULT_LAYERS = {
    "bert-base-multilingual-cased": 9,
    "xlm-roberta-base": 9,
    "xlm-roberta-large": 17,
}
DEFAULT_MAX_LENGTH = 512
IMPLEMENTATION = "grasp_lora.evaluation.bertscore (greedy cosine matching, Zhang et al. 2020)"

Reference = Union[str, Sequence[str]]


@dataclass
class BERTScoreResult:
    """Per-item scores in [.., 1] (F rescaled when asked; P and R never) and the settings used."""

    precision: list[float]
    recall: list[float]
    f1: list[float]
    settings: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------ the model


def num_layers(model: Any) -> int:
    config = model.config
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()  # multimodal Gemma 3 keeps the layer count in text_config
    return int(config.num_hidden_layers)


def default_layer(model: Any, name: Optional[str] = None) -> int:
    """BERTScore's layer for the encoders in its table, else the middle layer (num_layers // 2)."""
    short = (name or "").rstrip("/").split("/")[-1]
    if short in BERTSCORE_DEFAULT_LAYERS:
        return BERTSCORE_DEFAULT_LAYERS[short]
    return num_layers(model) // 2


def model_name(model: Any) -> str:
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    return name or type(model).__name__


def _backbone(model: Any) -> Any:
    """The model without its LM head (Gemma's 262k-word head would dominate time and memory).

    `base_model` is LlamaModel for LlamaForCausalLM, itself for BertModel, and leads through PEFT
    wrappers to the same backbone. A module without it (a test stub) is used as it is.
    """
    for _ in range(4):
        inner = getattr(model, "base_model", None)
        if inner is None or inner is model:
            break
        model = inner
    return model


def _device(model: Any) -> torch.device:
    param = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return param.device if param is not None else torch.device("cpu")


def _max_length(model: Any, tokenizer: Any, cap: int) -> int:
    limits = [cap]
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and tok_max < 1_000_000:  # Gemma's is ~1e30: "no limit"
        limits.append(tok_max)
    pos_max = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(pos_max, int):
        limits.append(pos_max)
    return min(limits)


# ------------------------------------------------------------------------------------ embeddings


@dataclass
class _Encoded:
    ids: list[int]  # content token ids (special tokens removed), for idf
    emb: torch.Tensor  # [len(ids), hidden] float32, L2-normalised, on CPU


def _tokenize(tokenizer: Any, texts: list[str], max_length: int) -> list[tuple[list[int], list[bool]]]:
    """Token ids with special tokens, and which positions are content (not special)."""
    enc = tokenizer(
        texts, add_special_tokens=True, truncation=True, max_length=max_length, return_special_tokens_mask=True
    )
    special_ids = set(getattr(tokenizer, "all_special_ids", []))
    out = []
    for i, ids in enumerate(enc["input_ids"]):
        ids = list(ids)
        if "special_tokens_mask" in enc:
            content = [not bool(s) for s in enc["special_tokens_mask"][i]]
        else:
            content = [t not in special_ids for t in ids]
        out.append((ids, content))
    return out


def embed_texts(
    texts: Sequence[str],
    model: Any,
    tokenizer: Any,
    layer: int,
    batch_size: int = 16,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> dict[str, _Encoded]:
    """Embed each distinct text once; the result is keyed by text, so order can never get mixed up."""
    unique = list(dict.fromkeys(texts))
    tokenized = _tokenize(tokenizer, unique, max_length) if unique else []
    backbone = _backbone(model)
    device = _device(model)
    pad_id = getattr(tokenizer, "pad_token_id", None)
    pad_id = 0 if pad_id is None else pad_id
    result: dict[str, _Encoded] = {}
    # Texts with no content token need no forward pass (and an all-padding row can give NaNs).
    todo = [i for i, (_, content) in enumerate(tokenized) if any(content)]
    for i, (ids, content) in enumerate(tokenized):
        if not any(content):
            result[unique[i]] = _Encoded([], torch.zeros(0, 0))
    todo.sort(key=lambda i: len(tokenized[i][0]), reverse=True)  # similar lengths share a batch
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()  # dropout would make the embeddings random
    try:
        with torch.inference_mode():
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                width = max(len(tokenized[i][0]) for i in batch)
                input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                attention = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):  # right padding: harmless for causal and bidirectional models
                    ids = tokenized[i][0]
                    input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                    attention[row, : len(ids)] = 1
                out = backbone(
                    input_ids=input_ids.to(device), attention_mask=attention.to(device), output_hidden_states=True
                )
                states = out.hidden_states
                if not 0 <= layer < len(states):
                    raise ValueError(f"BERTScore layer {layer} out of range: the model has layers 0..{len(states) - 1}")
                hidden = states[layer].float()
                for row, i in enumerate(batch):
                    ids, content = tokenized[i]
                    keep = torch.tensor(content, dtype=torch.bool, device=hidden.device)
                    vecs = hidden[row, : len(ids)][keep]
                    vecs = vecs / vecs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                    result[unique[i]] = _Encoded([t for t, c in zip(ids, content) if c], vecs.cpu())
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    return result


# ------------------------------------------------------------------------------------ scoring


def idf_table(reference_token_ids: Sequence[Sequence[int]]) -> tuple[dict[int, float], float]:
    """idf(w) = log((M + 1) / (df(w) + 1)) over the M references; unseen tokens get log(M + 1)."""
    m = len(reference_token_ids)
    df: dict[int, int] = {}
    for ids in reference_token_ids:
        for t in set(ids):
            df[t] = df.get(t, 0) + 1
    return {t: math.log((m + 1) / (n + 1)) for t, n in df.items()}, math.log(m + 1)


def _weights(ids: list[int], idf: Optional[tuple[dict[int, float], float]]) -> torch.Tensor:
    if idf is None:
        return torch.ones(len(ids))
    table, unseen = idf
    return torch.tensor([table.get(t, unseen) for t in ids], dtype=torch.float32)


def greedy_match(
    cand: torch.Tensor, ref: torch.Tensor, cand_w: torch.Tensor, ref_w: torch.Tensor
) -> tuple[float, float, float]:
    """(P, R, F) of one pair of normalised embedding matrices.

    A value is NaN where it is undefined: a side without content tokens, or whose idf weights
    sum to 0 (bert-score divides by that sum too and maps the NaN to 0).
    """
    nan = math.nan
    if cand.shape[0] == 0 or ref.shape[0] == 0:
        return nan, nan, nan
    sim = cand @ ref.T  # cosine similarities, [n_cand, n_ref]
    p = float((sim.max(dim=1).values * cand_w).sum() / cand_w.sum()) if cand_w.sum() > 0 else nan
    r = float((sim.max(dim=0).values * ref_w).sum() / ref_w.sum()) if ref_w.sum() > 0 else nan
    f = 2 * p * r / (p + r) if p + r != 0 else nan  # NaN propagates from p or r
    return p, r, f


def _pair_scores(
    pairs: Sequence[tuple[str, str]], enc: dict[str, _Encoded], idf: Optional[tuple[dict[int, float], float]]
) -> list[tuple[float, float, float]]:
    out = []
    for c, r in pairs:
        ce, re_ = enc[c], enc[r]
        out.append(greedy_match(ce.emb, re_.emb, _weights(ce.ids, idf), _weights(re_.ids, idf)))
    return out


def cyclic_permutation(n: int, seed: int) -> list[int]:
    """A seeded random permutation with no fixed point (Sattolo's algorithm: one n-cycle)."""
    perm = list(range(n))
    rng = random.Random(seed)
    for i in range(n - 1, 0, -1):
        j = rng.randrange(i)  # j < i: never leaves an element in place
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def bertscore(
    candidates: Sequence[str],
    references: Sequence[Reference],
    model: Any,
    tokenizer: Any,
    *,
    layer: Optional[int] = None,
    idf: bool = False,
    rescale: bool = False,
    batch_size: int = 16,
    name: Optional[str] = None,
    baseline: Optional[float] = None,
    baseline_seed: int = 0,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> BERTScoreResult:
    """Per-item BERTScore. `references[i]` is a string or a list of strings (max F is kept)."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} references")
    ref_lists = [[r] if isinstance(r, str) else list(r) for r in references]
    name = name or model_name(model)
    total_layers = num_layers(model)
    layer = default_layer(model, name) if layer is None else layer
    if not 0 <= layer <= total_layers:
        raise ValueError(f"BERTScore layer {layer} out of range for {name}: 0..{total_layers}")
    length = _max_length(model, tokenizer, max_length)

    flat_refs = [r for refs in ref_lists for r in refs]
    enc = embed_texts(list(candidates) + flat_refs, model, tokenizer, layer, batch_size, length)
    idf_w = idf_table([enc[r].ids for r in flat_refs]) if idf else None

    settings: dict[str, Any] = {
        "implementation": IMPLEMENTATION,
        "model": name,
        "model_class": type(model).__name__,
        "layer": layer,
        "num_layers": total_layers,
        "encoder": f"{name}@layer{layer}",
        "idf": idf,
        "idf_documents": len(flat_refs) if idf else None,
        "rescale": rescale,
        "baseline": None,
        "baseline_source": None,
        "max_length": length,
        "n_items": len(candidates),
        "multi_reference": "max F over an item's references",
        "undefined_pairs": "empty text (no content token) or zero idf weight: F = 0, also after rescaling",
    }
    if rescale:
        if baseline is None:
            firsts = [refs[0] for refs in ref_lists if refs]
            if len(firsts) < 2:
                raise ValueError("BERTScore rescaling needs >= 2 references to build a baseline (or pass baseline=)")
            perm = cyclic_permutation(len(firsts), baseline_seed)
            mismatched = [(firsts[perm[i]], firsts[i]) for i in range(len(firsts))]
            defined = [f for _, _, f in _pair_scores(mismatched, enc, idf_w) if not math.isnan(f)]
            if not defined:
                raise ValueError("BERTScore baseline: no mismatched reference pair has a defined score")
            baseline = sum(defined) / len(defined)
            settings["baseline_source"] = (
                f"mean F of {len(defined)} mismatched reference pairs (seeded cyclic shuffle, seed {baseline_seed})"
            )
            settings["baseline_seed"] = baseline_seed
        else:
            settings["baseline_source"] = "given"
        if baseline >= 1.0:
            raise ValueError(f"BERTScore baseline {baseline:.4f} >= 1: rescaling is undefined")
        settings["baseline"] = float(baseline)

    precision, recall, f1 = [], [], []
    for cand, refs in zip(candidates, ref_lists):
        best = (0.0, 0.0, -math.inf) if refs else (0.0, 0.0, 0.0)
        for p, r, f in _pair_scores([(cand, ref) for ref in refs], enc, idf_w):
            if math.isnan(f):
                # Undefined (e.g. an empty prediction): 0 on the REPORTED scale. bert-score would
                # rescale its raw 0 to -b / (1 - b), which for a decoder's hidden states (b ~ 0.99)
                # is about -99 per item and would swamp any average.
                p, r, f = (0.0 if math.isnan(p) else p), (0.0 if math.isnan(r) else r), 0.0
            elif rescale:
                f = (f - baseline) / (1.0 - baseline)  # type: ignore[operator]
            if f > best[2]:
                best = (p, r, f)
        precision.append(best[0])
        recall.append(best[1])
        f1.append(best[2])
    return BERTScoreResult(precision, recall, f1, settings)


def bertscore_f1(
    candidates: Sequence[str],
    references: Sequence[Reference],
    model: Any,
    tokenizer: Any,
    *,
    layer: Optional[int] = None,
    idf: bool = False,
    rescale: bool = False,
    batch_size: int = 16,
    name: Optional[str] = None,
    baseline: Optional[float] = None,
    baseline_seed: int = 0,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> tuple[float, dict[str, Any]]:
    """Corpus BERTScore F1 = mean item F x 100 (no items: 0.0), and the settings dict to record.

    The settings also carry the mean precision and recall x 100 (never rescaled).
    """
    res = bertscore(
        candidates,
        references,
        model,
        tokenizer,
        layer=layer,
        idf=idf,
        rescale=rescale,
        batch_size=batch_size,
        name=name,
        baseline=baseline,
        baseline_seed=baseline_seed,
        max_length=max_length,
    )
    n = len(res.f1)
    settings = dict(res.settings)
    settings["precision"] = 100.0 * sum(res.precision) / n if n else 0.0
    settings["recall"] = 100.0 * sum(res.recall) / n if n else 0.0
    return (100.0 * sum(res.f1) / n if n else 0.0), settings


@functools.lru_cache(maxsize=2)
def load_encoder(name_or_path: str, device: str = "auto") -> tuple[Any, Any, str]:
    """(model, tokenizer, name) for a Hugging Face encoder id or local folder (AutoModel)."""
    from transformers import AutoModel, AutoTokenizer

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    model = AutoModel.from_pretrained(name_or_path).to(device)
    model.eval()
    return model, tokenizer, name_or_path
