"""XL-Sum ROUGE-L / BLEU: tokenisation, hand-worked LCS values, BLEU tokenizers, settings."""

import math
import re
import sys
import types

import pytest
from rouge_score import rouge_scorer

from grasp_lora.evaluation.summary_metrics import (
    MultilingualTokenizer,
    bleu4,
    effective_segmenter,
    multilingual_tokenize,
    rouge_l,
    summary_settings,
)


def test_tokenize_latin_punctuation_splits_words():
    assert multilingual_tokenize("Hello, World! Don't", "en") == ["hello", "world", "don", "t"]
    assert multilingual_tokenize("a$b  c\x00d", "en") == ["a", "b", "cd"]  # $ separates; NUL dropped


# Hand-worked from the official scorer's documented order: lower-case, BERT cleaning (punctuation
# and ASCII symbols removed as word breaks), OpenNMT aggressive (splits at letter/digit and symbol
# boundaries), CJK characters split, whitespace split.
@pytest.mark.parametrize(
    "text, lang, tokens",
    [
        ("GDP grew 3.5% in 2024", "en", ["gdp", "grew", "3", "5", "in", "2024"]),  # decimal point, percent removed
        ("Covid19 hit H2O", "en", ["covid", "19", "hit", "h", "2", "o"]),  # letter/digit boundaries
        ("See https://www.bbc.com/news/world-55123", "en",
         ["see", "https", "www", "bbc", "com", "news", "world", "55123"]),
        ("great😀news €5 30°C", "en", ["great", "😀", "news", "€", "5", "30", "°", "c"]),  # symbols are tokens
        ("عام2020 نما ١٥٪", "ar", ["عام", "2020", "نما", "١٥"]),  # Arabic percent sign is punctuation
        ("٢٠٢٤م", "ar", ["٢٠٢٤", "م"]),  # Arabic-Indic digits are digits too
        ("GDP增长7.2%与عام", "zh", ["gdp", "增", "长", "7", "2", "与", "عام"]),  # mixed scripts
        ("新冠covid19病例3例", "zh", ["新", "冠", "covid", "19", "病", "例", "3", "例"]),
        ("a\u00a0b\u200bc", "en", ["a", "bc"]),  # no-break space separates, zero-width space dropped
    ],
)
def test_tokenize_official_default_path(text, lang, tokens):
    assert multilingual_tokenize(text, lang) == tokens


def test_rouge_l_hand_worked_with_digits_and_symbols():
    # ref [covid 19 cases rose by 3 5 percent] (8), pred [covid 19 cases rose 3 5] (6): LCS 6
    # -> P 1, R 3/4, F 6/7 (without the letter/digit split pred has "covid19" and F is 8/13)
    assert rouge_l(["covid19 cases rose 3.5%"], ["Covid-19 cases rose by 3.5 percent"], "en") == pytest.approx(100 * 6 / 7)
    # ref [ارتفع عدد الحالات إلى 2500 حالة] (6), pred [ارتفع العدد إلى 2500 حالة] (5): LCS 4 -> F 8/11
    assert rouge_l(["ارتفع العدد إلى2500 حالة"], ["ارتفع عدد الحالات إلى 2500 حالة"], "ar") == pytest.approx(100 * 8 / 11)
    # ref [新 冠 covid 19 病 例 3 例] (8), pred [covid 19 病 例] (4): LCS 4 -> P 1, R 1/2, F 2/3
    assert rouge_l(["covid-19病例"], ["新冠covid19病例3例"], "zh") == pytest.approx(100 * 2 / 3)


def test_arabic_and_chinese_are_kept_unlike_plain_rouge_score():
    ar = "مرحبا بالعالم."
    zh = "今天天气很好，我们去公园。"
    # the plain rouge-score tokenizer deletes every non [a-z0-9] character
    assert rouge_scorer.tokenizers.DefaultTokenizer().tokenize(ar) == []
    assert rouge_scorer.tokenizers.DefaultTokenizer().tokenize(zh) == []
    assert multilingual_tokenize(ar, "ar") == ["مرحبا", "بالعالم"]  # no article stripping here
    assert multilingual_tokenize(zh, "zh") == list("今天天气很好我们去公园")
    assert multilingual_tokenize("2024年GDP增长", "zh") == ["2024", "年", "gdp", "增", "长"]
    # so identical Arabic texts score 0 with the plain scorer and 100 with ours
    plain = rouge_scorer.RougeScorer(["rougeL"]).score(ar, ar)["rougeL"].fmeasure
    assert plain == 0.0
    assert rouge_l([ar], [ar], "ar") == pytest.approx(100.0)


def test_rouge_l_hand_worked_lcs():
    # ref [the cat sat on the mat] (6), pred [the cat on mat] (4): LCS 4 -> P 1, R 2/3, F 0.8
    assert rouge_l(["the cat on mat"], ["The cat sat on the mat."], "en") == pytest.approx(80.0)
    # a pair with nothing in common averages in as 0
    assert rouge_l(["the cat on mat", "x"], ["the cat sat on the mat", "y"], "en") == pytest.approx(40.0)
    # ref [أ ب ج د], pred [أ ج ب]: LCS 2 -> P 2/3, R 1/2, F 4/7
    assert rouge_l(["أ ج ب"], ["أ ب ج د"], "ar") == pytest.approx(100 * 4 / 7)
    # ref [我 爱 北 京], pred [北 京 我 爱]: LCS 2 -> P = R = 1/2
    assert rouge_l(["北京我爱"], ["我爱北京"], "zh") == pytest.approx(50.0)


def test_rouge_l_empty_prediction_and_length_check():
    assert rouge_l([""], ["some summary"], "en") == 0.0
    assert rouge_l([], [], "en") == 0.0
    with pytest.raises(ValueError):
        rouge_l(["a"], ["a", "b"], "en")


def test_bleu_identical_and_disjoint():
    assert bleu4(["the cat sat on the mat today"], ["the cat sat on the mat today"], "en") == pytest.approx(100.0)
    assert bleu4(["今天天气很好"], ["今天天气很好"], "zh") == pytest.approx(100.0)
    assert bleu4(["aa bb cc dd"], ["ww xx yy zz"], "en") == pytest.approx(0.0)


def test_bleu_chinese_tokenizer_matters():
    pred, ref = "我爱北京天安门", "我爱北京天安门啊"
    # 13a leaves an unspaced Chinese sentence as one token: no match at all
    assert bleu4([pred], [ref], "ar") == pytest.approx(0.0)
    # zh splits characters: every n-gram precision is 1, BP = exp(1 - 8/7)
    assert bleu4([pred], [ref], "zh") == pytest.approx(100 * math.exp(1 - 8 / 7), abs=1e-6)


def test_bleu_tokenizer_is_sacrebleus_own_choice_for_the_language():
    from sacrebleu.metrics import BLEU

    from grasp_lora.evaluation.summary_metrics import bleu_tokenizer

    # what a reader running sacrebleu with the target language set would get
    for lang in ("en", "ar", "zh"):
        assert BLEU(trg_lang=lang).tokenizer.signature() == bleu_tokenizer(lang)


def test_settings_recorded():
    zh = summary_settings("zh")
    assert "aggressive" in zh["rouge_pretokenizer"] and "OpenNMT" in zh["rouge_tokenizer"]
    assert "jieba" in summary_settings("zh", "jieba")["rouge_tokenizer"]
    assert zh["bleu_tokenizer"] == "zh" and "tok:zh" in zh["bleu_signature"]
    assert zh["chinese_segmenter"] == "char" and zh["rouge_stemmer"] is False
    ar = summary_settings("ar", "jieba")
    assert ar["bleu_tokenizer"] == "13a" and "tok:13a" in ar["bleu_signature"]
    assert ar["chinese_segmenter"] == "char"  # jieba applies to Chinese only
    with pytest.raises(ValueError, match="unknown Chinese segmenter"):
        effective_segmenter("zh", "pkuseg")


def test_jieba_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "jieba", None)  # makes `import jieba` raise ImportError
    with pytest.raises(ImportError, match="pip install jieba"):
        MultilingualTokenizer("zh", "jieba")
    # other languages never need it
    assert MultilingualTokenizer("ar", "jieba").tokenize("مرحبا") == ["مرحبا"]


def test_jieba_mode_uses_the_segmenter(monkeypatch):
    fake = types.ModuleType("jieba")
    # a stand-in segmenter: chunks of two non-space characters, whitespace runs as their own tokens
    fake.lcut = lambda s: re.findall(r"\s+|\S{1,2}", s)
    monkeypatch.setitem(sys.modules, "jieba", fake)
    # cleaned first ("，" and "!" become word breaks), then cut; the official scorer keeps the
    # space tokens jieba emits, and so do we
    assert multilingual_tokenize("我们去公园，OK!", "zh", "jieba") == ["我们", "去公", "园", " ", "ok"]
    # so a space counts in the lengths: [我们 ␠ 去] vs [我们 去]: LCS 2 -> P 2/3, R 1, F 0.8
    assert rouge_l(["我们 去"], ["我们去"], "zh", "jieba") == pytest.approx(80.0)
    # word tokens instead of characters: [我们 去公 园] vs [我们 去] shares 1 -> P 1/3, R 1/2, F 0.4
    assert rouge_l(["我们去公园"], ["我们去"], "zh", "jieba") == pytest.approx(40.0)
    assert rouge_l(["我们去公园"], ["我们去"], "zh", "char") == pytest.approx(100 * 2 * 1 * 0.6 / 1.6)
