"""Task specs: the paper's prompts byte for byte, cues, limits, user templates, clear errors."""

from __future__ import annotations

import pytest

from grasp_lora.data import tasks
from grasp_lora.data.tasks import (
    TaskError,
    answer_cue,
    build_prompt,
    get_task,
    max_new_tokens,
    prompt_parts,
    register_template,
    target_text,
)

QA = {"id": "q", "context": "CTX", "question": "QQ", "answers": ["A1", "A2"]}
SUM = {"id": "s", "article": "ART", "summary": "SUM", "title": "T"}

# METHOD.md, "Data", with {context}/{question}/{article} replaced by the values above.
PAPER_PROMPTS = {
    ("mlqa", "en"): "Answer the question based on the context.\nContext:CTX\nQuestion:QQ\nAnswer:",
    ("mlqa", "ar"): "أجب على السؤال بناءً على النص التالي.\nالنص:CTX\nالسؤال:QQ\nالإجابة:",
    ("mlqa", "zh"): "请根据下列内容回答问题。\n内容:CTX\n问题:QQ\n答案:",
    ("xlsum", "en"): "Summarize the following English news article.\nArticle:ART\nSummary:",
    ("xlsum", "ar"): "لخّص الخبر العربي التالي.\nالمقال:ART\nالملخّص:",
    ("xlsum", "zh"): "请用中文概括下面的新闻报道。\n文章:ART\n摘要:",
}


@pytest.mark.parametrize("task,lang", sorted(PAPER_PROMPTS))
def test_prompts_equal_spec_strings(task, lang):
    example = QA if task == "mlqa" else SUM
    assert build_prompt(task, lang, example) == PAPER_PROMPTS[(task, lang)]


def test_answer_cues_and_prompt_ends_with_cue():
    expected = {("mlqa", "en"): "Answer:", ("mlqa", "ar"): "الإجابة:", ("mlqa", "zh"): "答案:",
                ("xlsum", "en"): "Summary:", ("xlsum", "ar"): "الملخّص:", ("xlsum", "zh"): "摘要:"}
    for (task, lang), cue in expected.items():
        assert answer_cue(task, lang) == cue
        assert PAPER_PROMPTS[(task, lang)].endswith("\n" + cue)


def test_generation_limits():
    assert [max_new_tokens("xlsum", l) for l in ("en", "ar", "zh")] == [96, 128, 96]
    assert [max_new_tokens("mlqa", l) for l in ("en", "ar", "zh")] == [64, 64, 64]


def test_task_kinds_and_targets():
    assert get_task("mlqa").kind == "qa" and get_task("xlsum").kind == "summary"
    assert target_text("mlqa", QA) == "A1"  # training uses the first gold answer
    assert target_text("xlsum", SUM) == "SUM"


def test_text_with_braces_is_not_re_expanded():
    ex = dict(QA, context="see {question} and {x}", question="what {context}?")
    assert build_prompt("mlqa", "en", ex) == (
        "Answer the question based on the context.\nContext:see {question} and {x}\n"
        "Question:what {context}?\nAnswer:"
    )


def test_prompt_parts_split_around_long_field():
    head, long_text, tail = prompt_parts("mlqa", "zh", QA)
    assert (head, long_text, tail) == ("请根据下列内容回答问题。\n内容:", "CTX", "\n问题:QQ\n答案:")
    head, long_text, tail = prompt_parts("xlsum", "ar", SUM)
    assert head + long_text + tail == PAPER_PROMPTS[("xlsum", "ar")] and tail == "\nالملخّص:"


def test_unknown_task_and_language_errors_say_what_is_known():
    with pytest.raises(TaskError, match=r"unknown task 'squad' \(known: mlqa, xlsum\)"):
        get_task("squad")
    with pytest.raises(TaskError) as e:
        build_prompt("mlqa", "fr", QA)
    msg = str(e.value)
    assert "'fr'" in msg and "ar, en, zh" in msg and "register_template" in msg and "\n" not in msg


def test_register_template_adds_language_and_parses_cue(restore_registry):
    register_template("mlqa", "fr", "Réponds.\nContexte:{context}\nQuestion:{question}\nRéponse :")
    assert build_prompt("mlqa", "fr", QA) == "Réponds.\nContexte:CTX\nQuestion:QQ\nRéponse :"
    assert answer_cue("mlqa", "fr") == "Réponse :"
    assert max_new_tokens("mlqa", "fr") == 64  # the task default
    register_template("xlsum", "de", "Fasse zusammen.\n{article}\nZusammenfassung:", max_new_tokens=80)
    assert answer_cue("xlsum", "de") == "Zusammenfassung:" and max_new_tokens("xlsum", "de") == 80
    assert "fr" in get_task("mlqa").languages


@pytest.mark.parametrize("template,match", [
    ("Q:{question}\nA:", r"\{context\} exactly once"),
    ("{context}{context}{question}\nA:", r"\{context\} exactly once"),
    ("{context} {question} {title}\nA:", r"unknown placeholder\(s\) \{title\}"),
    ("Context:{context}\nQuestion:{question}", "answer cue"),
])
def test_register_template_rejects_bad_templates(restore_registry, template, match):
    with pytest.raises(TaskError, match=match):
        register_template("mlqa", "fr", template)
    assert "fr" not in get_task("mlqa").languages


def test_missing_fields_name_the_example():
    with pytest.raises(TaskError, match=r"example 'q'.*'question'"):
        build_prompt("mlqa", "en", {"id": "q", "context": "c", "answers": ["a"]})
    with pytest.raises(TaskError, match=r"example 'q'.*answers"):
        target_text("mlqa", {"id": "q", "context": "c", "question": "x", "answers": []})
