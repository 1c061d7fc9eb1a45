"""The `prepare` stage: pools -> seeded splits -> `<out_dir>/<lang>/<split>.jsonl` + manifest.

For the source and the target language of `cfg.data`, the pool is loaded (`load_pool`), split
(`make_splits` with `cfg.data.seed`; sizes from the config or the table of METHOD.md, "Data") and every split is
written, empty ones included, so later stages can rely on all four files existing. The manifest
records each language's source, sizes, row counts, the sha256 of every file and the load report.
Files are a pure function of (config, pool): the same seed gives byte-identical files.
Each language's load report (rows read, rows skipped by reason, gold answers dropped) goes to the
console (`load_pool` logs it), with a warning when more than 5% of a file's rows were skipped: a
file with a wrong column or a broken export otherwise trains on a silently smaller pool.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from grasp_lora.config import Config, SplitSizes
from grasp_lora.data.records import LoadReport, fix_hint
from grasp_lora.data.sources import load_pool
from grasp_lora.data.splits import SPLITS, default_sizes, make_splits, passage_key, sizes_dict
from grasp_lora.io import file_sha256, read_jsonl, write_jsonl, write_manifest

logger = logging.getLogger(__name__)


# Above this share of skipped rows the console gets a warning, not just the report line.
SKIP_WARN_FRACTION = 0.05


def skip_warning(task: str, lang: str, role: str, report: LoadReport) -> str | None:
    """The warning line when more than 5% of a file's rows were skipped, else None."""
    skipped = sum(report.skipped.values())
    if not report.total or skipped / report.total <= SKIP_WARN_FRACTION:
        return None
    return (f"data {task}/{lang} ({role}): {skipped} of {report.total} rows ({100 * skipped / report.total:.1f}%) "
            f"were skipped in {report.source}; {fix_hint(task, report)}")


def split_path(data_dir: str | Path, lang: str, split: str) -> Path:
    return Path(data_dir) / lang / f"{split}.jsonl"


def _prepare_language(
    task: str, lang: str, role: str, source: str, sizes: SplitSizes, seed: int, out_dir: Path, config_key: str,
    split_by: str = "question",
) -> dict[str, Any]:
    pool, report = load_pool(task, lang, source)  # logs the report line ("data <task>/<lang>: loaded ...")
    warning = skip_warning(task, lang, role, report)
    if warning:
        logger.warning(warning)
    splits = make_splits(pool, sizes, seed, config_key=config_key,
                         group_key=passage_key(task) if split_by == "context" else None)
    files: dict[str, Any] = {}
    for name in SPLITS:
        path = split_path(out_dir, lang, name)
        write_jsonl(path, splits[name])
        files[name] = {
            "path": str(path.relative_to(out_dir)),
            "rows": len(splits[name]),
            "sha256": file_sha256(path),
        }
    return {
        "source": str(source),
        "sizes": sizes_dict(sizes),
        "pool_size": len(pool),
        "counts": {name: len(splits[name]) for name in SPLITS},
        "split_by": split_by,
        "files": files,
        "load_report": report.line(),
        "load_details": report.to_dict(),
    }


def prepare_data(cfg: Config, out_dir: str | Path) -> dict[str, Any]:
    """Write the splits of cfg.data's source and target language; returns the manifest."""
    d = cfg.data
    out = Path(out_dir)
    languages: dict[str, Any] = {}
    plan = (
        ("source", d.source_lang, d.source_data, d.source_sizes, "data.source_sizes"),
        ("target", d.target_lang, d.target_data, d.target_sizes, "data.target_sizes"),
    )
    for role, lang, source, sizes, key in plan:
        chosen = sizes if sizes is not None else default_sizes(d.task, lang)
        entry = _prepare_language(d.task, lang, role, source, chosen, d.seed, out, key, d.split_by)
        languages[lang] = {"role": role, **entry}
    return write_manifest(
        out,
        stage="prepare",
        task=d.task,
        seed=d.seed,
        source_lang=d.source_lang,
        target_lang=d.target_lang,
        languages=languages,
        load_reports=[f"{lang}: {languages[lang]['load_report']}" for lang in languages],
    )


def load_split(data_dir: str | Path, lang: str, split: str) -> list[dict[str, Any]]:
    """Rows of one prepared split."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
    path = split_path(data_dir, lang, split)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: prepared split not found; run the prepare stage first "
            f"(grasp_lora.data.prepare.prepare_data) for language {lang!r} into {data_dir}"
        )
    return read_jsonl(path)
