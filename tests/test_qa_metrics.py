"""MLQA EM / F1: every expected value below is worked by hand from METHOD.md, "Evaluation"."""

import pytest

from grasp_lora.evaluation.qa_metrics import (
    answer_tokens,
    exact_match,
    normalize_answer,
    qa_scores,
    token_f1,
)

# ---------------------------------------------------------------- English


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("An apple, a day", "apple day"),
        ("theory", "theory"),  # articles are whole words only
        ("a-b", "ab"),  # punctuation is deleted, not turned into a space
        ("«Paris»", "paris"),  # Unicode Pi/Pf punctuation
        ("$100 + 5", "100 5"),  # ASCII symbols $ and + are in string.punctuation
        ("€100", "€100"),  # € is a currency symbol (Sc), not ASCII: kept
        ("  many\t spaces\n", "many spaces"),
    ],
)
def test_normalize_english(text, expected):
    assert normalize_answer(text, "en") == expected


def test_english_f1_and_em():
    # pred tokens [big, red, car], gold [red, car]: common 2, P=2/3, R=1, F1=0.8
    assert token_f1("The big red car", ["a red car"], "en") == pytest.approx(0.8)
    assert exact_match("The big red car", ["a red car"], "en") == 0.0
    assert exact_match("Red car.", ["a red car"], "en") == 1.0
    # repeated tokens count as a bag: common = {x:1, y:1}, P = R = 2/3
    assert token_f1("x x y", ["x y y"], "en") == pytest.approx(2 / 3)


def test_max_over_several_golds():
    golds = ["blue truck", "the red car park"]
    # vs gold 2: [red, car] vs [red, car, park] -> P=1, R=2/3, F1=0.8; vs gold 1: 0
    assert token_f1("red car", golds, "en") == pytest.approx(0.8)
    assert exact_match("red car", golds, "en") == 0.0
    assert exact_match("red car", ["blue truck", "Red car."], "en") == 1.0


def test_empty_prediction():
    assert exact_match("", ["Paris"], "en") == 0.0
    assert token_f1("", ["Paris"], "en") == 0.0
    # official quirk kept: both sides normalise to nothing -> EM 1, F1 0 (nothing shared)
    assert exact_match("", ["The"], "en") == 1.0
    assert token_f1("", ["The"], "en") == 0.0


# ---------------------------------------------------------------- Arabic


def test_arabic_al_removed_everywhere():
    # "الكتاب" -> " كتاب"
    assert answer_tokens("الكتاب", "ar") == ["كتاب"]
    # "قال" (he said) ends in ال: -> "ق "; "الرجل" -> " رجل"
    assert answer_tokens("قال الرجل", "ar") == ["ق", "رجل"]
    # "العالم" holds ال twice (ال-ع-ال-م) -> " ع م"; Arabic comma and question mark are Po
    assert normalize_answer("مرحبا، العالم؟", "ar") == "مرحبا ع م"


def test_arabic_scores():
    # pred [في, قاهرة] vs gold [قاهرة]: P=1/2, R=1 -> F1 = 2/3
    assert token_f1("في القاهرة", ["القاهرة"], "ar") == pytest.approx(2 / 3)
    assert exact_match("في القاهرة", ["القاهرة"], "ar") == 0.0
    # the quirk makes "مال" (money) equal to "م"
    assert exact_match("مال", ["م"], "ar") == 1.0
    # English articles are not Arabic articles
    assert answer_tokens("the book", "ar") == ["the", "book"]


# ---------------------------------------------------------------- Chinese


def test_chinese_mixed_segmentation():
    assert answer_tokens("北京大学2024年ABC版", "zh") == ["北", "京", "大", "学", "2024", "年", "abc", "版"]
    assert answer_tokens("在 New York 市", "zh") == ["在", "new", "york", "市"]
    # 《》 (Ps/Pe) and 。 (Po) are deleted
    assert answer_tokens("《红楼梦》。", "zh") == ["红", "楼", "梦"]
    # U+3400 (CJK extension A) is outside U+4E00..U+9FA5: it stays inside its run
    assert answer_tokens("㐀㐁中", "zh") == ["㐀㐁", "中"]
    # no articles in Chinese
    assert answer_tokens("the book", "zh") == ["the", "book"]


def test_chinese_scores():
    # [北, 京, 大, 学] vs [北, 京]: P=1/2, R=1 -> F1 = 2/3
    assert token_f1("北京大学", ["北京"], "zh") == pytest.approx(2 / 3)
    assert exact_match("北京。", ["北 京"], "zh") == 1.0


# ---------------------------------------------------------------- aggregation


def test_qa_scores_averages_over_all_references():
    refs = {"q1": ["Paris"], "q2": ["the red car", "car"], "q3": ["London"]}
    preds = {"q1": "paris.", "q2": "red car park", "extra": "x"}  # q3 missing, 'extra' ignored
    # q1: EM 1, F1 1; q2: F1 max(0.8, 0.5) = 0.8, EM 0; q3: 0, 0 (counted in the denominator)
    out = qa_scores(preds, refs, "en")
    assert out["exact_match"] == pytest.approx(100 / 3)
    assert out["f1"] == pytest.approx(100 * 1.8 / 3)


def test_a_language_mlqa_lacks_is_scored_without_articles_on_whitespace_tokens():
    # a user's own language (data.prompts): punctuation goes, nothing else is removed
    assert normalize_answer("Le chat, noir!", "fr") == "le chat noir"
    assert normalize_answer("Paka  mweusi.", "sw") == normalize_answer("paka mweusi", "hi") == "paka mweusi"
    assert exact_match("paka mweusi", ["Paka mweusi."], "sw") == 1.0
    with pytest.raises(ValueError, match="not a language code"):
        normalize_answer("x", " ")


def test_references_must_be_lists():
    with pytest.raises(TypeError):
        qa_scores({"q": "a"}, {"q": "a"}, "en")
