"""The summarisation half end to end: `grasp-lora pipeline xlsum_ar` on local files in XL-Sum's
own JSONL layout with long articles, as a user with real XL-Sum files runs it (tiny model; the
rows are written here, never read from ../shared)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from helpers import TINY_OVERRIDES, run_cli

SENTENCES = {
    "en": ["The council approved the new budget on Monday after a long debate.",
           "Officials said the plan would fund schools, roads and hospitals across the region.",
           "Opposition members argued that the spending was too high for the current year."],
    "ar": ["وافق المجلس على الميزانية الجديدة يوم الاثنين بعد نقاش طويل.",
           "وقال المسؤولون إن الخطة ستمول المدارس والطرق والمستشفيات في المنطقة.",
           "ورأى أعضاء المعارضة أن الإنفاق مرتفع جدا بالنسبة للعام الحالي."],
}


def write_xlsum(path: Path, lang: str, n: int, seed: int) -> Path:
    """`n` rows with XL-Sum's fields (id, url, title, summary, text); articles of 2,000-4,000 characters."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            text = " ".join(rng.choice(SENTENCES[lang]) for _ in range(rng.randint(30, 60)))
            row = {"id": f"{lang}-{i}", "url": "", "title": "", "summary": SENTENCES[lang][i % 3], "text": text}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


OVERRIDES = [o for o in TINY_OVERRIDES if not o.startswith(("data.", "controller.micro_dev_size"))] + [
    "data.source_sizes={train: 6, val: 3, micro_dev: 0, test: 0}",
    "data.target_sizes={train: 6, val: 3, micro_dev: 3, test: 3}",
    "controller.micro_dev_size=3",
    # The tiny tokenizer maps every Arabic character to one unknown id, so every pair of texts scores
    # the same and BERTScore's rescaling baseline is 1 (refused, rightly); the raw F is still scored.
    "eval.bertscore_rescale=false",
]


def test_xlsum_pipeline_on_long_real_format_files(tmp_path):
    en = write_xlsum(tmp_path / "english_train.jsonl", "en", 12, 1)
    ar = write_xlsum(tmp_path / "arabic_train.jsonl", "ar", 18, 2)
    assert min(len(json.loads(line)["text"]) for line in ar.read_text(encoding="utf-8").splitlines()) >= 1500
    run = tmp_path / "run"
    proc = run_cli(["pipeline", "xlsum_ar", "model.name=tiny-llama", f"data.source_data={en}",
                    f"data.target_data={ar}", *OVERRIDES, "data.max_article_tokens=256", "--run-dir", str(run),
                    "--quiet"], tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "longer than the specified maximum sequence length" not in proc.stderr
    results = json.loads((run / "results.json").read_text())
    assert [row["family"] for row in results["rows"]] == [
        "zero_shot", "target_lora", "ties", "lorahub", "adaptive_merge", "grid_best", "grasp"]
    for row in results["rows"]:
        assert set(row["metrics"]) == {"rouge_l", "bleu4", "bertscore"}
    assert results["max_article_tokens"] == 256
    assert "Articles (the task's long field) cut to their first 256 tokens" in (run / "report.md").read_text()
    predictions = (run / "systems/grasp_seed42/predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(predictions) == 3
