"""A bundled multilingual demo data set of our own (not MLQA / XL-Sum text), shipped as JSONL.

`demo_pool(task, lang)` returns 360 short news-like records for `mlqa` (QA) or `xlsum`
(summarisation) in English, Arabic or Simplified Chinese: six kinds of news event written natively
in each language, QA passages with a question whose answer occurs exactly once, and articles with
a one-sentence summary that only states their facts.

The records are frozen package data, `demo_pools/<task>.<lang>.jsonl`, read on first use. They
were generated once, seeded, by scripts/make_demo_pools.py, which describes them in full and
remakes them byte for byte; tests/test_demo_pools.py pins their digests, so the demo's numbers
cannot change unnoticed.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING, Any

from grasp_lora.data.tasks import get_task

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

POOL_SIZE = 360
LANGUAGES = ("en", "ar", "zh")
POOLS_DIR = "demo_pools"

_CACHE: dict[tuple[str, str], list[dict[str, Any]]] = {}


def pool_file(task: str, lang: str) -> Traversable:
    """The packaged file of one pool (a Path in an ordinary install)."""
    return resources.files(__package__) / POOLS_DIR / f"{task}.{lang}.jsonl"


def _read_pool(task: str, lang: str) -> list[dict[str, Any]]:
    with pool_file(task, lang).open("r", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def demo_pool(task: str, lang: str) -> list[dict[str, Any]]:
    """The bundled demo records of `task` (mlqa or xlsum) in `lang` (en, ar or zh); a fresh copy."""
    spec = get_task(task)
    if lang not in LANGUAGES:
        raise ValueError(
            f"the demo data set has no language {lang!r} (known: {', '.join(LANGUAGES)}); "
            f"use a local file (CSV / JSONL) as the data source for other languages"
        )
    key = (spec.name, lang)
    if key not in _CACHE:
        _CACHE[key] = _read_pool(spec.name, lang)
    return [dict(row, answers=list(row["answers"])) if "answers" in row else dict(row) for row in _CACHE[key]]
