"""Split sizes, seeded disjoint splits and the prepare stage (files, manifest, determinism)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from grasp_lora.config import Config, DataConfig, SplitSizes
from grasp_lora.data.prepare import load_split, prepare_data
from grasp_lora.data.splits import SPLITS, SplitError, default_sizes, make_splits, passage_key
from grasp_lora.io import file_sha256, read_json

FIX = Path(__file__).parent / "fixtures" / "data"


def test_default_sizes_follow_the_spec_table():
    assert default_sizes("mlqa", "en") == SplitSizes(3030, 315, 0, 315)
    assert default_sizes("xlsum", "en") == SplitSizes(10000, 1000, 0, 1000)
    for task in ("mlqa", "xlsum"):
        for lang in ("ar", "zh"):
            assert default_sizes(task, lang) == SplitSizes(50, 50, 16, 100)


def test_make_splits_sizes_disjoint_and_covering_the_requested_count():
    pool = list(range(100))
    splits = make_splits(pool, SplitSizes(train=40, val=20, micro_dev=8, test=30), seed=42)
    assert [len(splits[s]) for s in SPLITS] == [40, 20, 8, 30]
    used = [x for s in SPLITS for x in splits[s]]
    assert len(set(used)) == len(used) == 98  # disjoint
    assert splits["train"] != sorted(splits["train"])  # actually shuffled


def test_make_splits_deterministic_per_seed():
    pool = [f"row{i}" for i in range(60)]
    sizes = SplitSizes(train=20, val=10, micro_dev=5, test=10)
    assert make_splits(pool, sizes, seed=7) == make_splits(list(pool), sizes, seed=7)
    assert make_splits(pool, sizes, seed=7)["train"] != make_splits(pool, sizes, seed=8)["train"]


def test_make_splits_pool_too_small_message():
    with pytest.raises(SplitError) as e:
        make_splits(list(range(120)), SplitSizes(50, 50, 16, 100), seed=42, config_key="data.target_sizes")
    msg = str(e.value)
    assert "pool has 120 examples but the splits need 216" in msg
    assert "train 50 + val 50 + micro_dev 16 + test 100" in msg
    assert "data.target_sizes.train" in msg and "by 96" in msg


def _passages(n_passages: int, per: int) -> list[dict]:
    return [{"id": f"p{p}q{q}", "context": f"paragraph {p}", "question": f"q{q}", "answers": ["a"]}
            for p in range(n_passages) for q in range(per)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_split_by_context_keeps_every_paragraph_in_one_split(seed):
    pool = _passages(40, 5)
    sizes = SplitSizes(train=50, val=50, micro_dev=16, test=60)
    by_row = make_splits(pool, sizes, seed)
    train = {r["context"] for r in by_row["train"]}
    assert sum(r["context"] in train for s in ("val", "micro_dev", "test") for r in by_row[s]) > 0  # the leak
    splits = make_splits(pool, sizes, seed, group_key=passage_key("mlqa"))
    assert [len(splits[s]) for s in SPLITS] == [50, 50, 16, 60]
    owner: dict[str, str] = {}
    for name in SPLITS:
        for row in splits[name]:
            assert owner.setdefault(row["context"], name) == name, row["context"]
    ids = [r["id"] for s in SPLITS for r in splits[s]]
    assert len(set(ids)) == len(ids)
    assert splits == make_splits(list(pool), sizes, seed, group_key=passage_key("mlqa"))  # deterministic


def test_split_by_context_with_one_row_per_passage_is_the_row_split():
    pool = _passages(80, 1)
    sizes = SplitSizes(train=30, val=10, micro_dev=8, test=20)
    assert make_splits(pool, sizes, 5, group_key=passage_key("mlqa")) == make_splits(pool, sizes, 5)
    articles = [{"id": str(i), "article": f"article {i}", "summary": "s", "title": "t"} for i in range(80)]
    assert make_splits(articles, sizes, 5, group_key=passage_key("xlsum")) == make_splits(articles, sizes, 5)


def test_split_by_context_says_when_the_passages_do_not_suffice():
    with pytest.raises(SplitError) as e:  # 100 rows, but whole paragraphs of 10 cannot give 4 splits of 24
        make_splits(_passages(10, 10), SplitSizes(24, 24, 24, 24), 0, config_key="data.target_sizes",
                    group_key=passage_key("mlqa"))
    assert "100 examples in 10 passages" in str(e.value) and "data.split_by=question" in str(e.value)


def test_prepare_records_split_by_and_the_default_is_the_papers_row_split(tmp_path):
    assert DataConfig().split_by == "question"
    by_row = prepare_data(_cfg(), tmp_path / "q")
    by_context = prepare_data(_cfg(split_by="context"), tmp_path / "c")
    assert by_row["languages"]["ar"]["split_by"] == "question" and by_context["languages"]["ar"]["split_by"] == "context"
    train = {r["context"] for r in load_split(tmp_path / "c", "ar", "train")}
    for split in ("val", "micro_dev", "test"):
        assert not train & {r["context"] for r in load_split(tmp_path / "c", "ar", split)}, split


def _cfg(tmp_seed: int = 42, **data) -> Config:
    base = dict(task="mlqa", source_lang="en", target_lang="ar", source_data="demo", target_data="demo",
                seed=tmp_seed, source_sizes=SplitSizes(30, 10, 0, 0), target_sizes=SplitSizes(20, 10, 8, 15))
    base.update(data)
    return Config(data=DataConfig(**base))


def test_prepare_writes_every_split_and_a_manifest(tmp_path):
    manifest = prepare_data(_cfg(), tmp_path)
    for lang, counts in (("en", [30, 10, 0, 0]), ("ar", [20, 10, 8, 15])):
        assert [len(load_split(tmp_path, lang, s)) for s in SPLITS] == counts
        for s in SPLITS:
            assert (tmp_path / lang / f"{s}.jsonl").is_file()  # empty splits are written too
    assert (tmp_path / "en" / "test.jsonl").read_bytes() == b""
    on_disk = read_json(tmp_path / "manifest.json")
    assert on_disk["status"] == "complete" and on_disk["seed"] == 42 and on_disk["task"] == "mlqa"
    ar = on_disk["languages"]["ar"]
    assert ar["role"] == "target" and ar["source"] == "demo" and ar["counts"]["micro_dev"] == 8
    assert ar["files"]["train"]["sha256"] == file_sha256(tmp_path / "ar" / "train.jsonl")
    assert ar["load_report"] == "loaded 360 of 360 rows from demo"
    assert manifest["languages"]["en"]["role"] == "source"
    train_ids = {r["id"] for r in load_split(tmp_path, "ar", "train")}
    test_ids = {r["id"] for r in load_split(tmp_path, "ar", "test")}
    assert not train_ids & test_ids


def test_prepare_is_byte_identical_for_the_same_seed(tmp_path):
    prepare_data(_cfg(), tmp_path / "a")
    prepare_data(_cfg(), tmp_path / "b")
    prepare_data(_cfg(tmp_seed=1337), tmp_path / "c")
    for lang in ("en", "ar"):
        for s in SPLITS:
            assert (tmp_path / "a" / lang / f"{s}.jsonl").read_bytes() == (tmp_path / "b" / lang / f"{s}.jsonl").read_bytes()
    assert (tmp_path / "a" / "ar" / "train.jsonl").read_bytes() != (tmp_path / "c" / "ar" / "train.jsonl").read_bytes()


def test_prepare_defaults_sizes_and_reports_pool_too_small(tmp_path):
    # Default target sizes (50/50/16/100 = 216) fit the demo pool; a 4-row local file cannot.
    cfg = _cfg(target_sizes=None, source_data=str(FIX / "mlqa_en.json"), source_sizes=SplitSizes(2, 1, 0, 1))
    manifest = prepare_data(cfg, tmp_path)
    assert manifest["languages"]["ar"]["counts"] == {"train": 50, "val": 50, "micro_dev": 16, "test": 100}
    assert manifest["languages"]["en"]["load_report"].endswith("skipped 1 answer not in context, 1 empty question")
    big = _cfg(source_data=str(FIX / "mlqa_en.json"), source_sizes=SplitSizes(3, 1, 0, 1))
    with pytest.raises(SplitError, match=r"pool has 4 examples but the splits need 5 .*data\.source_sizes\.train"):
        prepare_data(big, tmp_path / "x")


def test_load_split_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the prepare stage first"):
        load_split(tmp_path, "ar", "train")
    with pytest.raises(ValueError, match=r"unknown split 'dev' \(known: train, val, micro_dev, test\)"):
        load_split(tmp_path, "ar", "dev")


def _summary_jsonl(path: Path, good: int, empty_summary: int, missing_article: int) -> Path:
    import json

    rows = [{"id": f"g{i}", "article": f"Article number {i} about the town.", "summary": f"Summary {i}."} for i in range(good)]
    rows += [{"id": f"e{i}", "article": f"Article {i}.", "summary": ""} for i in range(empty_summary)]
    rows += [{"id": f"m{i}", "summary": f"Summary {i}."} for i in range(missing_article)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_prepare_logs_each_load_report_and_warns_above_5_percent(tmp_path, caplog):
    src = _summary_jsonl(tmp_path / "en.jsonl", good=30, empty_summary=4, missing_article=2)
    cfg = _cfg(task="xlsum", source_data=str(src), source_sizes=SplitSizes(20, 5, 0, 0),
               target_sizes=SplitSizes(10, 5, 4, 5))
    with caplog.at_level(logging.INFO, logger="grasp_lora"):
        manifest = prepare_data(cfg, tmp_path / "data")
    en = manifest["languages"]["en"]["load_report"]
    assert en == "loaded 30 of 36 rows from " + str(src) + ": skipped 4 empty summary, 2 missing column article"
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"data xlsum/en: {en}" in infos and "data xlsum/ar: loaded 360 of 360 rows from demo" in infos
    # 6 of 36 skipped = 16.7% > 5%: one warning naming the file and how to fix it; none for the demo
    assert len(warnings) == 1
    assert warnings[0].startswith(f"data xlsum/en (source): 6 of 36 rows (16.7%) were skipped in {src};")
    assert "summarisation files need the columns" in warnings[0]


def test_prepare_no_warning_at_exactly_5_percent(tmp_path, caplog):
    src = _summary_jsonl(tmp_path / "en.jsonl", good=19, empty_summary=1, missing_article=0)
    cfg = _cfg(task="xlsum", source_data=str(src), source_sizes=SplitSizes(10, 5, 0, 0),
               target_sizes=SplitSizes(10, 5, 4, 5))
    with caplog.at_level(logging.INFO, logger="grasp_lora"):
        manifest = prepare_data(cfg, tmp_path / "data")
    assert manifest["languages"]["en"]["load_report"].endswith("skipped 1 empty summary")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
