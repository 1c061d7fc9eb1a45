"""evaluate_predictions / read_predictions / write_metrics on hand-worked inputs."""

import json
import logging

import pytest

from grasp_lora.config import EvalConfig
from grasp_lora.evaluation.evaluate import (
    TASK_METRICS,
    evaluate_predictions,
    read_predictions,
    write_metrics,
)
from grasp_lora.evaluation.summary_metrics import bleu4
from grasp_lora.models.tiny import tiny_model

NO_BS = EvalConfig(bertscore=False)


def qa(id_, *answers):
    return {"id": id_, "context": "ctx", "question": "q?", "answers": list(answers)}


def summ(id_, summary):
    return {"id": id_, "article": "art", "summary": summary, "title": "t"}


@pytest.fixture(scope="module")
def encoder():
    model, tok = tiny_model("llama", seed=0)
    return model, tok, "tiny-llama"


def test_mlqa_missing_and_extra_ids(caplog):
    refs = [qa("q1", "Paris"), qa("q2", "the red car", "car"), qa("q3", "London")]
    preds = {"q1": "paris.", "q2": "red car park", "zz": "x"}
    with caplog.at_level(logging.WARNING):
        m = evaluate_predictions("mlqa", "en", preds, refs, NO_BS)
    # q1: EM 1, F1 1; q2: F1 0.8; q3 missing: 0 -> averaged over 3
    assert m["exact_match"] == pytest.approx(100 / 3)
    assert m["f1"] == pytest.approx(60.0)
    assert "bertscore" not in m and m["settings"]["bertscore"] == {"enabled": False}
    c = m["counts"]
    assert (c["n_references"], c["n_predictions"], c["n_scored"]) == (3, 3, 2)
    assert c["missing_ids"] == ["q3"] and c["extra_ids"] == ["zz"]
    assert "not in the references" in caplog.text and "zz" in caplog.text
    assert m["task"] == "mlqa" and m["lang"] == "en"


def test_mlqa_arabic_empty_prediction():
    refs = [qa("1", "القاهرة"), qa("2", "مصر")]
    m = evaluate_predictions("mlqa", "ar", {"1": "في القاهرة", "2": ""}, refs, NO_BS)
    assert m["f1"] == pytest.approx(100 * (2 / 3 + 0) / 2)
    assert m["exact_match"] == 0.0
    assert m["counts"]["n_empty_predictions"] == 1 and m["counts"]["n_missing"] == 0


def test_xlsum_chinese_missing_is_an_empty_hypothesis():
    refs = [summ("a", "我爱北京"), summ("b", "今天天气很好")]
    m = evaluate_predictions("xlsum", "zh", {"a": "北京我爱"}, refs, NO_BS)
    assert m["rouge_l"] == pytest.approx((50.0 + 0.0) / 2)  # LCS 2 of 4 / 4 chars; missing -> 0
    # the missing summary stays in the corpus as an empty hypothesis (brevity penalty grows)
    assert m["bleu4"] == pytest.approx(bleu4(["北京我爱", ""], ["我爱北京", "今天天气很好"], "zh"))
    assert m["bleu4"] < bleu4(["北京我爱"], ["我爱北京"], "zh")
    s = m["settings"]
    assert s["bleu_tokenizer"] == "zh" and s["chinese_segmenter"] == "char" and "tok:zh" in s["bleu_signature"]
    assert set(TASK_METRICS["xlsum"]) - {"bertscore"} <= set(m)


def test_bertscore_with_embedded_encoder(encoder):
    refs = [qa("q1", "the answer"), qa("q2", "another one")]
    cfg = EvalConfig(bertscore=True, bertscore_rescale=False)
    m = evaluate_predictions("mlqa", "en", {"q1": "the answer"}, refs, cfg, encoder=encoder)
    # q1 identical -> 1, q2 missing -> 0: mean 50
    assert m["bertscore"] == pytest.approx(50.0, abs=1e-3)
    bs = m["settings"]["bertscore"]
    assert bs["encoder"] == "tiny-llama@layer1" and bs["idf"] is False and bs["rescale"] is False
    assert set(TASK_METRICS["mlqa"]) <= set(m)


def test_embedded_encoder_from_the_pipeline_is_named_once(encoder):
    from grasp_lora.config import Config
    from grasp_lora.evaluation.run import load_bertscore_encoder

    cfg = Config()
    cfg.model.name = "tiny-llama"
    model, tok, _ = encoder
    enc = load_bertscore_encoder(cfg, model, tok)
    m = evaluate_predictions("mlqa", "en", {"q1": "x"}, [qa("q1", "x")], EvalConfig(bertscore_rescale=False), encoder=enc)
    assert m["settings"]["bertscore"]["encoder"] == "tiny-llama@layer1"  # not tiny-llama@layer1@layer1


def test_bertscore_embedded_needs_an_encoder():
    with pytest.raises(ValueError, match="needs the model"):
        evaluate_predictions("mlqa", "en", {"q1": "x"}, [qa("q1", "x")], EvalConfig(bertscore=True))


def test_task_errors():
    with pytest.raises(ValueError, match="unknown evaluation task 'squad'"):
        evaluate_predictions("squad", "en", {}, [qa("q1", "x")], NO_BS)
    # MLQA task on XL-Sum records: the missing field is named
    with pytest.raises(ValueError, match="no 'answers' field"):
        evaluate_predictions("mlqa", "en", {}, [summ("a", "text")], NO_BS)
    with pytest.raises(ValueError, match="no 'summary' field"):
        evaluate_predictions("xlsum", "en", {}, [qa("q1", "x")], NO_BS)
    with pytest.raises(ValueError, match="duplicate reference ids: q1"):
        evaluate_predictions("mlqa", "en", {}, [qa("q1", "x"), qa("q1", "y")], NO_BS)
    with pytest.raises(ValueError, match="no reference records"):
        evaluate_predictions("mlqa", "en", {}, [], NO_BS)
    with pytest.raises(ValueError, match="not a language code"):
        evaluate_predictions("mlqa", "", {}, [qa("q1", "x")], NO_BS)


def test_read_predictions_tolerates_a_torn_last_line(tmp_path):
    p = tmp_path / "predictions.jsonl"
    p.write_text(
        json.dumps({"id": "q1", "prediction": "a"}) + "\n"
        + json.dumps({"id": 2, "prediction": "مرحبا"}) + "\n"
        + json.dumps({"id": "q1", "prediction": "b"}) + "\n"
        + '{"id": "q3", "predic',
        encoding="utf-8",
    )
    assert read_predictions(p) == {"q1": "b", "2": "مرحبا"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "q1", "prediction": None}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="must be a string"):
        read_predictions(bad)


def test_write_metrics_round_trip(tmp_path):
    m = evaluate_predictions("mlqa", "zh", {"q1": "北京"}, [qa("q1", "北京。")], NO_BS)
    path = tmp_path / "eval" / "metrics.json"
    write_metrics(path, m)
    back = json.loads(path.read_text(encoding="utf-8"))
    assert back["exact_match"] == 100.0 and back["settings"]["qa_tokenizer"].startswith("CJK")
    assert [f.name for f in path.parent.iterdir()] == ["metrics.json"]  # no temp file left
