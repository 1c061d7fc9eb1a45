"""Training / generation encodings: BOS + prompt, target + EOS, label masking, truncation."""

from __future__ import annotations

import pytest

from grasp_lora.data.tasks import build_prompt, prompt_parts
from grasp_lora.data.tokenize import IGNORE_INDEX, TokenizeError, encode_for_training, encode_prompt
from grasp_lora.models.tiny import BOS, EOS, tiny_tokenizer

AR_QA = {"id": "ar1", "context": "افتتحت البلدية حديقة جديدة في مدينة الكرك يوم الخميس.",
         "question": "أين افتتحت الحديقة؟", "answers": ["مدينة الكرك"]}
ZH_SUM = {"id": "zh1", "article": "本市第五条地铁线路周一正式开通，全长二十八公里。", "summary": "地铁五号线开通。", "title": "t"}


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def ids(tok, text):
    return tok.encode(text, add_special_tokens=False)


@pytest.mark.parametrize("task,lang,ex", [("mlqa", "ar", AR_QA), ("xlsum", "zh", ZH_SUM)])
def test_fitting_example_layout_and_masking(tok, task, lang, ex):
    out = encode_for_training(tok, task, lang, ex, max_length=4096)
    prompt = ids(tok, build_prompt(task, lang, ex))
    target = ids(tok, ex["answers"][0] if task == "mlqa" else ex["summary"])
    assert out["input_ids"] == [BOS] + prompt + target + [EOS]
    assert out["labels"] == [IGNORE_INDEX] * (1 + len(prompt)) + target + [EOS]
    assert out["input_ids"].count(BOS) == 1  # no second BOS from the tokenizer's post-processor
    assert tok.decode(out["input_ids"][1:1 + len(prompt)]) == build_prompt(task, lang, ex)


def test_long_arabic_context_is_cut_and_question_and_cue_survive(tok):
    ex = dict(AR_QA, context=AR_QA["context"] * 40)
    out = encode_for_training(tok, "mlqa", "ar", ex, max_length=300)
    target = ids(tok, "مدينة الكرك") + [EOS]
    _, _, tail = prompt_parts("mlqa", "ar", ex)
    tail_ids = ids(tok, tail)
    assert len(out["input_ids"]) == len(out["labels"]) == 300
    assert out["input_ids"][-len(target):] == target
    assert out["input_ids"][-len(target) - len(tail_ids):-len(target)] == tail_ids  # question + cue intact
    assert tok.decode(tail_ids).endswith("\nالسؤال:أين افتتحت الحديقة؟\nالإجابة:")
    assert out["labels"][:-len(target)] == [IGNORE_INDEX] * (300 - len(target))
    assert out["labels"][-len(target):] == target
    head_ids = ids(tok, "أجب على السؤال بناءً على النص التالي.\nالنص:")
    assert out["input_ids"][1:1 + len(head_ids)] == head_ids  # the instruction is kept too


def test_long_chinese_article_keeps_cue_as_prompt_tail(tok):
    ex = dict(ZH_SUM, article=ZH_SUM["article"] * 50)
    out = encode_for_training(tok, "xlsum", "zh", ex, max_length=200)
    target = ids(tok, ZH_SUM["summary"]) + [EOS]
    cue = ids(tok, "\n摘要:")
    assert len(out["input_ids"]) == 200
    assert out["input_ids"][-len(target) - len(cue):-len(target)] == cue
    assert sum(l != IGNORE_INDEX for l in out["labels"]) == len(target)


def test_target_longer_than_limit_is_truncated_without_eos(tok):
    ex = dict(ZH_SUM, summary="很长的摘要" * 40)
    out = encode_for_training(tok, "xlsum", "zh", ex, max_length=120)
    _, _, tail = prompt_parts("xlsum", "zh", ex)
    fixed = 1 + len(ids(tok, "请用中文概括下面的新闻报道。\n文章:")) + len(ids(tok, tail))
    assert len(out["input_ids"]) == 120
    assert out["labels"][:fixed] == [IGNORE_INDEX] * fixed  # article emptied, cue kept
    assert out["labels"][fixed:] == ids(tok, ex["summary"])[:120 - fixed]
    assert EOS not in out["input_ids"]


def test_prompt_that_cannot_fit_even_empty_is_a_clear_error(tok):
    ex = dict(AR_QA, question="سؤال طويل جدا " * 30)
    with pytest.raises(TokenizeError, match=r"example 'ar1' \(mlqa/ar\): the prompt without its context needs"):
        encode_for_training(tok, "mlqa", "ar", ex, max_length=64)
    with pytest.raises(TokenizeError, match="max_total_generation"):
        encode_prompt(tok, "mlqa", "ar", ex, max_prompt_tokens=64)


def test_encode_prompt_fits_and_truncates(tok):
    full = encode_prompt(tok, "mlqa", "ar", AR_QA, max_prompt_tokens=2200)
    assert full == [BOS] + ids(tok, build_prompt("mlqa", "ar", AR_QA))
    ex = dict(AR_QA, context=AR_QA["context"] * 30)
    cut = encode_prompt(tok, "mlqa", "ar", ex, max_prompt_tokens=150)
    cue = ids(tok, "\nالإجابة:")
    assert len(cut) == 150 and cut[0] == BOS and cut[-len(cue):] == cue
    # Training and generation cut the same way: the training prompt is the generation prompt.
    train = encode_for_training(tok, "mlqa", "ar", ex, max_length=150 + len(ids(tok, "مدينة الكرك")) + 1)
    assert train["input_ids"][:150] == cut


class _CharTokenizer:
    """A tokenizer without BOS: one id per character."""

    bos_token_id = None
    eos_token_id = 1

    def encode(self, text, add_special_tokens=False):
        assert add_special_tokens is False
        return [ord(c) + 10 for c in text]


def test_tokenizer_without_bos():
    out = encode_for_training(_CharTokenizer(), "mlqa", "en", {"id": "c", "context": "ab", "question": "q",
                                                                "answers": ["a"]}, max_length=4096)
    prompt = build_prompt("mlqa", "en", {"context": "ab", "question": "q"})
    assert out["input_ids"] == [ord(c) + 10 for c in prompt] + [ord("a") + 10, 1]
    assert out["labels"] == [IGNORE_INDEX] * len(prompt) + [ord("a") + 10, 1]


@pytest.mark.parametrize("task,lang,ex,field", [("mlqa", "ar", AR_QA, "context"), ("xlsum", "zh", ZH_SUM, "article")])
def test_article_budget_cuts_the_long_field_to_its_beginning_and_keeps_the_rest(tok, task, lang, ex, field):
    long = dict(ex, **{field: ex[field] * 30})
    head, long_text, tail = prompt_parts(task, lang, long)
    budget = 40
    out = encode_for_training(tok, task, lang, long, max_length=4096, max_long_tokens=budget)
    target = ids(tok, ex["answers"][0] if task == "mlqa" else ex["summary"]) + [EOS]
    assert out["input_ids"] == [BOS] + ids(tok, head) + ids(tok, long_text)[:budget] + ids(tok, tail) + target
    prompt = encode_prompt(tok, task, lang, long, 4096, max_long_tokens=budget)
    assert prompt == out["input_ids"][:len(prompt)] and len(prompt) == len(out["input_ids"]) - len(target)
    # within the length limit the budget still decides; below it the limit cuts further
    tighter = encode_for_training(tok, task, lang, long, max_length=len(out["input_ids"]) - 10, max_long_tokens=budget)
    assert tighter["input_ids"][1 + len(ids(tok, head)):][:budget - 10] == ids(tok, long_text)[:budget - 10]
    assert len(tighter["input_ids"]) == len(out["input_ids"]) - 10
    # a field within the budget is encoded exactly as without one
    fits = len(ids(tok, ex[field]))
    assert encode_for_training(tok, task, lang, ex, 4096, max_long_tokens=fits) == encode_for_training(tok, task, lang, ex, 4096)
    assert encode_prompt(tok, task, lang, ex, 4096, max_long_tokens=fits) == encode_prompt(tok, task, lang, ex, 4096)
