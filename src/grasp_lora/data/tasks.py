"""Task specs: the prompt templates of METHOD.md, "Data", answer cues and generation limits.

Two tasks ship: `mlqa` (kind `qa`, records `{"id", "context", "question", "answers": [str, ...]}`)
and `xlsum` (kind `summary`, records `{"id", "article", "summary", "title"}`), each with an English,
Arabic and Simplified Chinese prompt copied byte for byte from the spec. A template is plain text
with `{field}` placeholders; the answer cue is the text after the last placeholder (for example
"\\nAnswer:"), so a user adds a language and gets the cue for free: in a recipe or on the command
line with `data.prompts` (`task_spec(cfg.data)`: a copy of the task's spec with the configured
prompts, which every stage passes on; the registry is left alone), or from Python with
`register_template` (the registry itself, for every run of the process).

Placeholders are substituted in one pass with the example's own text, so braces or a literal
"{question}" inside a context are copied as they are and never re-expanded.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
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
    # A template any language could start from, shown in the error that asks for one.
    example_template: str = ""

    @property
    def languages(self) -> list[str]:
        return sorted(self.templates)

    def template(self, lang: str) -> str:
        if lang not in self.templates:
            raise TaskError(
                f"task {self.name!r} has no prompt for language {lang!r} (known: "
                f"{', '.join(self.languages)}); set data.prompts.{lang}.template in the recipe, or add one "
                f"with grasp_lora.data.tasks.register_template({self.name!r}, {lang!r}, template), using the "
                f"placeholders {', '.join('{' + f + '}' for f in self.fields)} and ending with an answer cue"
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
        example_template=_QA_TEMPLATES["en"],
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
        example_template="Summarize the following news article.\nArticle:{article}\nSummary:",
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


def _check_template(spec: TaskSpec, lang: str, template: str, where: str | None = None) -> None:
    """TaskError unless `template` uses each of the task's placeholders once and ends with an answer
    cue; `where` starts the message (default: the task and language)."""
    if not isinstance(template, str):
        raise TaskError(f"{where or 'template'}: expected a string, got {template!r}")
    names = placeholders(template)
    where = where or f"template for task {spec.name!r}, language {lang!r}"
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


# The language codes a recipe may key `data.prompts` by (they also name data/<lang>/ folders).
_LANG_CODE = re.compile(r"[A-Za-z0-9_-]+")


def _setting(entry: Any, name: str) -> Any:
    """`entry.name` or `entry[name]`: a data.prompts entry is a PromptConfig or a plain mapping."""
    if isinstance(entry, Mapping):
        return entry.get(name)
    return getattr(entry, name, None)


def prompt_example(spec: TaskSpec, lang: str) -> str:
    """A `data.prompts` override for `lang` that passes the checks, as one shell-ready line: the
    English template, newlines written as \\n (YAML's double-quoted escape)."""
    template = spec.example_template or spec.templates.get("en") or next(iter(spec.templates.values()))
    return f"data.prompts={{{lang}: {{template: {json.dumps(template, ensure_ascii=False)}}}}}"


def missing_prompt(spec: TaskSpec, lang: str) -> str:
    """The one line that says `lang` has no prompt for `spec` and which key gives it one."""
    fields = ", ".join("{" + f + "}" for f in spec.fields)
    return (f"task {spec.name} has no prompt for {lang!r} (it has {', '.join(spec.languages)}); set "
            f"data.prompts.{lang}.template (a template with {fields} and an answer cue after the last "
            f"placeholder, e.g. {prompt_example(spec, lang)})")


def with_prompts(task: str | TaskSpec, prompts: Mapping[str, Any] | None) -> TaskSpec:
    """A copy of `task`'s spec with `prompts` added; the registry is not changed.

    `prompts` is what `data.prompts` holds: `{lang: {"template": str | None, "max_new_tokens":
    int | None}}` (PromptConfig objects or plain mappings). A template is checked as
    `register_template` checks it and replaces the spec's for `lang`; a null template keeps the
    spec's (which must exist), so an entry may change only the generation limit. A null limit keeps
    the language's own, else the task's default. Errors are TaskErrors naming the recipe key
    (`data.prompts.<lang>.template: ...`), one line each.
    """
    base = get_task(task)
    spec = replace(base, templates=dict(base.templates), max_new=dict(base.max_new))
    if prompts is None:
        return spec
    if not isinstance(prompts, Mapping):
        raise TaskError(f"data.prompts: expected a mapping of language codes, got {prompts!r}")
    for lang, entry in prompts.items():
        if not isinstance(lang, str):
            raise TaskError(f"data.prompts: a language code must be text, got {lang!r} (YAML reads no, yes, on "
                            f"and off as true/false: quote the code, e.g. 'no')")
        if not _LANG_CODE.fullmatch(lang):
            raise TaskError(f"data.prompts: {lang!r} is not a language code (letters, digits, '-' and '_')")
        key = f"data.prompts.{lang}"
        template, limit = _setting(entry, "template"), _setting(entry, "max_new_tokens")
        if template is None:
            if lang not in spec.templates:
                raise TaskError(f"{key}.template: task {spec.name} has no prompt for {lang!r} to keep; set one "
                                f"(e.g. {prompt_example(spec, lang)})")
        else:
            _check_template(spec, lang, template, where=f"{key}.template")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise TaskError(f"{key}.max_new_tokens: must be >= 1 or null, got {limit!r}")
        if template is not None:
            spec.templates[lang] = template
        if limit is not None:
            spec.max_new[lang] = limit
        elif lang not in spec.max_new:
            spec.max_new[lang] = spec.default_max_new_tokens
    return spec


def task_spec(data: Any) -> TaskSpec:
    """The spec a run builds its prompts, cues and generation limits with: `data.task` (a
    DataConfig's) with the prompts of `data.prompts` added (`with_prompts`). Pass it wherever a
    task name goes (`build_prompt`, `encode_for_training`, `generate_predictions`, ...)."""
    return with_prompts(data.task, getattr(data, "prompts", None))


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
