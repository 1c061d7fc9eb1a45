"""The report of a run folder: report.md, results.json and PNG plots (`grasp-lora report RUN_DIR`).

Everything is rebuilt from the stage outputs on disk, so the report can be regenerated at any
time, and partially finished runs give a partial report.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any


from grasp_lora.io import (atomic_write_text, environment_info, manifest_complete, read_json, read_jsonl, read_yaml,
                           write_json)

FAMILIES = [
    ("zero_shot", "zero-shot"),
    ("target_lora", "LoRA (target only)"),
    ("ties", "TIES merge"),
    ("lorahub", "LoRAHub"),
    ("adaptive_merge", "adaptive merge"),
    ("grid_best", "adaptive merge + pruning (grid best)"),
    ("optuna", "adaptive merge + pruning (Optuna best)"),
    ("grasp", "GRASP"),
]
TASK_METRICS = {
    "mlqa": [("bertscore", "BERTScore-F1"), ("exact_match", "EM"), ("f1", "F1")],
    "xlsum": [("bertscore", "BERTScore-F1"), ("bleu4", "BLEU-4"), ("rouge_l", "ROUGE-L")],
}


def _mean_std(values: list[float]) -> dict[str, Any]:
    values = [float(v) for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values), "values": values}


def _fmt(stat: dict[str, Any] | None, digits: int = 2) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    text = f"{stat['mean']:.{digits}f}"
    if stat.get("std") is not None:
        text += f" ± {stat['std']:.{digits}f}"
    return text


def _list(values: Any) -> str:
    """[42, 1337] -> "42, 1337": the report shows values, never Python reprs."""
    if values is None:
        return "–"
    if isinstance(values, (list, tuple)):
        return ", ".join(str(v) for v in values) or "–"
    return str(values)


def bertscore_sentence(s: dict[str, Any]) -> str:
    """A metrics file's BERTScore settings as one sentence a reader can check."""
    layer = s.get("layer")
    of = f" of {s['num_layers']}" if s.get("num_layers") is not None else ""
    text = f"BERTScore-F1 uses the encoder `{s.get('model', '?')}` (hidden layer {layer}{of}), "
    if s.get("rescale"):
        base, src = s.get("baseline"), s.get("baseline_source")
        # the source reads "mean F of N mismatched reference pairs (seeded cyclic shuffle, seed 0)"
        src = (src or "").replace(" (", ", ").replace(")", "")
        text += "rescaled against a baseline F of " + (f"{base:.4f}" if base is not None else "?") + (f" ({src})" if src else "") + ", "
    else:
        text += "without baseline rescaling, "
    text += "with idf weighting" if s.get("idf") else "without idf weighting"
    return text + "; an empty prediction scores 0."


def _seconds(unit_dir: Path) -> float | None:
    """Wall-clock of one unit as it recorded it (result.json or manifest; field names vary by stage)."""
    for name in ("result.json", "manifest.json"):
        p = unit_dir / name
        if p.is_file():
            m = read_json(p)
            for key in ("wall_clock_s", "wall_clock_seconds"):
                if isinstance(m.get(key), (int, float)):
                    return float(m[key])
            total = (m.get("timings") or {}).get("total")
            if isinstance(total, (int, float)):
                return float(total)
    return None


def _system_costs(root: Path, cfg: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per system family: the training (or search) runs that produced it and their minutes, and
    the minutes of generating + scoring its test predictions. Stage-1 adapters, which every
    merged system reuses, are counted once, under "LoRA (target only)" and in the note."""
    def total(dirs: list[Path]) -> float | None:
        secs = [_seconds(d) for d in dirs]
        return None if not dirs or any(x is None for x in secs) else sum(secs) / 60  # type: ignore[arg-type]

    data = cfg.get("data", {})
    producers: dict[str, tuple[str, list[Path]]] = {
        "zero_shot": ("none", []),
        "target_lora": ("stage-1 adapter", [root / "adapters" / str(data.get("target_lang"))]),
        "ties": ("merge, no training", [root / "baselines" / "ties"]),
        "lorahub": ("gradient-free search", [root / "baselines" / "lorahub"]),
        "adaptive_merge": ("training run", [root / "baselines" / "adaptive_merge"]),
        "grid_best": ("grid point runs", sorted(p.parent for p in root.glob("seed_*/grid/point_*/result.json"))),
        "grasp": ("controller + final runs", [p.parent for p in [root / "grasp" / "result.json",
                                                                 *sorted(root.glob("seed_*/grasp/result.json")),
                                                                 *sorted(root.glob("seed_*/final/result.json"))]
                                             if p.exists()]),
    }
    out = []
    for row in rows:
        what, dirs = producers.get(row["family"], ("", []))
        runs = len(dirs) if row["family"] not in ("zero_shot", "ties", "lorahub") else 0
        out.append({
            "family": row["family"], "label": row["label"], "what": what, "runs": runs,
            "minutes": 0.0 if row["family"] == "zero_shot" else total(dirs),
            "eval_minutes": total([root / "systems" / s for s in row["systems"]]),
        })
    return out


def collect_results(run_dir: str | Path) -> dict[str, Any]:
    root = Path(run_dir)
    cfg = (read_yaml(root / "config.yaml") or {}) if (root / "config.yaml").exists() else {}
    task = cfg.get("data", {}).get("task", "mlqa")
    metric_keys = [k for k, _ in TASK_METRICS[task]]

    per_family: dict[str, list[dict[str, Any]]] = {}
    for sdir in sorted((root / "systems").glob("*")):
        if not manifest_complete(sdir):
            continue
        m = read_json(sdir / "manifest.json")
        per_family.setdefault(m["family"], []).append(m)

    rows = []
    for family, label in FAMILIES:
        runs = per_family.get(family, [])
        if not runs:
            continue
        metrics = {k: _mean_std([r["metrics"].get(k) for r in runs]) for k in metric_keys}
        rows.append({
            "family": family,
            "label": label,
            "systems": [r["system"] for r in runs],
            "ratio": _mean_std([r["ratio"] for r in runs if r.get("ratio") is not None]),
            "metrics": metrics,
            "seeds": [r.get("seed") for r in runs if r.get("seed") is not None],
        })

    runtime = _runtime(root)
    controllers = []
    for gdir in [root / "grasp", *sorted(root.glob("seed_*/grasp"))]:  # one per experiment, or per seed
        if (gdir / "result.json").exists():
            res = read_json(gdir / "result.json")
            controllers.append({"seed": res.get("seed"), "p_star": res["p_star"], "rule": res["p_star_rule"],
                                "training": _controller_training(res), "advantage": res.get("advantage"),
                                "reward": _controller_reward(res), "rounds": res["rounds"],
                                "controller_round_share": res.get("controller_round_share"),
                                "wall_clock_s": res.get("wall_clock_s")})
    bertscore_settings = None
    for runs in per_family.values():
        for r in runs:
            s = r["metrics"].get("settings", {}).get("bertscore") if isinstance(r["metrics"].get("settings"), dict) else None
            if s:
                bertscore_settings = s
                break
    from grasp_lora.fingerprint import results_hash

    return {
        "name": cfg.get("name"),
        "config_hash": results_hash(cfg) if cfg else None,
        "costs": _system_costs(root, cfg, rows),
        "stage1_minutes": sum(_seconds(d) or 0.0 for d in sorted((root / "adapters").glob("*"))) / 60,
        "task": task,
        "source_lang": cfg.get("data", {}).get("source_lang"),
        "target_lang": cfg.get("data", {}).get("target_lang"),
        "model": cfg.get("model", {}).get("name"),
        "seeds": cfg.get("pipeline", {}).get("seeds"),
        "max_article_tokens": cfg.get("data", {}).get("max_article_tokens"),
        "metrics": metric_keys,
        "rows": rows,
        "controller": controllers,
        "runtime": runtime,
        "bertscore": bertscore_settings,
    }


def _controller_training(res: dict[str, Any]) -> str | None:
    """How the controller run trained (METHOD.md, Controller variants), for the report's reader."""
    under_mask = res.get("train_under_mask")
    if under_mask is None:  # a result written before the key existed
        return None
    return "under the committed mask (the paper's)" if under_mask else "dense, masks only scored"


def _controller_reward(res: dict[str, Any]) -> str | None:
    reward = res.get("reward")
    if reward == "lookahead" and res.get("lookahead_steps"):
        return f"lookahead, {res['lookahead_steps']} steps"
    return reward


def _runtime(root: Path) -> dict[str, Any]:
    """The cost of an experiment (METHOD.md, "Final run and grid search"): grid = every ratio for
    every seed; GRASP = its controller run(s) + one final run per seed. Minutes of wall-clock, as
    recorded by each run."""
    def minutes(paths: list[Path]) -> float:
        return sum(read_json(p)["wall_clock_s"] for p in paths) / 60

    grid_points = sorted(root.glob("seed_*/grid/point_*/result.json"))
    controllers = [p for p in [root / "grasp" / "result.json", *sorted(root.glob("seed_*/grasp/result.json"))] if p.exists()]
    finals = sorted(root.glob("seed_*/final/result.json"))
    out: dict[str, Any] = {}
    if grid_points:
        out["grid"] = {"runs": len(grid_points), "minutes": minutes(grid_points),
                       "seeds": len(list(root.glob("seed_*/grid")))}
    if controllers and finals:
        out["grasp"] = {"runs": len(controllers) + len(finals), "controller_runs": len(controllers),
                        "final_runs": len(finals), "minutes": minutes(controllers + finals)}
    if "grid" in out and "grasp" in out and out["grasp"]["minutes"] > 0:
        out["speedup"] = out["grid"]["minutes"] / out["grasp"]["minutes"]
    return out


def _results_table(results: dict[str, Any]) -> str:
    names = dict(TASK_METRICS[results["task"]])
    head = ["system", "prune %"] + [names[k] for k in results["metrics"]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for row in results["rows"]:
        ratio = row["ratio"]
        prune = "–" if ratio["mean"] is None else _fmt({"mean": 100 * ratio["mean"],
                                                       "std": None if ratio["std"] is None else 100 * ratio["std"]})
        cells = [row["label"], prune] + [_fmt(row["metrics"][k]) for k in results["metrics"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _runtime_table(results: dict[str, Any]) -> str:
    rt = results["runtime"]
    lines = ["| method | runs | minutes |", "|---|---:|---:|"]
    if "grid" in rt:
        lines.append(f"| grid search (every ratio, {rt['grid']['seeds']} seed(s)) | {rt['grid']['runs']} | {rt['grid']['minutes']:.2f} |")
    if "grasp" in rt:
        g = rt["grasp"]
        lines.append(f"| GRASP ({g['controller_runs']} controller run(s) + {g['final_runs']} final run(s)) | {g['runs']} "
                     f"| {g['minutes']:.2f} |")
    if "speedup" in rt:
        lines.append(f"| speed-up of GRASP | | {rt['speedup']:.2f}× |")
    return "\n".join(lines)


def _cost_table(results: dict[str, Any]) -> str:
    def m(x: float | None) -> str:
        return "–" if x is None else f"{x:.2f}"

    lines = ["| system | produced by | training runs | minutes | test generation + scoring, minutes |",
             "|---|---|---:|---:|---:|"]
    for c in results["costs"]:
        lines.append(f"| {c['label']} | {c['what']} | {c['runs']} | {m(c['minutes'])} | {m(c['eval_minutes'])} |")
    return "\n".join(lines)


def build_report(run_dir: str | Path) -> Path:
    from grasp_lora.plots import plot_grid, plot_systems, plot_trajectory

    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such run folder")
    results = collect_results(root)
    plots = []
    grasp_dirs = [d for d in [root / "grasp", *sorted(root.glob("seed_*/grasp"))] if (d / "result.json").exists()]
    p_star = read_json(grasp_dirs[0] / "result.json")["p_star"] if grasp_dirs else None
    if grasp_dirs and (grasp_dirs[0] / "history.jsonl").exists():
        label = "the experiment's controller run" if grasp_dirs[0] == root / "grasp" else grasp_dirs[0].parent.name
        plot_trajectory(read_jsonl(grasp_dirs[0] / "history.jsonl"), root / "trajectory.png", p_star=p_star,
                        title=f"GRASP controller trajectory ({label})")
        plots.append(("Controller trajectory", "trajectory.png"))
    if (root / "grid" / "summary.json").exists():
        g = read_json(root / "grid" / "summary.json")
        points = [{"ratio": p["ratio"], "val_loss": p["mean_val_loss"]} for p in g["per_ratio"]]
        plot_grid(points, root / "grid.png", best_ratio=g["selected_ratio"], p_star=p_star)
        plots.append(("Grid search (validation loss per ratio, mean over seeds; p* marked)", "grid.png"))
    if results["rows"]:
        names = dict(TASK_METRICS[results["task"]])
        plot_systems(results["rows"], results["metrics"], root / "systems.png",
                     title=f"{results['task']} {results['source_lang']}→{results['target_lang']} on the test split")
        plots.append(("Systems on the test split", "systems.png"))
        del names

    env = environment_info()
    lines = [
        f"# GRASP LoRA report: {results['name']}",
        "",
        f"Task **{results['task']}**, {results['source_lang']} → {results['target_lang']}, base model "
        f"`{results['model']}`, seeds {_list(results['seeds'])}. Scores are 0-100 on the target test split; "
        "systems run over several seeds show mean ± std."
        + (f" Articles (the task's long field) cut to their first {results['max_article_tokens']} tokens in "
           "training and generation (`data.max_article_tokens`)." if results.get("max_article_tokens") else ""),
        "",
        f"Configuration hash `{results['config_hash'] or '–'}`: of every key in `config.yaml` that can change a "
        "result (runs whose configurations differ only in progress bars, paths or batch sizes of scoring and "
        "generation share it).",
        "",
        "## Results",
        "",
        _results_table(results),
        "",
    ]
    if results["bertscore"]:
        lines += [bertscore_sentence(results["bertscore"]), ""]
    if results["costs"]:
        lines += ["## Cost per system", "", _cost_table(results), "",
                  f"Every merged system (TIES, LoRAHub, adaptive merge, grid, GRASP) also reuses the two stage-1 "
                  f"adapters: {results['stage1_minutes']:.2f} minutes, counted once.", ""]
    if results["controller"]:
        lines += ["## Controller", "",
                  "| seed | p* | rule | controller run | reward | advantages | rounds | round share of run |",
                  "|---|---:|---|---|---|---|---:|---:|"]
        for c in results["controller"]:
            share = c.get("controller_round_share")
            lines.append(f"| {_list(c['seed'])} | {c['p_star']:.4f} | {c['rule']} | {c.get('training') or '–'} | "
                         f"{c.get('reward') or '–'} | {c.get('advantage') or '–'} | {c['rounds']} | {'–' if share is None else f'{100 * share:.1f}%'} |")
        lines.append("")
    lines += ["## Runtime: grid search vs GRASP", "", _runtime_table(results), "",
              "GRASP = one controller run (p*) + a final run at p* per seed; grid = one fixed-ratio run per ratio "
              "and seed, one ratio selected by mean validation loss over the seeds (the paper's protocol).", ""]
    for title, name in plots:
        lines += [f"### {title}", "", f"![{title}]({name})", ""]
    lines += ["## Environment", ""] + [f"- {k}: {_list(v)}" for k, v in env.items()] + [""]
    atomic_write_text(root / "report.md", "\n".join(lines))
    write_json(root / "results.json", {**results, "environment": env})
    return root / "report.md"


def headline(run_dir: str | Path) -> str:
    results = collect_results(run_dir)
    return _results_table(results) + "\n\n" + _runtime_table(results)
