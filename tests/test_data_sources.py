"""Loaders (hub stand-in, MLQA JSON, XL-Sum JSONL, CSV, JSONL, demo) and hostile input."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from grasp_lora.data.demo import POOL_SIZE, demo_pool
from grasp_lora.data.records import DataSourceError, LoadReport, Skip, parse_answers
from grasp_lora.data.sources import load_pool

FIX = Path(__file__).parent / "fixtures" / "data"


# ---------------------------------------------------------------------------------------------
# Local files in the real layouts.


def test_mlqa_squad_json():
    rows, report = load_pool("mlqa", "en", FIX / "mlqa_en.json")
    assert [r["id"] for r in rows] == ["en-0-0", "en-0-1", "en-1-0", "en-1-1"]
    assert rows[0]["answers"] == ["1932", "in 1932"]  # every gold answer kept, in order
    assert rows[3]["answers"] == ["a team of shepherds", "shepherds"]  # repeats removed
    assert rows[2]["context"].startswith("Mount Tavell") and rows[2]["question"] == "How high is Mount Tavell?"
    assert set(rows[0]) == {"id", "context", "question", "answers"}
    assert report.total == 6 and report.loaded == 4
    assert dict(report.skipped) == {"answer not in context": 1, "empty question": 1}
    assert str(report) == (f"loaded 4 of 6 rows from {FIX / 'mlqa_en.json'}: skipped "
                           "1 answer not in context, 1 empty question")


def test_xlsum_jsonl_maps_text_to_article():
    rows, report = load_pool("xlsum", "ar", FIX / "xlsum_arabic_train.jsonl")
    assert [r["id"] for r in rows] == ["arabic-fx-001", "arabic-fx-002", "arabic-fx-004"]
    assert rows[0]["article"].startswith("افتتحت البلدية يوم الخميس")
    assert rows[0]["summary"].endswith("عشرين دونما.") and rows[0]["title"] == "افتتاح حديقة عامة في مدينة الكرك"
    assert set(rows[0]) == {"id", "article", "summary", "title"}
    assert dict(report.skipped) == {"invalid JSON": 1, "empty summary": 1}
    assert report.line().startswith("loaded 3 of 5 rows from ")


def test_csv_qa_with_mixed_answer_encodings_and_synthesised_ids():
    rows, report = load_pool("mlqa", "zh", FIX / "qa_zh.csv")
    assert [r["answers"] for r in rows] == [["渤海"], ["杭州"], ["青石"], ["五层", "共有五层"]]
    assert dict(report.skipped) == {"answer not in context": 1, "empty context": 1}
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == 4 and all(i.startswith("mlqa-zh-") for i in ids)
    again, _ = load_pool("mlqa", "zh", FIX / "qa_zh.csv")
    assert [r["id"] for r in again] == ids  # stable across loads


def test_jsonl_qa_generic_columns():
    rows, report = load_pool("mlqa", "en", FIX / "qa_en.jsonl")
    assert {r["id"]: r["answers"] for r in rows} == {
        "q1": ["every Saturday at seven in the morning", "Saturday"],
        "q2": ["about 300"],
        "q3": ["Pier 4"],
    }
    assert report.total == 5  # the blank line is not a row
    assert dict(report.skipped) == {"empty answers": 1, "not a JSON object": 1}


def test_csv_summary_generic_columns():
    rows, report = load_pool("xlsum", "en", FIX / "summary_en.csv")
    assert [r["id"] for r in rows] == ["s1", "s2"]
    assert rows[1] == {"id": "s2", "article": rows[1]["article"], "summary":
                       "A local choir won first prize at the national festival.", "title": "Choir wins national prize"}
    assert dict(report.skipped) == {"empty summary": 1}


def test_folder_source_finds_the_data_sets_own_file_names(tmp_path):
    (tmp_path / "test").mkdir()
    (tmp_path / "dev").mkdir()
    text = (FIX / "mlqa_en.json").read_text(encoding="utf-8")
    (tmp_path / "test" / "test-context-en-question-en.json").write_text(text, encoding="utf-8")
    dev = json.loads(text)
    for article in dev["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                qa["id"] = "dev-" + qa["id"]
    (tmp_path / "dev" / "dev-context-en-question-en.json").write_text(json.dumps(dev), encoding="utf-8")
    (tmp_path / "test" / "test-context-en-question-ar.json").write_text("{}", encoding="utf-8")  # other pair: ignored
    rows, report = load_pool("mlqa", "en", tmp_path)
    assert len(rows) == 8 and rows[0]["id"].startswith("dev-")  # dev + test pooled, sorted by path
    with pytest.raises(DataSourceError, match=r"no file matching '\*context-zh-question-zh.json'"):
        load_pool("mlqa", "zh", tmp_path)


def test_folder_source_for_xlsum_uses_the_train_file(tmp_path):
    (tmp_path / "arabic").mkdir()
    src = (FIX / "xlsum_arabic_train.jsonl").read_bytes()
    (tmp_path / "arabic" / "arabic_train.jsonl").write_bytes(src)
    (tmp_path / "arabic" / "arabic_test.jsonl").write_bytes(b'{"id": "t", "text": "x", "summary": "y"}\n')
    rows, _ = load_pool("xlsum", "ar", tmp_path)
    assert [r["id"] for r in rows] == ["arabic-fx-001", "arabic-fx-002", "arabic-fx-004"]  # train only


# ---------------------------------------------------------------------------------------------
# Hostile input.


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_undecodable_line_is_skipped_and_counted(tmp_path):
    good = json.dumps({"id": "a", "article": "نص الخبر", "summary": "ملخص"}, ensure_ascii=False).encode("utf-8")
    bad = json.dumps({"id": "b", "article": "X", "summary": "Y"}).encode().replace(b'"X"', '"نص"'.encode("cp1256"))
    path = _write(tmp_path / "mixed.jsonl", good + b"\n" + bad + b"\n")
    rows, report = load_pool("xlsum", "ar", path)
    assert [r["id"] for r in rows] == ["a"]
    assert dict(report.skipped) == {"undecodable bytes (not UTF-8)": 1}


def test_wrong_encoding_everywhere_is_one_clear_error(tmp_path):
    text = "context,question,answers\nذهب أحمد إلى السوق,إلى أين ذهب أحمد؟,السوق\n"
    path = _write(tmp_path / "cp1256.csv", text.encode("cp1256"))
    with pytest.raises(DataSourceError) as e:
        load_pool("mlqa", "ar", path)
    msg = str(e.value)
    assert str(path) in msg and "undecodable" in msg and "UTF-8" in msg and "\n" not in msg


def test_missing_column_error_names_file_reason_and_fix(tmp_path):
    path = _write(tmp_path / "noq.csv", b"context,answers\nabc,b\nxyz,y\n")
    with pytest.raises(DataSourceError) as e:
        load_pool("mlqa", "en", path)
    msg = str(e.value)
    assert str(path) in msg and "2 missing column question" in msg
    assert "context, question, answers" in msg and "\n" not in msg


def test_all_invalid_json_lines(tmp_path):
    path = _write(tmp_path / "bad.jsonl", b"{not json\n{\"id\": 1,\n")
    with pytest.raises(DataSourceError, match=r"no usable rows \(loaded 0 of 2 rows .* 2 invalid JSON\)"):
        load_pool("xlsum", "en", path)


def test_empty_file_and_missing_path_and_unsupported_type(tmp_path):
    with pytest.raises(DataSourceError, match="no rows found"):
        load_pool("mlqa", "en", _write(tmp_path / "empty.jsonl", b"\n\n"))
    with pytest.raises(DataSourceError, match="no such file or folder; data sources are 'hub', 'demo'"):
        load_pool("mlqa", "en", tmp_path / "nope.csv")
    with pytest.raises(DataSourceError, match=r"unsupported file type '\.txt'"):
        load_pool("mlqa", "en", _write(tmp_path / "x.txt", b"hello"))


def test_duplicate_ids_are_skipped(tmp_path):
    rows = [{"id": "x", "context": "a b c", "question": "q?", "answers": ["b"]},
            {"id": "x", "context": "d e f", "question": "q?", "answers": ["e"]}]
    path = _write(tmp_path / "dup.jsonl", "\n".join(json.dumps(r) for r in rows).encode())
    out, report = load_pool("mlqa", "en", path)
    assert [r["context"] for r in out] == ["a b c"] and dict(report.skipped) == {"duplicate id": 1}


def test_answers_not_in_context_are_dropped_but_the_row_kept(tmp_path):
    row = {"id": "p", "context": "The red door.", "question": "Which door?", "answers": ["the blue door", "red door"]}
    out, report = load_pool("mlqa", "en", _write(tmp_path / "p.jsonl", json.dumps(row).encode()))
    assert out[0]["answers"] == ["red door"] and report.answers_dropped == 1
    assert report.line().endswith("; dropped 1 gold answers not in their context")


@pytest.mark.parametrize("value,expected", [
    (["a", "b", "a", " "], ["a", "b"]),
    ('["x", "y"]', ["x", "y"]),
    ("[not json]", ["[not json]"]),
    ("plain", ["plain"]),
    ({"text": ["t1", "t2"], "answer_start": [0, 3]}, ["t1", "t2"]),
    ('{"text": ["t"], "answer_start": [0]}', ["t"]),
    ([{"text": "s", "answer_start": 1}], ["s"]),
    (1908, ["1908"]),
])
def test_parse_answers_shapes(value, expected):
    assert parse_answers(value) == expected


def test_parse_answers_rejects_unreadable():
    with pytest.raises(Skip):
        parse_answers({"answer_start": [1]})
    with pytest.raises(Skip):
        parse_answers(None)


def test_report_line_with_nothing_skipped():
    assert LoadReport(source="X", total=3, loaded=3).line() == "loaded 3 of 3 rows from X"


# ---------------------------------------------------------------------------------------------
# The hub, through a stand-in for datasets.load_dataset.


@pytest.fixture
def fake_datasets(monkeypatch):
    calls = []
    module = types.ModuleType("datasets")

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        if name == "facebook/mlqa":
            ctx = f"{split} context with span {split}-ans."
            return [{"id": f"{split}-1", "title": "T", "context": ctx, "question": "Q?",
                     "answers": {"answer_start": [ctx.index(f"{split}-ans")], "text": [f"{split}-ans"]}}]
        return [{"id": f"{config}-1", "url": "u", "title": "T", "summary": "S.", "text": "Body text."}]

    module.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", module)
    return calls


def test_hub_mlqa_pools_test_and_validation(fake_datasets):
    rows, report = load_pool("mlqa", "ar", "hub")
    assert fake_datasets == [("facebook/mlqa", "mlqa.ar.ar", "test"), ("facebook/mlqa", "mlqa.ar.ar", "validation")]
    assert [r["id"] for r in rows] == ["test-1", "validation-1"] and rows[0]["answers"] == ["test-ans"]
    assert report.line() == "loaded 2 of 2 rows from facebook/mlqa mlqa.ar.ar (test+validation)"


def test_hub_xlsum_maps_language_codes(fake_datasets):
    rows, _ = load_pool("xlsum", "zh", "hub")
    assert fake_datasets == [("csebuetnlp/xlsum", "chinese_simplified", "train")]
    assert rows == [{"id": "chinese_simplified-1", "article": "Body text.", "summary": "S.", "title": "T"}]


def test_hub_failure_is_one_line_suggesting_local_or_demo(monkeypatch):
    module = types.ModuleType("datasets")

    def load_dataset(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'facebook/mlqa' on the Hub (LocalEntryNotFoundError)\ntraceback...")

    module.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", module)
    with pytest.raises(DataSourceError) as e:
        load_pool("mlqa", "en", "hub")
    msg = str(e.value)
    assert "\n" not in msg and "ConnectionError" in msg and "local file path" in msg and "'demo'" in msg


def test_hub_unknown_language_is_refused_before_any_download(fake_datasets):
    with pytest.raises(DataSourceError, match=r"MLQA on the hub has no language 'fr'"):
        load_pool("mlqa", "fr", "hub")
    assert fake_datasets == []


# ---------------------------------------------------------------------------------------------
# The bundled demo set.


@pytest.mark.parametrize("lang", ["en", "ar", "zh"])
def test_demo_qa_pool(lang):
    rows, report = load_pool("mlqa", lang, "demo")
    assert len(rows) == POOL_SIZE >= 300 and report.loaded == report.total == POOL_SIZE
    assert len({r["id"] for r in rows}) == POOL_SIZE
    assert len({(r["context"], r["question"]) for r in rows}) == POOL_SIZE
    for r in rows:
        assert r["context"].count(r["answers"][0]) == 1, r  # an exact, unambiguous span
        assert r["answers"][0] not in r["question"]
    lengths = [len(r["context"]) if lang == "zh" else len(r["context"].split()) for r in rows]
    low, high = (55, 140) if lang == "zh" else (25, 85)
    assert low <= min(lengths) and max(lengths) <= high


@pytest.mark.parametrize("lang", ["en", "ar", "zh"])
def test_demo_summary_pool(lang):
    rows = demo_pool("xlsum", lang)
    assert len(rows) == POOL_SIZE and len({r["article"] for r in rows}) == POOL_SIZE
    for r in rows:
        assert r["summary"] and r["title"] and r["summary"] not in r["article"]
    lengths = [len(r["article"]) if lang == "zh" else len(r["article"].split()) for r in rows]
    low, high = (90, 220) if lang == "zh" else (45, 120)
    assert low <= min(lengths) and max(lengths) <= high


def test_demo_is_deterministic_varied_and_script_correct():
    a, b = demo_pool("mlqa", "ar"), demo_pool("mlqa", "ar")
    assert a == b and a is not b
    a[0]["answers"].append("mutated")  # callers get copies
    assert demo_pool("mlqa", "ar")[0]["answers"] != a[0]["answers"]
    en = demo_pool("mlqa", "en")
    starts = {r["question"].split()[0] for r in en}
    assert {"Who", "Where", "When", "How", "Which"} <= starts
    assert all(any("\u0600" <= ch <= "\u06ff" for ch in r["context"]) for r in demo_pool("mlqa", "ar"))
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in r["article"]) for r in demo_pool("xlsum", "zh"))
    with pytest.raises(ValueError, match=r"no language 'fr' \(known: en, ar, zh\)"):
        demo_pool("mlqa", "fr")


# ---------------------------------------------------------------------------------------------
# datasets >= 4 refuses loading scripts: the hub path falls back to the Hub's Parquet conversion.
# The stand-in routes each call to the REAL datasets.load_dataset on local folders, so the errors
# are the installed library's own (a loading-script folder; a Parquet repo without the config).


def _write_parquet_repo(root: Path, configs: dict[str, dict[str, list[dict]]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    lines = ["---", "configs:"]
    for config, splits in configs.items():
        lines += [f"- config_name: {config}", "  data_files:"]
        for split, rows in splits.items():
            (root / config / split).mkdir(parents=True)
            pq.write_table(pa.Table.from_pylist(rows), root / config / split / "0000.parquet")
            lines += [f"  - split: {split}", f"    path: {config}/{split}/*.parquet"]
    (root / "README.md").write_text("\n".join(lines + ["---", ""]))
    return root


@pytest.fixture
def hub_standin(tmp_path, monkeypatch):
    """facebook/mlqa as published: a loading script; csebuetnlp/xlsum: a Parquet repo lacking the
    config asked for. Their Parquet conversions: local Parquet repos with the configs."""
    import datasets as real

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    script = tmp_path / "mlqa"
    script.mkdir()
    (script / "mlqa.py").write_text("# a dataset loading script\n")
    mlqa_rows = {split: [{"id": f"{split}-1", "title": "T", "context": f"ctx {split}-ans.", "question": "Q?",
                          "answers": {"answer_start": [4], "text": [f"{split}-ans"]}}]
                 for split in ("test", "validation")}
    mlqa_parquet = _write_parquet_repo(tmp_path / "mlqa_parquet", {"mlqa.ar.ar": mlqa_rows})
    xlsum_row = {"id": "x-1", "url": "u", "title": "T", "summary": "S.", "text": "Body text."}
    xlsum_published = _write_parquet_repo(tmp_path / "xlsum", {"english": {"train": [xlsum_row]}})
    xlsum_parquet = _write_parquet_repo(tmp_path / "xlsum_parquet", {"arabic": {"train": [xlsum_row]}})
    published = {"facebook/mlqa": script, "csebuetnlp/xlsum": xlsum_published}
    converted = {"facebook/mlqa": mlqa_parquet, "csebuetnlp/xlsum": xlsum_parquet}
    calls = []
    real_load = real.load_dataset

    def load_dataset(name, config, split, revision=None):
        calls.append((name, config, split, revision))
        if revision is None:
            return real_load(str(published[name]), config, split=split)
        assert revision == "refs/convert/parquet"
        if converted.get(name) is None:
            raise ConnectionError(f"Couldn't reach '{name}' on the Hub (LocalEntryNotFoundError)")
        return real_load(str(converted[name]), config, split=split)

    # Patched on the real module (not a stand-in module in sys.modules): datasets imports itself
    # internally while it loads.
    monkeypatch.setattr(real, "load_dataset", load_dataset)
    return calls, converted


def test_hub_script_dataset_loads_from_the_parquet_conversion(hub_standin):
    calls, _ = hub_standin
    rows, report = load_pool("mlqa", "ar", "hub")
    assert calls == [("facebook/mlqa", "mlqa.ar.ar", "test", None),
                     ("facebook/mlqa", "mlqa.ar.ar", "test", "refs/convert/parquet"),
                     ("facebook/mlqa", "mlqa.ar.ar", "validation", None),
                     ("facebook/mlqa", "mlqa.ar.ar", "validation", "refs/convert/parquet")]
    # The same row conversion as the published dataset's rows: answers from the HF dict.
    assert rows == [{"id": "test-1", "context": "ctx test-ans.", "question": "Q?", "answers": ["test-ans"]},
                    {"id": "validation-1", "context": "ctx validation-ans.", "question": "Q?",
                     "answers": ["validation-ans"]}]
    assert report.line() == "loaded 2 of 2 rows from facebook/mlqa mlqa.ar.ar (test+validation)"


def test_hub_missing_config_loads_from_the_parquet_conversion(hub_standin):
    calls, _ = hub_standin
    rows, _ = load_pool("xlsum", "ar", "hub")
    assert [c[3] for c in calls] == [None, "refs/convert/parquet"]
    assert rows == [{"id": "x-1", "article": "Body text.", "summary": "S.", "title": "T"}]


@pytest.mark.parametrize("task, lang, own_file", [
    ("mlqa", "ar", "test-context-ar-question-ar.json"),
    ("xlsum", "ar", "arabic_train.jsonl"),
])
def test_hub_and_parquet_both_failing_name_the_local_files(hub_standin, task, lang, own_file):
    _, converted = hub_standin
    converted.clear()  # the conversion is unreachable too
    with pytest.raises(DataSourceError) as e:
        load_pool(task, lang, "hub")
    msg = str(e.value)
    assert "\n" not in msg
    first = "Dataset scripts are no longer supported, but found mlqa.py" if task == "mlqa" else "BuilderConfig 'arabic' not found"
    assert first in msg and "Parquet conversion: ConnectionError" in msg
    assert own_file in msg and "'demo'" in msg


def test_local_mlqa_file_named_in_the_error_loads(tmp_path):
    """The file the hub error names is one the local loader reads (MLQA's own name and layout)."""
    doc = {"version": "1.0", "data": [{"title": "T", "paragraphs": [{"context": "ctx ans.", "qas": [
        {"id": "q1", "question": "Q?", "answers": [{"answer_start": 4, "text": "ans"}]}]}]}]}
    (tmp_path / "test-context-ar-question-ar.json").write_text(json.dumps(doc))
    rows, _ = load_pool("mlqa", "ar", str(tmp_path))
    assert rows == [{"id": "q1", "context": "ctx ans.", "question": "Q?", "answers": ["ans"]}]
