"""The systems the report compares (a base model plus an optional adapter each) and the evaluate
stage: every system's test-split predictions and metrics in systems/<name>/."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from grasp_lora import distributed as dist
from grasp_lora.io import read_json, write_manifest
from grasp_lora.stages import StageContext, StageError, p_star


def systems(ctx: StageContext) -> dict[str, dict[str, Any]]:
    """name -> {adapter: path or None, ratio, seed, family}; only systems whose inputs exist."""
    cfg, layout = ctx.cfg, ctx.layout
    found: dict[str, dict[str, Any]] = {}
    wanted = set(cfg.pipeline.baselines)
    if "zero_shot" in wanted:
        found["zero_shot"] = {"adapter": None, "family": "zero_shot"}
    if "target_lora" in wanted:
        found["target_lora"] = {"adapter": layout.adapter_dir(cfg.data.target_lang), "family": "target_lora"}
    for name in ("ties", "lorahub", "adaptive_merge"):
        if name in wanted:
            found[name] = {"adapter": layout.baseline_dir(name) / "adapter", "family": name,
                           "manifest": layout.baseline_dir(name)}
    # The grid's one ratio, selected across seeds, trained once per seed.
    selected = None
    if "grid_best" in wanted and cfg.grid.enabled and layout.grid_summary_path.exists():
        selected = read_json(layout.grid_summary_path)["selected_ratio"]
    for seed in cfg.pipeline.seeds:
        if selected is not None:
            found[f"grid_best_seed{seed}"] = {
                "adapter": layout.grid_point_dir(seed, selected) / "adapter",
                "family": "grid_best", "seed": seed, "ratio": selected,
            }
        final = layout.final_dir(seed)
        found[f"grasp_seed{seed}"] = {"adapter": final / "adapter", "family": "grasp", "seed": seed,
                                      "ratio": p_star(layout, seed) if (layout.grasp_dir(seed) / "result.json").exists() else None,
                                      "manifest": final}
        optuna_result = layout.optuna_dir(seed) / "result.json"
        if optuna_result.exists():  # only after `grasp-lora search --method optuna`
            res = read_json(optuna_result)
            found[f"optuna_best_seed{seed}"] = {"adapter": Path(res["best_adapter"]), "family": "optuna",
                                                "seed": seed, "ratio": res["best_ratio"]}
    return found


def evaluate(ctx: StageContext, compared: dict[str, dict[str, Any]], only: list[str] | None = None) -> None:
    """Generate and score each system of `compared` (just those named in `only`, if given) on the test split."""
    from grasp_lora.evaluation.run import evaluate_system, with_adapter

    lang = ctx.cfg.data.target_lang
    test_rows = ctx.rows(lang, "test")
    if not test_rows:
        raise StageError(f"{ctx.layout.data_dir / lang / 'test.jsonl'}: the test split is empty (set data.target_sizes.test)")
    encoder: list[Any] = []  # loaded once, by rank 0 (only it scores)
    for name, spec in compared.items():
        if only and name not in only:
            continue
        out = ctx.layout.system_dir(name)
        if ctx.skip(out, f"generate + evaluate {name}"):
            continue
        if spec["adapter"] is not None and not Path(spec["adapter"]).exists():
            raise StageError(f"{spec['adapter']}: adapter of system {name} is missing; run its stage first")
        started = time.perf_counter()
        model, tok = ctx.base.fresh()
        model = with_adapter(model, spec["adapter"])
        if dist.world_size() > 1:  # every process generates its share; rank 0 appends them all
            generate(ctx, model, tok, test_rows, out / "predictions.jsonl")

        def score(name=name, spec=spec, out=out, model=model, tok=tok, started=started) -> None:
            # The base model is loaded by now (above), so this load is not collective.
            if not encoder and ctx.cfg.eval.bertscore:
                encoder.append(bertscore_encoder(ctx))
            # Adapter already folded in; with several processes the predictions are all on disk.
            metrics = evaluate_system(ctx.cfg, model, tok, None, test_rows, out, encoder=encoder[0] if encoder else None,
                                      progress=ctx.progress)
            write_manifest(out, stage="evaluate", system=name, adapter=str(spec["adapter"]) if spec["adapter"] else None,
                           ratio=spec.get("ratio"), seed=spec.get("seed"), family=spec["family"], metrics=metrics,
                           wall_clock_s=time.perf_counter() - started)  # generation + scoring

        dist.run_on_main(score, f"evaluate {name}")


def generate(ctx: StageContext, model, tok, rows: list[dict], out: Path) -> None:
    """Greedy predictions of `model` on `rows`, shared out over the processes (rank 0 writes `out`)."""
    from grasp_lora.data.tasks import task_spec
    from grasp_lora.evaluation.generate import generate_predictions

    g, d = ctx.cfg.generation, ctx.cfg.data
    # The prompts of the run: the task's templates plus data.prompts.
    generate_predictions(model, tok, task_spec(d), d.target_lang, rows, out, batch_size=g.batch_size,
                         max_new_tokens=g.max_new_tokens, max_total=d.max_total_generation,
                         max_article_tokens=d.max_article_tokens, progress=ctx.progress, shard=True)


def bertscore_encoder(ctx: StageContext):
    """The BERTScore encoder of `eval.bertscore_model` (by default the run's base model)."""
    from grasp_lora.evaluation.run import load_bertscore_encoder

    base, tok = ctx.base.fresh()
    return load_bertscore_encoder(ctx.cfg, base, tok)
