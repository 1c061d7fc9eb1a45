"""Load a pool of task records from the hub, the bundled demo set, or a local file/folder.

`load_pool(task, lang, source) -> (rows, LoadReport)`; `source` is:
- "hub": `datasets.load_dataset` (`facebook/mlqa` config `mlqa.<lang>.<lang>`, test + validation
  pooled; `csebuetnlp/xlsum` config `english` / `arabic` / `chinese_simplified` ..., train split).
  Both are published as loading scripts, which `datasets` >= 4 refuses to run; on that error (or
  a config the published repo does not declare) the same config is loaded from the Hub's
  automatic Parquet conversion (revision `refs/convert/parquet`), whose rows have the same columns.
- "demo": the bundled data set of grasp_lora.data.demo.
- a path: MLQA's SQuAD-style JSON (version/data/paragraphs/qas), XL-Sum JSONL (id, url, title,
  summary, text), or CSV / TSV / JSON / JSONL with the columns context, question, answers (QA) or
  article, summary (summarisation; `text` is accepted for `article`, as in XL-Sum). A folder is
  searched for MLQA's `*context-<lang>-question-<lang>.json` files (all pooled) or XL-Sum's
  `<config>_train.jsonl`.

Every row goes through one normaliser. Unusable rows are skipped and counted per reason in the
`LoadReport` (one summary line); when nothing usable is left a `DataSourceError` names the file,
the reasons and the fix. Rows are returned in file order; ids are kept when given and otherwise
derived from the row's content (stable across runs and row order).
"""

from __future__ import annotations

import csv
import hashlib
import io as _io
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from grasp_lora.data.tasks import get_task

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------
# Names on the hub.

MLQA_HUB = "facebook/mlqa"
XLSUM_HUB = "csebuetnlp/xlsum"
MLQA_LANGS = ("ar", "de", "en", "es", "hi", "vi", "zh")
MLQA_SPLITS = ("test", "validation")  # pooled, as in SPEC 1
XLSUM_SPLIT = "train"
# The Hub converts every public dataset to Parquet on this branch; script-only datasets load from it.
PARQUET_REVISION = "refs/convert/parquet"
# What datasets (>= 4) raises for a repo that only has a loading script, and for an undeclared config.
_SCRIPT_REFUSED = "Dataset scripts are no longer supported"
_CONFIG_MISSING = re.compile(r"BuilderConfig '.*' not found")
# XL-Sum's configs are language names; the ISO codes users write map onto them.
XLSUM_CONFIGS = {
    "am": "amharic", "ar": "arabic", "az": "azerbaijani", "bn": "bengali", "my": "burmese",
    "zh": "chinese_simplified", "zh-cn": "chinese_simplified", "zh-hans": "chinese_simplified",
    "zh-tw": "chinese_traditional", "zh-hant": "chinese_traditional", "en": "english",
    "fr": "french", "gu": "gujarati", "ha": "hausa", "hi": "hindi", "ig": "igbo",
    "id": "indonesian", "ja": "japanese", "rn": "kirundi", "ko": "korean", "ky": "kyrgyz",
    "mr": "marathi", "ne": "nepali", "om": "oromo", "ps": "pashto", "fa": "persian",
    "pcm": "pidgin", "pt": "portuguese", "pa": "punjabi", "ru": "russian",
    "gd": "scottish_gaelic", "sr-cyrl": "serbian_cyrillic", "sr-latn": "serbian_latin",
    "si": "sinhala", "so": "somali", "es": "spanish", "sw": "swahili", "ta": "tamil",
    "te": "telugu", "th": "thai", "ti": "tigrinya", "tr": "turkish", "uk": "ukrainian",
    "ur": "urdu", "uz": "uzbek", "vi": "vietnamese", "cy": "welsh", "yo": "yoruba",
}

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

_LINE_FORMATS = (".jsonl", ".ndjson")
_KNOWN_SUFFIXES = (".json", ".jsonl", ".ndjson", ".csv", ".tsv")


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


class _Skip(Exception):
    """Raised inside the normaliser; carries the skip reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _has_undecodable(value: Any) -> bool:
    """True when text read with errors='surrogateescape' carried bytes that are not UTF-8."""
    if isinstance(value, str):
        return any("\udc80" <= ch <= "\udcff" for ch in value)
    if isinstance(value, dict):
        return any(_has_undecodable(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_undecodable(v) for v in value)
    return False


def _text(row: dict[str, Any], *names: str) -> str:
    """The first present column among `names`, stripped; skips the row when absent or empty."""
    for name in names:
        if name in row and row[name] is not None:
            value = row[name]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str):
                raise _Skip(f"non-text {name}")
            value = value.strip()
            if not value:
                raise _Skip(f"empty {name}")
            return value
    raise _Skip(f"missing column {names[0]}")


def parse_answers(value: Any) -> list[str]:
    """Gold answers from any of the accepted shapes, stripped, empty ones and repeats removed.

    Accepted: a list of strings (or of {"text": ...} dicts, SQuAD), a plain string, a number,
    the HF / SQuAD dict {"text": [...], "answer_start": [...]}, or a list / dict JSON-encoded
    in a string (as CSV cells carry them).
    """
    if isinstance(value, dict):
        if "text" not in value:
            raise _Skip(BAD_ANSWERS)
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
        raise _Skip(BAD_ANSWERS)
    out: list[str] = []
    for item in items:
        if isinstance(item, dict):
            item = item.get("text")
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            item = str(item)
        if not isinstance(item, str):
            raise _Skip(BAD_ANSWERS)
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
        raise _Skip("missing column answers")
    answers = parse_answers(row["answers"] if "answers" in row else row["answer"])
    if not answers:
        raise _Skip("empty answers")
    kept = [a for a in answers if a in context]
    if not kept:
        raise _Skip(ANSWER_NOT_IN_CONTEXT)
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
    """Normalise raw rows (dicts, or `_Skip` markers from the readers), counting every outcome."""
    kind = get_task(task).kind
    normalize = normalize_qa if kind == "qa" else normalize_summary
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for item in raw:
        report.total += 1
        try:
            if isinstance(item, _Skip):
                raise item
            if not isinstance(item, dict):
                raise _Skip(NOT_OBJECT)
            if _has_undecodable(item):
                raise _Skip(UNDECODABLE)
            record = normalize(item, report, id_prefix)
            if record["id"] in seen:
                raise _Skip(DUPLICATE_ID)
        except _Skip as skip:
            report.skip(skip.reason)
            continue
        seen.add(record["id"])
        rows.append(record)
    report.loaded = len(rows)
    return rows


# ----------------------------------------------------------------------------------------------
# Readers: each yields raw dict rows (or `_Skip` markers for rows that could not even be parsed).


def _read_text(path: Path) -> str:
    """File text; bytes that are not UTF-8 survive as surrogate escapes and mark their row."""
    return path.read_bytes().decode("utf-8-sig", errors="surrogateescape")


def _json_lines(text: str) -> Iterator[Any]:
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            # A line whose only problem is its encoding is counted as such, not as bad JSON.
            yield _Skip(UNDECODABLE if _has_undecodable(line) else INVALID_JSON)


def _squad_rows(doc: dict[str, Any]) -> Iterator[Any]:
    """Flatten MLQA / SQuAD v1 JSON into {id, context, question, answers} rows."""
    data = doc.get("data")
    if not isinstance(data, list):
        yield _Skip(MALFORMED)
        return
    for article in data:
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            yield _Skip(MALFORMED)
            continue
        for para in paragraphs:
            qas = para.get("qas") if isinstance(para, dict) else None
            if not isinstance(qas, list):
                yield _Skip(MALFORMED)
                continue
            for qa in qas:
                if not isinstance(qa, dict):
                    yield _Skip(MALFORMED)
                    continue
                row = {k: v for k, v in qa.items() if k in ("id", "question", "answers")}
                row["context"] = para.get("context")
                yield row


def _json_rows(text: str) -> Iterator[Any]:
    """A .json file: MLQA / SQuAD JSON, a list of records, or (misnamed) JSON Lines."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        yield from _json_lines(text)  # e.g. XL-Sum JSONL saved as .json
        return
    if isinstance(doc, dict) and "data" in doc:
        yield from _squad_rows(doc)
    elif isinstance(doc, list):
        yield from doc
    else:
        yield _Skip(MALFORMED if isinstance(doc, dict) else NOT_OBJECT)


def _csv_rows(text: str, delimiter: str) -> Iterator[Any]:
    reader = csv.DictReader(_io.StringIO(text, newline=""), delimiter=delimiter)
    if reader.fieldnames is None:
        return
    # Header names are matched case-insensitively and without surrounding spaces.
    reader.fieldnames = [(name or "").strip().lower() for name in reader.fieldnames]
    for row in reader:
        # csv puts surplus cells under the key None; they are not part of any column.
        yield {k: v for k, v in row.items() if k is not None}


def read_file_rows(path: Path) -> Iterator[Any]:
    text = _read_text(path)
    suffix = path.suffix.lower()
    if suffix in _LINE_FORMATS:
        return _json_lines(text)
    if suffix == ".json":
        return _json_rows(text)
    if suffix == ".csv":
        return _csv_rows(text, ",")
    if suffix == ".tsv":
        return _csv_rows(text, "\t")
    raise DataSourceError(
        f"{path}: unsupported file type {path.suffix or '(none)'!r}; use .json (MLQA), .jsonl "
        f"(XL-Sum or records), .csv or .tsv"
    )


def folder_files(folder: Path, task: str, lang: str) -> list[Path]:
    """MLQA's or XL-Sum's own files for `lang` inside a downloaded folder."""
    if get_task(task).kind == "qa":
        pattern = f"*context-{lang}-question-{lang}.json"
    else:
        pattern = f"{XLSUM_CONFIGS.get(lang.lower(), lang)}_{XLSUM_SPLIT}.jsonl"
    files = sorted(folder.rglob(pattern))
    if not files:
        raise DataSourceError(
            f"{folder}: no file matching {pattern!r} for {task}/{lang}; pass the file itself "
            f"(MLQA JSON, XL-Sum JSONL, CSV or JSONL) as the data source"
        )
    return files


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


def load_local(task: str, lang: str, path: str | Path) -> tuple[list[dict[str, Any]], LoadReport]:
    path = Path(path).expanduser()
    if not path.exists():
        raise DataSourceError(
            f"{path}: no such file or folder; data sources are 'hub', 'demo' or a path to an MLQA "
            f"JSON, XL-Sum JSONL, CSV or JSONL file"
        )
    files = folder_files(path, task, lang) if path.is_dir() else [path]
    report = LoadReport(source=str(path))
    raw: list[Any] = []
    for f in files:
        raw.extend(read_file_rows(f))
    rows = normalize_rows(task, raw, report, id_prefix=f"{task}-{lang}")
    _require_rows(rows, report, task)
    return rows, report


# ----------------------------------------------------------------------------------------------
# The hub.


def hub_address(task: str, lang: str) -> tuple[str, str, tuple[str, ...]]:
    """(dataset, config, splits) for `task` in `lang`."""
    kind = get_task(task).kind
    if kind == "qa":
        if lang not in MLQA_LANGS:
            raise DataSourceError(
                f"MLQA on the hub has no language {lang!r} (known: {', '.join(MLQA_LANGS)}); "
                f"pass a local file or 'demo' as the data source"
            )
        return MLQA_HUB, f"mlqa.{lang}.{lang}", MLQA_SPLITS
    config = XLSUM_CONFIGS.get(lang.lower())
    if config is None:
        raise DataSourceError(
            f"XL-Sum on the hub has no language {lang!r} (known codes: {', '.join(sorted(XLSUM_CONFIGS))}); "
            f"pass a local file or 'demo' as the data source"
        )
    return XLSUM_HUB, config, (XLSUM_SPLIT,)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def local_alternative(task: str, lang: str) -> str:
    """The files a user downloads instead of the hub, by their own names."""
    if get_task(task).kind == "qa":
        return (f"MLQA's own test-context-{lang}-question-{lang}.json (from MLQA_V1.zip; dev-context-{lang}-"
                f"question-{lang}.json too, or the folder holding both)")
    config = XLSUM_CONFIGS.get(lang.lower(), lang)
    return f"XL-Sum's own {config}_{XLSUM_SPLIT}.jsonl (from the XL-Sum data archive, or the folder holding it)"


def _wants_parquet(exc: BaseException) -> bool:
    return _SCRIPT_REFUSED in str(exc) or bool(_CONFIG_MISSING.search(str(exc)))


def _load_hub_split(datasets: Any, name: str, config: str, split: str, task: str, lang: str) -> Any:
    """One split as published; on datasets' refusal of the loading script (or a config the repo
    does not declare), the same config and split from the Hub's Parquet conversion."""
    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # network, auth, script refused, missing config: all end in one line
        tried, parquet = [_first_line(exc)], _wants_parquet(exc)
    if parquet:
        logger.info("%s (%s): %s; loading the Hub's Parquet conversion (revision %s)",
                    name, config, tried[0], PARQUET_REVISION)
        try:
            return datasets.load_dataset(name, config, split=split, revision=PARQUET_REVISION)
        except Exception as exc:  # noqa: BLE001 - reported below, after the first error
            tried.append(f"Parquet conversion: {_first_line(exc)}")
    raise DataSourceError(
        f"could not load {name} ({config}, {split}) from the Hugging Face hub ({'; '.join(tried)}); "
        f"pass a local file path instead, {local_alternative(task, lang)}, or 'demo', "
        f"as data.source_data / data.target_data"
    )


def load_hub(task: str, lang: str) -> tuple[list[dict[str, Any]], LoadReport]:
    name, config, splits = hub_address(task, lang)
    import datasets  # lazy: importing datasets is slow and only the hub path needs it

    raw: list[Any] = []
    for split in splits:
        ds = _load_hub_split(datasets, name, config, split, task, lang)
        raw.extend(dict(r) for r in ds)
    report = LoadReport(source=f"{name} {config} ({'+'.join(splits)})")
    rows = normalize_rows(task, raw, report, id_prefix=f"{task}-{lang}")
    _require_rows(rows, report, task)
    return rows, report


# ----------------------------------------------------------------------------------------------


def load_pool(task: str, lang: str, source: str | Path) -> tuple[list[dict[str, Any]], LoadReport]:
    """The pool of `task` records in `lang` from "hub", "demo" or a local path."""
    rows, report = _load_pool(task, lang, source)
    logger.info("data %s/%s: %s", task, lang, report.line())
    return rows, report


def _load_pool(task: str, lang: str, source: str | Path) -> tuple[list[dict[str, Any]], LoadReport]:
    get_task(task)  # unknown task -> clear error before any loading
    if isinstance(source, str) and source == "hub":
        return load_hub(task, lang)
    if isinstance(source, str) and source == "demo":
        from grasp_lora.data.demo import demo_pool

        report = LoadReport(source="demo")
        rows = normalize_rows(task, demo_pool(task, lang), report, id_prefix=f"demo-{task}-{lang}")
        _require_rows(rows, report, task)
        return rows, report
    if isinstance(source, str) and not source.strip():
        raise DataSourceError("empty data source; use 'hub', 'demo' or a path to a local file")
    return load_local(task, lang, source)

