"""Local files in MLQA's, XL-Sum's or a generic layout -> raw rows for the normaliser.

MLQA's SQuAD-style JSON (version/data/paragraphs/qas), XL-Sum JSONL (id, url, title, summary,
text), or CSV / TSV / JSON / JSONL with the columns of `data.records`. A folder is searched for
MLQA's `*context-<lang>-question-<lang>.json` files (all pooled) or XL-Sum's `<config>_train.jsonl`.
Each reader yields raw dict rows, or `Skip` markers for rows that could not even be parsed.
"""

from __future__ import annotations

import csv
import io as _io
import json
from pathlib import Path
from typing import Any, Iterator

from grasp_lora.data.hub import XLSUM_CONFIGS, XLSUM_SPLIT
from grasp_lora.data.records import (
    INVALID_JSON,
    MALFORMED,
    NOT_OBJECT,
    UNDECODABLE,
    DataSourceError,
    LoadReport,
    Skip,
    has_undecodable,
    normalize_pool,
)
from grasp_lora.data.tasks import get_task

_LINE_FORMATS = (".jsonl", ".ndjson")


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
            yield Skip(UNDECODABLE if has_undecodable(line) else INVALID_JSON)


def _squad_rows(doc: dict[str, Any]) -> Iterator[Any]:
    """Flatten MLQA / SQuAD v1 JSON into {id, context, question, answers} rows."""
    data = doc.get("data")
    if not isinstance(data, list):
        yield Skip(MALFORMED)
        return
    for article in data:
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            yield Skip(MALFORMED)
            continue
        for para in paragraphs:
            qas = para.get("qas") if isinstance(para, dict) else None
            if not isinstance(qas, list):
                yield Skip(MALFORMED)
                continue
            for qa in qas:
                if not isinstance(qa, dict):
                    yield Skip(MALFORMED)
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
        yield Skip(MALFORMED if isinstance(doc, dict) else NOT_OBJECT)


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


def load_local(task: str, lang: str, path: str | Path) -> tuple[list[dict[str, Any]], LoadReport]:
    path = Path(path).expanduser()
    if not path.exists():
        raise DataSourceError(
            f"{path}: no such file or folder; data sources are 'hub', 'demo' or a path to an MLQA "
            f"JSON, XL-Sum JSONL, CSV or JSONL file"
        )
    files = folder_files(path, task, lang) if path.is_dir() else [path]
    raw: list[Any] = []
    for f in files:
        raw.extend(read_file_rows(f))
    return normalize_pool(task, raw, str(path), id_prefix=f"{task}-{lang}")
