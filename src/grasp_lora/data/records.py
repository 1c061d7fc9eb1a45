"""One normaliser for every data source: raw rows -> task records, and a `LoadReport` of the rest.

Unusable rows are skipped and counted per reason in the `LoadReport` (one summary line); when
nothing usable is left a `DataSourceError` names the source, the reasons and the fix. Ids are kept
when given and otherwise derived from the row's content (stable across runs and row order).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from grasp_lora.data.tasks import get_task

# Skip reasons (the keys of LoadReport.skipped) and the fix each one suggests.
INVALID_JSON = "invalid JSON"
NOT_OBJECT = "not a JSON object"
UNDECODABLE = "undecodable bytes (not UTF-8)"
ANSWER_NOT_IN_CONTEXT = "answer not in context"
BAD_ANSWERS = "unreadable answers"
DUPLICATE_ID = "duplicate id"
MALFORMED = "malformed MLQA entry"

_FIXES = {
    INVALID_JSON: "check the file is JSON / JSON Lines (one object per line)",
    NOT_OBJECT: "each line must be one JSON object",
    UNDECODABLE: "re-save the file as UTF-8 (for example: iconv -f cp1256 -t utf-8 in > out)",
    ANSWER_NOT_IN_CONTEXT: "each answer must be an exact span of its context",
    BAD_ANSWERS: "answers may be a list of strings, a JSON-encoded list, a string or {'text': [...]}",
    DUPLICATE_ID: "give each row a unique id",
    MALFORMED: "MLQA JSON is {'data': [{'paragraphs': [{'context', 'qas': [{'id', 'question', 'answers'}]}]}]}",
}


class DataSourceError(ValueError):
    """A pool could not be loaded; the message names the source, the reason and the fix."""


@dataclass
class LoadReport:
    """What a load kept and skipped; `str(report)` is one summary line."""

    source: str
    total: int = 0
    loaded: int = 0
    skipped: Counter = field(default_factory=Counter)
    answers_dropped: int = 0  # gold answers not found in their context, from rows that were kept

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    def line(self) -> str:
        text = f"loaded {self.loaded} of {self.total} rows from {self.source}"
        if self.skipped:
            # Most frequent reason first; ties alphabetical so the line is deterministic.
            parts = sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0]))
            text += ": skipped " + ", ".join(f"{n} {reason}" for reason, n in parts)
        if self.answers_dropped:
            text += f"; dropped {self.answers_dropped} gold answers not in their context"
        return text

    def __str__(self) -> str:
        return self.line()

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "total": self.total,
            "loaded": self.loaded,
            "skipped": dict(sorted(self.skipped.items())),
            "answers_dropped": self.answers_dropped,
            "line": self.line(),
        }


# ----------------------------------------------------------------------------------------------
# Normalising one raw row into a record.


class Skip(Exception):
    """Raised inside the normaliser; carries the skip reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def has_undecodable(value: Any) -> bool:
    """True when text read with errors='surrogateescape' carried bytes that are not UTF-8."""
    if isinstance(value, str):
        return any("\udc80" <= ch <= "\udcff" for ch in value)
    if isinstance(value, dict):
        return any(has_undecodable(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(has_undecodable(v) for v in value)
    return False


def _text(row: dict[str, Any], *names: str) -> str:
    """The first present column among `names`, stripped; skips the row when absent or empty."""
    for name in names:
        if name in row and row[name] is not None:
            value = row[name]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str):
                raise Skip(f"non-text {name}")
            value = value.strip()
            if not value:
                raise Skip(f"empty {name}")
            return value
    raise Skip(f"missing column {names[0]}")


def parse_answers(value: Any) -> list[str]:
    """Gold answers from any of the accepted shapes, stripped, empty ones and repeats removed.

    Accepted: a list of strings (or of {"text": ...} dicts, SQuAD), a plain string, a number,
    the HF / SQuAD dict {"text": [...], "answer_start": [...]}, or a list / dict JSON-encoded
    in a string (as CSV cells carry them).
    """
    if isinstance(value, dict):
        if "text" not in value:
            raise Skip(BAD_ANSWERS)
        return parse_answers(value["text"])
    if isinstance(value, str):
        stripped = value.strip()
        # CSV cells hold lists / dicts JSON-encoded; anything that does not decode is plain text.
        if (stripped[:1], stripped[-1:]) in (("[", "]"), ("{", "}")):
            try:
                decoded = json.loads(stripped)
            except json.JSONDecodeError:
                decoded = None  # a plain answer that happens to be bracketed
            if isinstance(decoded, list) or (isinstance(decoded, dict) and "text" in decoded):
                return parse_answers(decoded)
        items: list[Any] = [stripped]
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        items = [str(value)]
    elif isinstance(value, list):
        items = value
    else:
        raise Skip(BAD_ANSWERS)
    out: list[str] = []
    for item in items:
        if isinstance(item, dict):
            item = item.get("text")
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            item = str(item)
        if not isinstance(item, str):
            raise Skip(BAD_ANSWERS)
        item = item.strip()
        if item and item not in out:  # dedupe, order kept (the first answer is the target)
            out.append(item)
    return out


def _given_id(row: dict[str, Any]) -> str | None:
    value = row.get("id")
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    text = str(value).strip()
    return text or None


def _content_id(prefix: str, *parts: str) -> str:
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{prefix}-{digest}"


def normalize_qa(row: dict[str, Any], report: LoadReport, id_prefix: str) -> dict[str, Any]:
    context = _text(row, "context")
    question = _text(row, "question")
    if "answers" not in row and "answer" not in row:
        raise Skip("missing column answers")
    answers = parse_answers(row["answers"] if "answers" in row else row["answer"])
    if not answers:
        raise Skip("empty answers")
    kept = [a for a in answers if a in context]
    if not kept:
        raise Skip(ANSWER_NOT_IN_CONTEXT)
    report.answers_dropped += len(answers) - len(kept)
    rid = _given_id(row) or _content_id(id_prefix, context, question, kept[0])
    return {"id": rid, "context": context, "question": question, "answers": kept}


def normalize_summary(row: dict[str, Any], report: LoadReport, id_prefix: str) -> dict[str, Any]:
    # XL-Sum names the article `text`; our generic files name it `article`.
    article = _text(row, "article", "text")
    summary = _text(row, "summary")
    title = row.get("title")
    title = title.strip() if isinstance(title, str) else ""
    rid = _given_id(row) or _content_id(id_prefix, article, summary)
    return {"id": rid, "article": article, "summary": summary, "title": title}


def normalize_rows(task: str, raw: Iterable[Any], report: LoadReport, id_prefix: str) -> list[dict[str, Any]]:
    """Normalise raw rows (dicts, or `Skip` markers from the readers), counting every outcome."""
    kind = get_task(task).kind
    normalize = normalize_qa if kind == "qa" else normalize_summary
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for item in raw:
        report.total += 1
        try:
            if isinstance(item, Skip):
                raise item
            if not isinstance(item, dict):
                raise Skip(NOT_OBJECT)
            if has_undecodable(item):
                raise Skip(UNDECODABLE)
            record = normalize(item, report, id_prefix)
            if record["id"] in seen:
                raise Skip(DUPLICATE_ID)
        except Skip as skip:
            report.skip(skip.reason)
            continue
        seen.add(record["id"])
        rows.append(record)
    report.loaded = len(rows)
    return rows


def fix_hint(task: str, report: LoadReport) -> str:
    """How to fix the most frequent reason rows were skipped (for error and warning lines)."""
    top = max(report.skipped.items(), key=lambda kv: (kv[1], kv[0]))[0] if report.skipped else None
    if top in _FIXES:
        return _FIXES[top]
    if get_task(task).kind == "qa":
        return "QA files need the columns context, question, answers (or MLQA's SQuAD-style JSON)"
    return "summarisation files need the columns article (or text), summary (XL-Sum JSONL works as it is)"


def _require_rows(rows: list[dict[str, Any]], report: LoadReport, task: str) -> None:
    if rows:
        return
    if report.total == 0:
        raise DataSourceError(f"{report.source}: no rows found; {fix_hint(task, report)}")
    raise DataSourceError(f"{report.source}: no usable rows ({report.line()}); {fix_hint(task, report)}")


def normalize_pool(task: str, raw: Iterable[Any], source: str,
                   id_prefix: str) -> tuple[list[dict[str, Any]], LoadReport]:
    """A whole source's raw rows -> (records, report); a source without one usable row is refused."""
    report = LoadReport(source=source)
    rows = normalize_rows(task, raw, report, id_prefix=id_prefix)
    _require_rows(rows, report, task)
    return rows, report
