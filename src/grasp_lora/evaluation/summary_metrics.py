"""XL-Sum metrics: ROUGE-L F1 with XL-Sum's multilingual tokenisation, and sacrebleu BLEU-4.

Why a custom tokenizer: `rouge-score`'s default tokenizer keeps only ``[a-z0-9]`` and so deletes
every Arabic and Chinese character (an Arabic summary becomes zero tokens and scores 0). XL-Sum's
multilingual ROUGE (``multilingual_rouge_scoring``), in its default setting (no stemming, no
language segmenter), tokenises a text in this order, and so do we:

1. lower-case;
2. BERT's basic cleaning: control characters dropped, whitespace normalised, every Unicode "P"
   character and every ASCII non-alphanumeric character removed and treated as a word break
   ("don't" -> "don t", "3.5%" -> "3 5");
3. OpenNMT's tokenizer in "aggressive" mode (the `pyonmttok` package, the same library the
   official scorer calls): it splits where the character class changes, letters/digits and
   symbols ("covid19" -> "covid 19", "great😀news" -> "great 😀 news", "€5" -> "€ 5");
4. every CJK ideograph becomes a token of its own (BERT's CJK blocks); the rest is split on
   whitespace.

``segmenter="jieba"`` (Chinese only) is XL-Sum's ``lang="chinese"`` mode: steps 1-2, then jieba's
word segmentation instead of steps 3-4. Like the official scorer we keep every token jieba emits,
including the single-space tokens it returns between words separated by a space (they count in
the LCS and in the lengths); only if jieba returns nothing does the default path apply.
"""

from __future__ import annotations

import functools
import unicodedata
from typing import Any, Callable, Sequence

SEGMENTERS = ("char", "jieba")


def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    # All ASCII non-letters/digits count as punctuation (^, $, ` are symbols in Unicode).
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def _is_dropped_control(ch: str) -> bool:
    if ch in "\t\n\r":
        return False  # whitespace, kept as a separator
    return ch in ("\x00", "\ufffd") or unicodedata.category(ch).startswith("C")


def _clean(text: str) -> str:
    """Steps 1-2: lower-case, drop control characters, punctuation removed as a word break;
    the words joined by single spaces (what the official sanitizer hands to the next step)."""
    out = []
    for ch in text.lower():
        if _is_dropped_control(ch):
            continue
        out.append(" " if _is_punct(ch) else ch)
    return " ".join("".join(out).split())


@functools.lru_cache(maxsize=1)
def _aggressive() -> Any:
    import pyonmttok

    return pyonmttok.Tokenizer("aggressive")


def _pretokenize(text: str) -> str:
    """Step 3: OpenNMT's aggressive mode (no joiners, no subwords), tokens re-joined by spaces."""
    tokens, _features = _aggressive().tokenize(text)
    return " ".join(tokens)


def _split_cjk(text: str) -> list[str]:
    return "".join(f" {ch} " if _is_cjk(ch) else ch for ch in text).split()


def _jieba_cut() -> Callable[[str], list[str]]:
    try:
        import jieba  # optional dependency: pip install 'grasp-lora[zh]'
    except ImportError as err:
        raise ImportError(
            "chinese_segmenter 'jieba' needs the jieba package: pip install jieba "
            "(or pip install 'grasp-lora[zh]'), or set eval.chinese_segmenter=char"
        ) from err
    return jieba.lcut


def onmt_version() -> str:
    try:
        from importlib.metadata import version

        return version("pyonmttok")
    except Exception:  # the version is informative only
        return "unknown"


def effective_segmenter(lang: str, segmenter: str = "char") -> str:
    """The segmenter actually used: jieba applies to Chinese only; everything else is 'char'."""
    if segmenter not in SEGMENTERS:
        raise ValueError(f"unknown Chinese segmenter {segmenter!r} (known: {', '.join(SEGMENTERS)})")
    return "jieba" if segmenter == "jieba" and lang.lower() == "zh" else "char"


def multilingual_tokenize(text: str, lang: str, segmenter: str = "char") -> list[str]:
    """XL-Sum default multilingual ROUGE tokens (see the module docstring)."""
    cleaned = _clean(text)
    if effective_segmenter(lang, segmenter) == "jieba":
        tokens = [t for t in _jieba_cut()(cleaned) if t]
        if tokens or not cleaned:
            return tokens
    if not cleaned:
        return []
    return _split_cjk(_pretokenize(cleaned))


class MultilingualTokenizer:
    """The object `rouge_score.rouge_scorer.RougeScorer(tokenizer=...)` wants: `.tokenize(text)`."""

    def __init__(self, lang: str, segmenter: str = "char") -> None:
        self.lang = lang
        self.segmenter = effective_segmenter(lang, segmenter)
        if self.segmenter == "jieba":
            _jieba_cut()  # fail now, with the install hint, rather than mid-evaluation

    def tokenize(self, text: str) -> list[str]:
        return multilingual_tokenize(text, self.lang, self.segmenter)


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")


def rouge_l(predictions: Sequence[str], references: Sequence[str], lang: str, segmenter: str = "char") -> float:
    """Mean ROUGE-L F1 x 100 over the pairs (no pairs: 0.0). An empty side scores 0."""
    from rouge_score import rouge_scorer

    _check_pairs(predictions, references)
    if not predictions:
        return 0.0
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=MultilingualTokenizer(lang, segmenter))
    total = sum(scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references))
    return 100.0 * total / len(predictions)


def bleu_tokenizer(lang: str) -> str:
    """sacrebleu tokenizer: 'zh' for Chinese (characters), '13a' (mteval) for everything else."""
    return "zh" if lang.lower() == "zh" else "13a"


def _bleu(lang: str) -> Any:
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize=bleu_tokenizer(lang))  # max n-gram order 4, exp smoothing: the defaults


def bleu4(predictions: Sequence[str], references: Sequence[str], lang: str) -> float:
    """sacrebleu corpus BLEU-4 (0-100), one reference per prediction (no pairs: 0.0)."""
    _check_pairs(predictions, references)
    if not predictions:
        return 0.0
    return float(_bleu(lang).corpus_score(list(predictions), [list(references)]).score)


def bleu_signature(lang: str) -> str:
    """sacrebleu's signature string for our BLEU settings (one reference per prediction)."""
    bleu = _bleu(lang)
    bleu.corpus_score(["x"], [["x"]])  # sacrebleu only reports a signature after scoring once
    return str(bleu.get_signature())


def summary_settings(lang: str, segmenter: str = "char") -> dict[str, Any]:
    """What the metrics file records about how ROUGE-L and BLEU were computed."""
    return {
        "rouge": "rougeL F1 (rouge-score RougeScorer), mean over pairs",
        "rouge_tokenizer": (
            "xlsum-multilingual lang=chinese: lowercase, BERT basic cleaning, jieba words (space tokens kept)"
            if effective_segmenter(lang, segmenter) == "jieba"
            else "xlsum-multilingual default: lowercase, BERT basic cleaning, OpenNMT aggressive, CJK chars, whitespace"
        ),
        "rouge_pretokenizer": f"pyonmttok {onmt_version()} aggressive",
        "rouge_stemmer": False,
        "chinese_segmenter": effective_segmenter(lang, segmenter),
        "bleu_tokenizer": bleu_tokenizer(lang),
        "bleu_signature": bleu_signature(lang),
    }
