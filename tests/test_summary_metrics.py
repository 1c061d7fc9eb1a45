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


def test_settings_recorded():
    zh = summary_settings("zh")
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
    # cleaned first ("，" and "!" become spaces), then cut; whitespace tokens dropped
    assert multilingual_tokenize("我们去公园，OK!", "zh", "jieba") == ["我们", "去公", "园", "ok"]
    # word tokens instead of characters: [我们 去公 园] vs [我们 去] shares 1 -> P 1/3, R 1/2, F 0.4
    assert rouge_l(["我们去公园"], ["我们去"], "zh", "jieba") == pytest.approx(40.0)
    assert rouge_l(["我们去公园"], ["我们去"], "zh", "char") == pytest.approx(100 * 2 * 1 * 0.6 / 1.6)
