"""Prepared rows -> training examples (token ids + labels), the step every training stage shares."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from grasp_lora.data.tasks import TaskSpec
from grasp_lora.data.tokenize import encode_for_training


def encode_rows(
    tokenizer: Any, rows: Sequence[Mapping[str, Any]], task: str | TaskSpec, lang: str, max_length: int,
    max_long_tokens: int | None = None,
) -> list[dict[str, list[int]]]:
    """Encode prepared rows; rows that are already encoded (input_ids + labels) pass through. `task`:
    a run's `tasks.task_spec(cfg.data)` (its templates plus data.prompts), or a task name (the
    registered templates)."""
    out = []
    for row in rows:
        if "input_ids" in row and "labels" in row:
            out.append({"input_ids": list(row["input_ids"]), "labels": list(row["labels"])})
        else:
            out.append(encode_for_training(tokenizer, task, lang, row, max_length, max_long_tokens))
    return out
