"""Task specs: the prompt templates of METHOD.md, "Data", answer cues and generation limits.

Two tasks ship: `mlqa` (kind `qa`, records `{"id", "context", "question", "answers": [str, ...]}`)
and `xlsum` (kind `summary`, records `{"id", "article", "summary", "title"}`), each with an English,
Arabic and Simplified Chinese prompt copied byte for byte from the spec. A template is plain text
with `{field}` placeholders; the answer cue is the text after the last placeholder (for example
"\\nAnswer:"), so a user adds a language with `register_template` and gets the cue for free.

Placeholders are substituted in one pass with the example's own text, so braces or a literal
"{question}" inside a context are copied as they are and never re-expanded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

# A placeholder is `{name}` with a lower-case identifier; anything else in braces is literal text.
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


class TaskError(ValueError):
    """Unknown task or language, a malformed template, or an example missing a field."""


@dataclass
class TaskSpec:
    """One task: its kind, its fields and one prompt template per language."""

    name: str
    kind: str  # "qa" | "summary"
    fields: tuple[str, ...]  # placeholders every template of this task must use
    long_field: str  # the field cut first when a prompt is too long (context / article)
    target_field: str  # "answers" (first one is the target) or "summary"
    default_max_new_tokens: int
    templates: dict[str, str] = field(default_factory=dict)
    max_new: dict[str, int] = field(default_factory=dict)

    @property
    def languages(self) -> list[str]:
        return sorted(self.templates)

    def template(self, lang: str) -> str:
        if lang not in self.templates:
            raise TaskError(
                f"task {self.name!r} has no prompt for language {lang!r} (known: "
                f"{', '.join(self.languages)}); add one with grasp_lora.data.tasks.register_template"
                f"({self.name!r}, {lang!r}, template) using the placeholders "
                f"{', '.join('{' + f + '}' for f in self.fields)} and ending with an answer cue"
            )
        return self.templates[lang]


# The paper's prompts, byte for byte (METHOD.md, "Data").
_QA_TEMPLATES = {
    "en": "Answer the question based on the context.\nContext:{context}\nQuestion:{question}\nAnswer:",
    "ar": "أجب على السؤال بناءً على النص التالي.\nالنص:{context}\nالسؤال:{question}\nالإجابة:",
    "zh": "请根据下列内容回答问题。\n内容:{context}\n问题:{question}\n答案:",
}
_SUMMARY_TEMPLATES = {
    "en": "Summarize the following English news article.\nArticle:{article}\nSummary:",
    "ar": "لخّص الخبر العربي التالي.\nالمقال:{article}\nالملخّص:",
    "zh": "请用中文概括下面的新闻报道。\n文章:{article}\n摘要:",
}

_TASKS: dict[str, TaskSpec] = {
    "mlqa": TaskSpec(
        name="mlqa",
        kind="qa",
        fields=("context", "question"),
        long_field="context",
        target_field="answers",
        default_max_new_tokens=64,
        templates=dict(_QA_TEMPLATES),
        max_new={"en": 64, "ar": 64, "zh": 64},
    ),
    "xlsum": TaskSpec(
        name="xlsum",
        kind="summary",
        fields=("article",),
        long_field="article",
        target_field="summary",
        default_max_new_tokens=96,
        templates=dict(_SUMMARY_TEMPLATES),
        # Arabic summaries need more tokens for the same content (METHOD.md, "Data").
        max_new={"en": 96, "ar": 128, "zh": 96},
    ),
}


def known_tasks() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str | TaskSpec) -> TaskSpec:
    """The spec of task `name` (mlqa or xlsum); a TaskSpec is returned as it is."""
    if isinstance(name, TaskSpec):
        return name
    if name not in _TASKS:
        raise TaskError(f"unknown task {name!r} (known: {', '.join(known_tasks())}); set data.task to one of them")
    return _TASKS[name]


def placeholders(template: str) -> list[str]:
    """Placeholder names in order of appearance."""
    return [m.group(1) for m in _PLACEHOLDER.finditer(template)]


def _cue_of(template: str) -> str:
    """The raw text after the last placeholder (newlines included)."""
    last = None
    for last in _PLACEHOLDER.finditer(template):
        pass
    return template[last.end():] if last is not None else ""


def _check_template(spec: TaskSpec, lang: str, template: str) -> None:
    names = placeholders(template)
    where = f"template for task {spec.name!r}, language {lang!r}"
    unknown = sorted(set(names) - set(spec.fields))
    if unknown:
        raise TaskError(
            f"{where}: unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)} "
            f"(a {spec.kind} template uses {', '.join('{' + f + '}' for f in spec.fields)})"
        )
    for f in spec.fields:
        if names.count(f) != 1:
            raise TaskError(f"{where}: must contain {{{f}}} exactly once (found {names.count(f)})")
    if not _cue_of(template).strip():
        raise TaskError(
            f"{where}: must end with an answer cue after the last placeholder, for example "
            f"'\\nAnswer:' (the model's output follows the cue)"
        )


def register_template(task: str, lang: str, template: str, max_new_tokens: int | None = None) -> TaskSpec:
    """Add (or replace) the prompt of `task` for language `lang`.

    The template uses the task's placeholders ({context} and {question} for mlqa, {article} for
    xlsum), each exactly once, and ends with the answer cue, e.g.
    `register_template("mlqa", "fr", "Réponds à la question.\\nContexte:{context}\\n"
    "Question:{question}\\nRéponse:")`. `max_new_tokens` defaults to the task's limit (QA 64,
    summary 96).
    """
    spec = get_task(task)
    if not isinstance(lang, str) or not lang.strip():
        raise TaskError("register_template: lang must be a non-empty language code such as 'fr'")
    _check_template(spec, lang, template)
    if max_new_tokens is not None and max_new_tokens < 1:
        raise TaskError(f"register_template: max_new_tokens must be >= 1, got {max_new_tokens}")
    spec.templates[lang] = template
    spec.max_new[lang] = max_new_tokens if max_new_tokens is not None else spec.default_max_new_tokens
    return spec


def answer_cue(task: str | TaskSpec, lang: str) -> str:
    """The cue that ends the prompt, without surrounding whitespace ("Answer:", "摘要:", ...)."""
    return _cue_of(get_task(task).template(lang)).strip()


def max_new_tokens(task: str | TaskSpec, lang: str) -> int:
    spec = get_task(task)
    spec.template(lang)  # unknown language -> the same clear error as everywhere else
    return spec.max_new.get(lang, spec.default_max_new_tokens)


def _field_text(spec: TaskSpec, example: Mapping[str, Any], name: str) -> str:
    value = example.get(name)
    if not isinstance(value, str) or not value:
        raise TaskError(
            f"example {example.get('id', '?')!r}: task {spec.name!r} needs a non-empty text field "
            f"{name!r} (got {type(value).__name__}); records are made by grasp_lora.data.sources"
        )
    return value


def render(template: str, values: Mapping[str, str]) -> str:
    """Substitute placeholders in one pass (values are never re-scanned for placeholders)."""
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)] if m.group(1) in values else m.group(0), template)


def prompt_parts(task: str | TaskSpec, lang: str, example: Mapping[str, Any]) -> tuple[str, str, str]:
    """(head, long text, tail): the rendered prompt split around the long field.

    `head + long + tail == build_prompt(...)`. The tail holds everything after the long field
    (for QA the question and the cue), which is what must survive truncation.
    """
    spec = get_task(task)
    template = spec.template(lang)
    values = {f: _field_text(spec, example, f) for f in spec.fields}
    marker = "{" + spec.long_field + "}"
    head_t, tail_t = template.split(marker, 1)
    return render(head_t, values), values[spec.long_field], render(tail_t, values)


def build_prompt(task: str | TaskSpec, lang: str, example: Mapping[str, Any]) -> str:
    """The full prompt for `example`; it ends with the answer cue (the target follows it)."""
    head, long_text, tail = prompt_parts(task, lang, example)
    return head + long_text + tail


def target_text(task: str | TaskSpec, example: Mapping[str, Any]) -> str:
    """The training target: the first gold answer (QA) or the summary."""
    spec = get_task(task)
    if spec.kind == "qa":
        answers = example.get("answers")
        if not isinstance(answers, list) or not answers or not isinstance(answers[0], str) or not answers[0]:
            raise TaskError(
                f"example {example.get('id', '?')!r}: a QA record needs 'answers', a non-empty list "
                f"of strings (got {answers!r})"
            )
        return answers[0]
    return _field_text(spec, example, spec.target_field)
