"""Load a pool of task records: `load_pool(task, lang, source) -> (rows, LoadReport)`.

`source` is:
- "hub": MLQA / XL-Sum through `datasets` (`data.hub`: the published configs, and the Hub's
  Parquet conversion when `datasets` refuses the loading script);
- "demo": the bundled data set of `data.demo`;
- a path (`data.local_files`): MLQA's SQuAD-style JSON, XL-Sum JSONL, or CSV / TSV / JSON / JSONL
  with the columns context, question, answers (QA) or article, summary (summarisation; `text` is
  accepted for `article`, as in XL-Sum); or a folder holding MLQA's or XL-Sum's own files.

Every row goes through one normaliser (`data.records`). Unusable rows are skipped and counted per
reason in the `LoadReport` (one summary line); when nothing usable is left a `DataSourceError`
names the file, the reasons and the fix. Rows are returned in file order.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from grasp_lora.data.hub import load_hub
from grasp_lora.data.local_files import load_local
from grasp_lora.data.records import DataSourceError, LoadReport, normalize_pool
from grasp_lora.data.tasks import get_task

logger = logging.getLogger(__name__)


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

        return normalize_pool(task, demo_pool(task, lang), "demo", id_prefix=f"demo-{task}-{lang}")
    if isinstance(source, str) and not source.strip():
        raise DataSourceError("empty data source; use 'hub', 'demo' or a path to a local file")
    return load_local(task, lang, source)
