"""Score a predictions file against the prepared test records -> the dict written as metrics.json.

MLQA: exact_match, f1 (MLQA v1 normalisation), bertscore (max over the gold answers).
XL-Sum: rouge_l (XL-Sum multilingual tokenisation), bleu4 (sacrebleu), bertscore.
All scores are 0-100 and averaged over ALL reference records:

- a reference id without a prediction is scored as an empty prediction: 0 for EM, F1 and ROUGE-L,
  an empty hypothesis in corpus BLEU (no matches, and it shortens the corpus: brevity penalty),
  a BERTScore of 0 (also when rescaling: see evaluation.bertscore);
  such ids are counted and listed under "counts";
- prediction ids that are not references are ignored, counted, listed and warned about;
- an empty prediction string scores like a missing one.

The returned dict holds the metric values at the top level (keys in TASK_METRICS[task]), plus
"settings" (how each metric was computed: tokenisers, BLEU tokenizer and signature, BERTScore
encoder / layer / idf / rescaling / baseline, Chinese segmenter) and "counts".
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from grasp_lora.config import EvalConfig
from grasp_lora.evaluation import bertscore as bs
from grasp_lora.evaluation.qa_metrics import check_lang as check_qa_lang
from grasp_lora.evaluation.qa_metrics import qa_scores
from grasp_lora.evaluation.summary_metrics import bleu4, rouge_l, summary_settings
from grasp_lora.io import read_jsonl, write_json

log = logging.getLogger(__name__)

# The metric keys each task reports, in the paper's column order.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "mlqa": ("bertscore", "exact_match", "f1"),
    "xlsum": ("bertscore", "bleu4", "rouge_l"),
}
# The field of a prepared record that holds the reference text(s).
REFERENCE_FIELD = {"mlqa": "answers", "xlsum": "summary"}

Encoder = tuple[Any, Any, str]  # (model, tokenizer, name)


def _check_task(task: str) -> str:
    if task not in TASK_METRICS:
        raise ValueError(f"unknown evaluation task {task!r}: expected one of {', '.join(TASK_METRICS)}")
    return task


def _reference_texts(task: str, references: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[Any]]:
    """Record ids and, per record, the gold answers (list, MLQA) or the summary (str, XL-Sum)."""
    key = REFERENCE_FIELD[task]
    ids: list[str] = []
    golds: list[Any] = []
    for n, rec in enumerate(references):
        if "id" not in rec:
            raise ValueError(f"reference record #{n} has no 'id'")
        rid = str(rec["id"])
        if key not in rec:
            raise ValueError(
                f"reference record {rid!r} has no {key!r} field: are these {task} records? "
                f"(fields: {', '.join(sorted(rec))})"
            )
        value = rec[key]
        if task == "mlqa":
            if isinstance(value, str) or not all(isinstance(a, str) for a in value):
                raise ValueError(f"reference record {rid!r}: 'answers' must be a list of strings")
            golds.append(list(value))
        else:
            if not isinstance(value, str):
                raise ValueError(f"reference record {rid!r}: 'summary' must be a string")
            golds.append(value)
        ids.append(rid)
    dupes = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dupes:
        raise ValueError(f"duplicate reference ids: {', '.join(dupes[:5])}")
    return ids, golds


def _counts(ref_ids: list[str], predictions: Mapping[str, str]) -> dict[str, Any]:
    ref_set = set(ref_ids)
    missing = [i for i in ref_ids if i not in predictions]
    extra = sorted(i for i in predictions if i not in ref_set)
    empty = sum(1 for i in ref_ids if i in predictions and not predictions[i].strip())
    return {
        "n_references": len(ref_ids),
        "n_predictions": len(predictions),
        "n_scored": len(ref_ids) - len(missing),
        "n_missing": len(missing),
        "missing_ids": missing,
        "n_extra": len(extra),
        "extra_ids": extra,
        "n_empty_predictions": empty,
    }


def _bertscore(
    candidates: list[str], golds: list[Any], eval_cfg: EvalConfig, encoder: Optional[Encoder]
) -> tuple[float, dict[str, Any]]:
    if encoder is None:
        if eval_cfg.bertscore_model == "embedded":
            raise ValueError(
                "BERTScore with eval.bertscore_model='embedded' needs the model: pass "
                "encoder=(model, tokenizer, name), set eval.bertscore_model to an encoder, or eval.bertscore=false"
            )
        encoder = bs.load_encoder(eval_cfg.bertscore_model)
    model, tokenizer, name = encoder
    return bs.bertscore_f1(
        candidates,
        golds,
        model,
        tokenizer,
        layer=eval_cfg.bertscore_layer,
        idf=eval_cfg.bertscore_idf,
        rescale=eval_cfg.bertscore_rescale,
        name=name,
    )


def evaluate_predictions(
    task: str,
    lang: str,
    predictions: Mapping[str, str],
    references: Sequence[Mapping[str, Any]],
    eval_cfg: EvalConfig,
    encoder: Optional[Encoder] = None,
) -> dict[str, Any]:
    """Metrics (0-100) + "settings" + "counts" for one predictions set (see the module docstring)."""
    task = _check_task(task)
    if task == "mlqa":
        check_qa_lang(lang)  # fail before any expensive work
    ref_ids, golds = _reference_texts(task, references)
    if not ref_ids:
        raise ValueError("no reference records to evaluate against")
    preds = {str(k): ("" if v is None else str(v)) for k, v in predictions.items()}
    counts = _counts(ref_ids, preds)
    if counts["n_extra"]:
        log.warning(
            "%d prediction ids are not in the references and are ignored (e.g. %s)",
            counts["n_extra"],
            ", ".join(counts["extra_ids"][:3]),
        )
    if counts["n_missing"]:
        log.warning(
            "%d of %d references have no prediction and score 0 (e.g. %s)",
            counts["n_missing"],
            counts["n_references"],
            ", ".join(counts["missing_ids"][:3]),
        )
    candidates = [preds.get(i, "") for i in ref_ids]  # reference order; missing -> empty

    out: dict[str, Any] = {"task": task, "lang": lang}
    settings: dict[str, Any] = {}
    if task == "mlqa":
        scored = {i: preds[i] for i in ref_ids if i in preds}
        out.update(qa_scores(scored, dict(zip(ref_ids, golds)), lang))
        settings["qa_normalisation"] = f"MLQA v1 (lang={lang}): lowercase, punctuation, articles, tokens"
        settings["qa_tokenizer"] = "CJK chars U+4E00-U+9FA5 + whitespace" if lang.lower() == "zh" else "whitespace"
    else:
        out["rouge_l"] = rouge_l(candidates, golds, lang, eval_cfg.chinese_segmenter)
        out["bleu4"] = bleu4(candidates, golds, lang)
        settings.update(summary_settings(lang, eval_cfg.chinese_segmenter))
    if eval_cfg.bertscore:
        out["bertscore"], settings["bertscore"] = _bertscore(candidates, golds, eval_cfg, encoder)
    else:
        settings["bertscore"] = {"enabled": False}
    settings["missing_predictions"] = "scored as empty predictions (0)"
    out["settings"] = settings
    out["counts"] = counts
    return out


def write_metrics(path: str | Path, metrics: Mapping[str, Any]) -> None:
    """Write metrics.json atomically (temp file + rename)."""
    write_json(path, dict(metrics))


def read_predictions(path: str | Path) -> dict[str, str]:
    """{id: prediction} from the generate stage's JSONL ({"id": ..., "prediction": ...} per line).

    A torn last line (a crash mid-append) is dropped; if an id occurs twice (a resumed run
    re-appended it) the later line wins.
    """
    out: dict[str, str] = {}
    for n, row in enumerate(read_jsonl(path), start=1):
        if "id" not in row or "prediction" not in row:
            raise ValueError(f"{path}: record {n} lacks 'id' or 'prediction'")
        if not isinstance(row["prediction"], str):
            raise ValueError(f"{path}: record {n} ({row['id']!r}): 'prediction' must be a string")
        out[str(row["id"])] = row["prediction"]
    return out
