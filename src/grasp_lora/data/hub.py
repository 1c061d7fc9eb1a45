"""MLQA and XL-Sum from the Hugging Face hub, with the Hub's Parquet conversion as the fallback.

`facebook/mlqa` config `mlqa.<lang>.<lang>` (test + validation pooled) and `csebuetnlp/xlsum`
config `english` / `arabic` / `chinese_simplified` ... (train split) are published as loading
scripts, which `datasets` >= 4 refuses to run; on that error (or a config the published repo does
not declare) the same config is loaded from the Hub's automatic Parquet conversion (revision
`refs/convert/parquet`), whose rows have the same columns.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from grasp_lora.data.records import DataSourceError, LoadReport, normalize_pool
from grasp_lora.data.tasks import get_task

logger = logging.getLogger(__name__)

MLQA_HUB = "facebook/mlqa"
XLSUM_HUB = "csebuetnlp/xlsum"
MLQA_LANGS = ("ar", "de", "en", "es", "hi", "vi", "zh")
MLQA_SPLITS = ("test", "validation")  # pooled (METHOD.md, "Data")
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
    return normalize_pool(task, raw, f"{name} {config} ({'+'.join(splits)})", id_prefix=f"{task}-{lang}")
