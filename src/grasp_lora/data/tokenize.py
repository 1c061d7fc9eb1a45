"""Token ids for training (prompt masked, loss on target + EOS) and for generation.

A training example is `BOS + prompt` followed by `target + EOS` (METHOD.md, "Data"); labels are -100 on
BOS and the prompt, and the token ids on the target and EOS. Prompt and target are tokenized
separately with `add_special_tokens=False` and BOS / EOS ids are added here, so the result is the
same for tokenizers with or without a BOS post-processor (Gemma, Llama) and a tokenizer without a
BOS token simply gets none.

Truncation ("the prompt is cut and the answer cue re-appended"): when the example is longer than
`max_length`, the prompt is split around its long field (`context` for QA, `article` for
summaries) into head / long / tail, each tokenized on its own, and only the long field is cut, at
the token level, keeping its beginning. Everything after it survives whole: for QA the question
and the cue, for summaries the cue. The prompt therefore always ends with the answer cue, and
the question is never lost. When the prompt fits, the whole prompt is tokenized in one piece (so
it equals `tokenizer.encode(build_prompt(...))`).
An article token budget (`data.max_article_tokens`, `max_long_tokens` here) cuts the long field
to at most that many tokens first, keeping its beginning, whatever the length limit: the CPU
setting for long articles (training and generation cost grow with the prompt).
If even the target does not fit next to the prompt with an empty long field, the target is cut
as well and then gets no EOS (its text did not end there; an EOS would teach the model to stop
mid-sentence). A prompt whose fixed part (instruction, question, cue) alone exceeds the limit is
an error naming the example.
"""

from __future__ import annotations

from typing import Any, Mapping

from grasp_lora.data.tasks import TaskSpec, get_task, prompt_parts, target_text

IGNORE_INDEX = -100


class TokenizeError(ValueError):
    """An example cannot be encoded within the limit, or the tokenizer lacks a needed token."""


def _ids(tokenizer: Any, text: str) -> list[int]:
    if not text:
        return []
    # verbose=False: a long article is measured here before it is cut, so transformers' warning
    # that it exceeds the model's length would be noise.
    try:
        return list(tokenizer.encode(text, add_special_tokens=False, verbose=False))
    except TypeError:  # a tokenizer-like object without transformers' keyword
        return list(tokenizer.encode(text, add_special_tokens=False))


def _bos(tokenizer: Any) -> list[int]:
    bos = getattr(tokenizer, "bos_token_id", None)
    return [int(bos)] if bos is not None else []


def _eos(tokenizer: Any) -> int:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise TokenizeError("the tokenizer has no EOS token; set tokenizer.eos_token before encoding training data")
    return int(eos)


def _fixed_too_long(spec: TaskSpec, lang: str, example: Mapping[str, Any], need: int, limit: int, what: str) -> TokenizeError:
    return TokenizeError(
        f"example {example.get('id', '?')!r} ({spec.name}/{lang}): the prompt without its {spec.long_field} "
        f"needs {need} tokens but {what} allows {limit}; raise the limit or shorten the example"
    )


def _fit_prompt(tokenizer: Any, parts: tuple[str, str, str], budget: int,
                max_long: int | None = None) -> list[int] | None:
    """Prompt ids (no BOS) within `budget` tokens, cutting only the long field (to at most
    `max_long` tokens in any case); None if impossible. `parts` is the prompt split around its long
    field (`tasks.prompt_parts`)."""
    head, long_text, tail = parts
    l = _ids(tokenizer, long_text) if max_long is not None else None
    if l is None or len(l) <= max_long:
        whole = _ids(tokenizer, head + long_text + tail)
        if len(whole) <= budget:
            return whole
    h, t = _ids(tokenizer, head), _ids(tokenizer, tail)
    l = l if l is not None else _ids(tokenizer, long_text)
    room = budget - len(h) - len(t)
    if room < 0:
        return None
    return h + l[:room if max_long is None else min(room, max_long)] + t


def _fixed_prompt(tokenizer: Any, parts: tuple[str, str, str]) -> list[int]:
    """The prompt with its long field emptied: the shortest prompt truncation can produce."""
    head, _, tail = parts
    return _ids(tokenizer, head) + _ids(tokenizer, tail)


def encode_for_training(
    tokenizer: Any, task: str | TaskSpec, lang: str, example: Mapping[str, Any], max_length: int,
    max_long_tokens: int | None = None,
) -> dict[str, list[int]]:
    """{"input_ids", "labels"} for one example, at most `max_length` tokens, its long field at most
    `max_long_tokens` (see module doc)."""
    spec = get_task(task)
    bos, eos = _bos(tokenizer), _eos(tokenizer)
    target = _ids(tokenizer, target_text(spec, example))
    if not target:
        raise TokenizeError(f"example {example.get('id', '?')!r}: the target tokenizes to nothing")
    parts = prompt_parts(spec, lang, example)
    prompt = _fit_prompt(tokenizer, parts, max_length - len(bos) - len(target) - 1, max_long_tokens)
    tail = target + [eos]
    if prompt is None:
        # The target alone is too long: empty the long field and cut the target to what is left.
        prompt = _fixed_prompt(tokenizer, parts)
        room = max_length - len(bos) - len(prompt)
        if room < 1:
            raise _fixed_too_long(spec, lang, example, len(bos) + len(prompt) + 1, max_length,
                                  "data.max_length (with one target token)")
        tail = target[:room]
    input_ids = bos + prompt + tail
    labels = [IGNORE_INDEX] * (len(bos) + len(prompt)) + list(tail)
    return {"input_ids": input_ids, "labels": labels}


def encode_prompt(
    tokenizer: Any, task: str | TaskSpec, lang: str, example: Mapping[str, Any], max_prompt_tokens: int,
    max_long_tokens: int | None = None,
) -> list[int]:
    """BOS + prompt for generation, at most `max_prompt_tokens` (long field cut, at most
    `max_long_tokens`; cue kept)."""
    spec = get_task(task)
    bos = _bos(tokenizer)
    parts = prompt_parts(spec, lang, example)
    prompt = _fit_prompt(tokenizer, parts, max_prompt_tokens - len(bos), max_long_tokens)
    if prompt is None:
        need = len(bos) + len(_fixed_prompt(tokenizer, parts))
        raise _fixed_too_long(spec, lang, example, need, max_prompt_tokens,
                              "the prompt budget (data.max_total_generation minus max_new_tokens)")
    return bos + prompt
