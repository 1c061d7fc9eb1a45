"""The summarisation harness's bookkeeping (no model): what it reads from a finished run folder and
the BENCHMARKS.md tables it prints."""

import json

from benchmarks.bench_summaries import markdown, run_tables


def metric(v):
    return {"mean": v, "std": None, "n": 1, "values": [v]}


def fake_run(tmp_path):
    rows = [{"family": "zero_shot", "label": "zero-shot", "metrics": {"rouge_l": metric(5.0), "bleu4": metric(0.5), "bertscore": metric(60.0)}},
            {"family": "grasp", "label": "GRASP", "ratio": metric(0.4321),
             "metrics": {"rouge_l": metric(12.5), "bleu4": metric(1.25), "bertscore": metric(70.0)}}]
    results = {"rows": rows, "controller": [{"seed": 42, "p_star": 0.4321, "rounds": 3}],
               "costs": [{"family": "grasp", "minutes": 12.0, "eval_minutes": 2.0}],
               "runtime": {"grid": {"runs": 2, "minutes": 20.0}, "grasp": {"minutes": 10.0}, "speedup": 2.0}}
    (tmp_path / "grid").mkdir()
    (tmp_path / "results.json").write_text(json.dumps(results))
    (tmp_path / "grid" / "summary.json").write_text(json.dumps({"selected_ratio": 0.2, "per_ratio": [
        {"ratio": 0.2, "mean_val_loss": 2.5, "val_losses": [2.5]}, {"ratio": 0.8, "mean_val_loss": 2.75, "val_losses": [2.75]}]}))
    return tmp_path


def test_run_tables_reads_the_grid_and_controller_from_the_run_folder(tmp_path):
    t = run_tables(fake_run(tmp_path))
    assert t["grid"] == {"selected_ratio": 0.2, "per_ratio": [{"ratio": 0.2, "mean_val_loss": 2.5}, {"ratio": 0.8, "mean_val_loss": 2.75}]}
    assert t["controller"][0]["p_star"] == 0.4321 and [r["family"] for r in t["rows"]] == ["zero_shot", "grasp"]


def test_markdown_has_the_systems_the_grid_curve_and_the_stage_times(tmp_path):
    entry = {**run_tables(fake_run(tmp_path)), "stages": {"prepare": {"wall_s": 3.2, "cpu_s": 2.9}},
             "longer_budget": {"grasp": {"256": {"rouge_l": 12.5, "bleu4": 1.25, "bertscore_f1": 70.0, "wall_s": 40.0},
                                         "512": {"rouge_l": 13.0, "bleu4": 1.5, "bertscore": 71.0, "wall_s": 70.0}}}}
    md = markdown(entry)
    assert "| zero-shot | – | 5.00 | 0.50 | 60.00 | 0.0 | 0.0 |" in md
    assert "| GRASP | 43.2 | 12.50 | 1.25 | 70.00 | 12.0 | 2.0 |" in md
    assert "| validation loss | **2.5000** | 2.7500 |" in md
    assert "GRASP's p\\* 0.432 (seed 42, 3 rounds)" in md and "speed-up 2.00×" in md
    assert "| prepare | 3 | 3 |" in md
    assert "| grasp | 512 | 13.00 | 1.50 | 71.00 | 70 |" in md  # metrics.json's own key
    assert "| grasp | 256 | 12.50 | 1.25 | 70.00 | 40 |" in md    # headline_metrics' key
