"""MLQA exact match and token F1, computed the way MLQA's official evaluation (v1) computes them.

Written from METHOD.md, "Evaluation", not copied from the official script. The order of the steps matters
and is the official one:

1. lower-case;
2. delete every character whose Unicode category starts with "P", and every ASCII punctuation
   character (``string.punctuation`` also holds symbols such as ``$ + < = > ^ ` | ~``);
3. delete articles, each occurrence replaced by a space:
   en ``a an the``, es ``el la los las un una unos unas``,
   de ``der die das den dem des ein eine einer eines einem einen``,
   vi ``của là cái chiếc những`` (as whole words, ``\\b`` boundaries);
   ar: **every** occurrence of the letter pair "ال", anywhere, even inside a word ("قال" -> "ق");
   the official pattern does that and we reproduce it rather than fix it; zh and hi: none;
   any language MLQA does not have (a user's own, `data.prompts`): none, as hi;
4. tokenise: zh -- every character in U+4E00..U+9FA5 is a token of its own, the runs between
   them are split on whitespace; every other language -- split on whitespace.

EM: the token sequences are equal. F1: bag-of-tokens overlap, 0 when nothing is shared. Both take
the maximum over the gold answers; `qa_scores` averages over every reference question, and a
question without a prediction scores 0 (the official script counts it in the total too).

Edge case kept from the official script: a prediction and a gold that both normalise to nothing
(e.g. "" vs "the" in English) are an exact match (EM 1) but share no token (F1 0).
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from typing import Mapping, Optional, Sequence

SUPPORTED_LANGS = ("en", "es", "de", "vi", "ar", "zh", "hi")

_ASCII_PUNCT = frozenset(string.punctuation)

# Whole-word article patterns. Python's `re` is Unicode-aware for str patterns, so `\b` treats
# letters with diacritics (Vietnamese, German umlauts) as word characters, as the official one does.
# Vietnamese: the official v1 list (five words).
_ARTICLES: dict[str, Optional[re.Pattern[str]]] = {
    "en": re.compile(r"\b(a|an|the)\b"),
    "es": re.compile(r"\b(un|una|unos|unas|el|la|los|las)\b"),
    "de": re.compile(r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b"),
    "vi": re.compile(r"\b(của|là|cái|chiếc|những)\b"),
    # No word boundaries: the official Arabic pattern removes "ال" wherever it occurs.
    "ar": re.compile("ال"),
    "zh": None,
    "hi": None,
}

# The CJK range MLQA segments character by character (narrower than the full CJK block on purpose).
_ZH_CHAR = re.compile("[\u4e00-\u9fa5]")


def check_lang(lang: str) -> str:
    """The lower-cased language code (any: a language MLQA lacks is scored as hi is, no articles and
    whitespace tokens), or ValueError for one that is not a code."""
    code = lang.lower() if isinstance(lang, str) else ""
    if not code.strip() or code != code.strip():
        raise ValueError(f"MLQA metrics: {lang!r} is not a language code")
    return code


def _is_punct(ch: str) -> bool:
    return ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P")


def remove_punctuation(text: str) -> str:
    """Delete (not replace by a space) every Unicode-P and ASCII punctuation character."""
    return "".join(ch for ch in text if not _is_punct(ch))


def remove_articles(text: str, lang: str) -> str:
    """Replace each article of `lang` by a space (Arabic: every "ال", even inside words)."""
    pattern = _ARTICLES.get(check_lang(lang))
    return pattern.sub(" ", text) if pattern is not None else text


def _segment(text: str, lang: str) -> list[str]:
    if lang != "zh":
        return text.split()
    tokens: list[str] = []
    run: list[str] = []  # the characters since the last CJK character
    for ch in text:
        if _ZH_CHAR.match(ch):
            tokens.extend("".join(run).split())
            run = []
            tokens.append(ch)
        else:
            run.append(ch)
    tokens.extend("".join(run).split())
    return tokens


def answer_tokens(text: str, lang: str) -> list[str]:
    """The normalised token sequence of an answer (steps 1-4 of the module docstring)."""
    code = check_lang(lang)
    text = remove_articles(remove_punctuation(text.lower()), code)
    return _segment(text, code)


def normalize_answer(text: str, lang: str) -> str:
    """The normalised answer as one string: its tokens joined by single spaces."""
    return " ".join(answer_tokens(text, lang))


def _f1_tokens(pred: Sequence[str], gold: Sequence[str]) -> float:
    common = Counter(pred) & Counter(gold)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred)
    recall = num_same / len(gold)
    return 2 * precision * recall / (precision + recall)


def exact_match(pred: str, golds: Sequence[str], lang: str) -> float:
    """1.0 if the prediction's tokens equal some gold's tokens, else 0.0 (no golds: 0.0)."""
    p = answer_tokens(pred, lang)
    return max((float(p == answer_tokens(g, lang)) for g in golds), default=0.0)


def token_f1(pred: str, golds: Sequence[str], lang: str) -> float:
    """Best bag-of-tokens F1 over the golds, in [0, 1] (no golds: 0.0)."""
    p = answer_tokens(pred, lang)
    return max((_f1_tokens(p, answer_tokens(g, lang)) for g in golds), default=0.0)


def qa_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]], lang: str) -> dict[str, float]:
    """EM and F1 x 100, averaged over ALL reference questions.

    A question id absent from `predictions` scores 0 on both; prediction ids that are not
    reference questions are ignored (the caller counts and reports them). No references: 0.0.
    """
    check_lang(lang)
    if isinstance(next(iter(references.values()), []), str):
        raise TypeError("qa_scores: references must map each id to a LIST of gold answers")
    em_total = f1_total = 0.0
    for qid, golds in references.items():
        if qid not in predictions:
            continue  # scores 0, but still counted in the denominator below
        em_total += exact_match(predictions[qid], golds, lang)
        f1_total += token_f1(predictions[qid], golds, lang)
    n = len(references)
    if n == 0:
        return {"exact_match": 0.0, "f1": 0.0}
    return {"exact_match": 100.0 * em_total / n, "f1": 100.0 * f1_total / n}
