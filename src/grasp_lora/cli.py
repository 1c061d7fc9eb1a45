"""The `grasp-lora` command: one subcommand per pipeline stage.

Every subcommand takes a recipe (a YAML path, or the name of a shipped recipe such as `demo` or
`mlqa_ar`) and any number of dotted overrides (`train.lr=3e-4 model.name=tiny-llama`), anywhere on
the line, before or after the options. Errors on bad input print one line and exit with status 2;
`--debug` shows the traceback.

Output: results (where things were written, p*, metrics) are printed; the library's progress
messages go through `logging` (logger `grasp_lora`), shown on stdout without decoration:
`--quiet` shows warnings only (and no progress bars), `--verbose` adds debug messages.
`--report-to tensorboard|wandb` tracks losses and controller rounds (grasp_lora.tracking).

Several processes: `grasp-lora <cmd> ... --num-processes N` relaunches the same command through
accelerate's launcher (`accelerate launch --multi_gpu --num_processes N -m grasp_lora <cmd> ...`;
on a machine without CUDA the processes use gloo on the CPU). Launched directly by
`accelerate launch` or `torchrun`, the command joins the process group before it loads anything;
only rank 0 prints (docs/multi-gpu.md).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from grasp_lora import __version__
from grasp_lora import distributed as dist
from grasp_lora.config import BASELINES
from grasp_lora.console import quiet_other_ranks, setup_logging
from grasp_lora.launch import relaunch
from grasp_lora.pipeline import STAGES

RECIPES_DIR = Path(__file__).resolve().parent / "configs"


def shipped_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def resolve_recipe(recipe: str) -> Path:
    p = Path(recipe)
    if p.is_file():
        return p
    shipped = RECIPES_DIR / f"{recipe}.yaml"
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(
        f"{recipe}: no such recipe file and no shipped recipe of that name (shipped: {', '.join(shipped_recipes())})"
    )


def _config(args):
    from grasp_lora.config import load_config

    overrides = list(args.overrides)
    if getattr(args, "run_dir", None):
        overrides.append(f"pipeline.output_dir={args.run_dir}")
    return load_config(resolve_recipe(args.recipe), overrides)


def _experiment(args, redo_damaged: bool = True):
    from grasp_lora import tracking
    from grasp_lora.pipeline import Experiment

    cfg = _config(args)
    # Before any work: a tracker that cannot start (package missing, no login) fails the command now.
    tracking.start(args.report_to, cfg.pipeline.output_dir, run_name=cfg.name, config=cfg.to_dict(),
                   main=dist.is_main())
    exp = Experiment(cfg, progress=args.progress)
    # Stops here, before any work, if finished results were made with other settings; then
    # writes config.yaml (docs/resume.md).
    exp.start(rerun_changed=getattr(args, "rerun_changed", False), redo_damaged=redo_damaged)
    return exp


def cmd_config(args) -> int:
    # Exactly what a run would save as config.yaml.
    sys.stdout.write(_config(args).to_yaml())
    return 0


def cmd_prepare(args) -> int:
    exp = _experiment(args)
    exp.prepare()
    print(f"splits written to {exp.data_dir}")
    return 0


def cmd_train_adapter(args) -> int:
    exp = _experiment(args)
    d = exp.cfg.data
    lang = {"source": d.source_lang, "target": d.target_lang}.get(args.lang, args.lang)
    if lang not in (d.source_lang, d.target_lang):
        raise ValueError(f"--lang {args.lang}: expected source, target, {d.source_lang} or {d.target_lang}")
    exp.prepare()
    exp.adapters([lang])
    out = exp.adapter_dir(lang)
    print(f"PEFT adapter: {out}")
    return 0


def cmd_search(args) -> int:
    exp = _experiment(args)
    exp.prepare()
    exp.adapters()
    if args.method == "grasp":
        exp.grasp()
        if exp.cfg.pipeline.controller_per_seed:
            for seed in exp.cfg.pipeline.seeds:
                print(f"seed {seed}: p* = {exp.p_star(seed):.4f}  ({exp.grasp_dir(seed)})")
        else:
            print(f"p* = {exp.p_star():.4f}  ({exp.grasp_dir()})")
    elif args.method == "grid":
        exp.grid(point=args.point)
        if args.point is None:
            from grasp_lora.io import read_json

            for seed in exp.cfg.pipeline.seeds:
                grid_dir = exp.layout.grid_dir(seed)
                s = read_json(grid_dir / "summary.json")
                print(f"seed {seed}: grid best ratio = {s['best_ratio']:.2f}  ({grid_dir})")
            sel = read_json(exp.grid_summary_path)
            print(f"selected ratio over seeds {sel['seeds']}: {sel['selected_ratio']:.2f}  ({exp.grid_summary_path})")
    elif args.method == "optuna":
        budget = None if args.budget_minutes is None else 60 * args.budget_minutes
        for seed, res in exp.optuna(n_trials=args.trials, budget_s=budget, budget_clock=args.budget_clock,
                                    budget_rule=args.budget_rule).items():
            print(f"seed {seed}: Optuna best ratio = {res['best_ratio']:.4f} over {len(res['trials'])} trials "
                  f"({exp.layout.optuna_dir(seed)})")
    return 0


def cmd_collect(args) -> int:
    exp = _experiment(args)
    sel = exp.collect()
    for seed, s in sel["per_seed"].items():
        print(f"seed {seed}: grid best ratio = {s['best_ratio']:.2f} over {len(s['points'])} points")
    print(f"selected ratio over seeds {sel['seeds']}: {sel['selected_ratio']:.2f} (lowest mean validation loss)")
    return 0


def cmd_finetune(args) -> int:
    exp = _experiment(args)
    exp.prepare()
    exp.adapters()
    if args.ratio is None:
        exp.final()
        for seed in exp.cfg.pipeline.seeds:
            print(f"seed {seed}: GRASP adapter at {exp.layout.final_dir(seed) / 'adapter'}")
        return 0
    if not 0 <= args.ratio < 1:
        raise ValueError(f"--ratio {args.ratio}: a prune ratio must be in [0, 1)")
    from grasp_lora.config import seed_config

    seed = exp.cfg.pipeline.seeds[0]
    out = Path(args.out) if args.out else exp.seed_dir(seed) / f"finetune_{args.ratio:.4f}"
    res = exp.merged_run(seed_config(exp.cfg, seed), out, ratio=args.ratio, kind="final")
    print(f"final adapter (ratio {args.ratio}, real sparsity {res['real_sparsity']:.3f}) at {out / 'adapter'}")
    return 0


def cmd_baseline(args) -> int:
    exp = _experiment(args)
    exp.prepare()
    exp.adapters()
    from grasp_lora import stages

    name = args.name
    build = {  # zero_shot and target_lora need nothing beyond the adapters
        "ties": lambda: stages.ties(exp, exp.source_target_adapters),
        "lorahub": lambda: stages.lorahub(exp, exp.source_target_adapters),
        "adaptive_merge": lambda: stages.adaptive_merge(exp, exp.merged_run),
        "grid_best": exp.grid,
    }
    if name in build:
        build[name]()
    if args.evaluate:
        wanted = [s for s, spec in exp.systems().items() if spec["family"] == name]
        exp.evaluate(only_systems=wanted)
        from grasp_lora.io import read_json

        for s in wanted:
            print(f"{s}: {read_json(exp.system_dir(s) / 'metrics.json')}")
    return 0


def cmd_generate(args) -> int:
    exp = _experiment(args, redo_damaged=False)  # runs no stage: damaged units are left to one that does
    from grasp_lora.evaluation.run import with_adapter
    from grasp_lora.systems import generate

    rows = exp.rows(exp.cfg.data.target_lang, args.split)
    model, tok = exp.base_model()
    model = with_adapter(model, args.adapter)
    out = Path(args.out)
    generate(exp, model, tok, rows, out)
    print(f"predictions written to {out}")
    return 0


def cmd_evaluate(args) -> int:
    exp = _experiment(args, redo_damaged=False)
    from grasp_lora.evaluation.evaluate import evaluate_predictions, read_predictions, write_metrics

    rows = exp.rows(exp.cfg.data.target_lang, args.split)
    predictions = read_predictions(args.predictions)
    encoder = exp.bertscore_encoder() if exp.cfg.eval.bertscore else None  # every process: the load is collective
    out = Path(args.out) if args.out else Path(args.predictions).with_name("metrics.json")

    def score() -> dict:  # scoring is cheap next to generation: rank 0 alone
        m = evaluate_predictions(exp.cfg.data.task, exp.cfg.data.target_lang, predictions, rows, exp.cfg.eval,
                                 encoder=encoder)
        write_metrics(out, m)
        return m

    metrics = dist.from_main(dist.run_on_main(score, "evaluate predictions"))
    print(f"metrics written to {out}")
    for k, v in metrics.items():
        if isinstance(v, (int, float)):
            print(f"  {k}: {v:.2f}")
    return 0


def cmd_pipeline(args) -> int:
    exp = _experiment(args)
    report = exp.run(only=args.only, start=args.start)
    if report is not None:
        from grasp_lora.report import headline

        print(f"\nreport: {report}\n")
        print(headline(exp.root))
    return 0


def cmd_demo(args) -> int:
    args.recipe = "demo"
    args.only = None
    args.start = None
    return cmd_pipeline(args)


def cmd_report(args) -> int:
    from grasp_lora.report import build_report, headline

    path = dist.run_on_main(lambda: build_report(args.run_dir), "report")
    print(f"report: {path}\n")
    print(headline(args.run_dir))
    return 0


def cmd_verify(args) -> int:
    # Read-only, no lock: it may run beside a command working in the folder.
    from grasp_lora.verify import verify_run

    check = verify_run(args.run_dir)
    for line in check.lines():
        print(line)
    return 0 if check.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grasp-lora",
        description="GRASP LoRA: learn one global prune ratio for merged LoRA adapters with a GRPO controller.",
    )
    parser.add_argument("--version", action="version", version=f"grasp-lora {__version__}")
    _output_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def recipe_cmd(name: str, help: str, func, recipe: bool = True, before_recipe=None, runs: bool = True):
        p = sub.add_parser(name, help=help, description=help)
        if before_recipe is not None:  # a positional that reads before the recipe (`baseline NAME RECIPE`)
            p.add_argument(before_recipe[0], **before_recipe[1])
        if recipe:
            p.add_argument("recipe", help="recipe YAML path or shipped recipe name (" + ", ".join(shipped_recipes()) + ")")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="dotted config overrides, e.g. train.lr=3e-4 (anywhere on the line)")
        p.add_argument("--run-dir", help="run folder (default: the recipe's pipeline.output_dir)")
        _output_options(p)
        if runs:
            p.add_argument("--no-progress", dest="no_progress", action="store_true",
                           help="no progress bars (messages stay)")
            p.add_argument("--rerun-changed", action="store_true",
                           help="redo finished units whose settings changed, and everything downstream of them")
            p.add_argument("--report-to", choices=["none", "tensorboard", "wandb"], default="none",
                           help="track losses and controller rounds in TensorBoard (<run>/tensorboard; "
                                "pip install grasp-lora[tracking]) or Weights & Biases (pip install grasp-lora[wandb])")
            p.add_argument("--num-processes", type=int, metavar="N",
                           help="data parallel over N processes (GPUs, or CPU processes without CUDA): relaunches "
                                "this command through accelerate's launcher")
        p.set_defaults(func=func)
        return p

    recipe_cmd("config", "print the resolved configuration (the config.yaml a run would save)", cmd_config, runs=False)

    recipe_cmd("prepare", "write deterministic train/val/micro_dev/test splits", cmd_prepare)
    p = recipe_cmd("train-adapter", "train a stage-1 LoRA adapter (PEFT folder)", cmd_train_adapter)
    p.add_argument("--lang", required=True, help="source, target, or a language code of the recipe")
    p = recipe_cmd("search", "find the prune ratio: GRASP controller run or grid search", cmd_search)
    p.add_argument("--method", choices=["grasp", "grid", "optuna"], default="grasp",
                   help="optuna: TPE + Hyperband over the ratio (pip install grasp-lora[optuna])")
    p.add_argument("--trials", type=int, default=8, help="optuna only: number of trials")
    p.add_argument("--budget-minutes", type=float, help="optuna only: stop starting trials after this budget")
    p.add_argument("--budget-clock", choices=["wall", "cpu"], default="wall",
                   help="optuna only: what the budget counts (cpu: this process's CPU time)")
    p.add_argument("--budget-rule", choices=["fit", "spend"], default="fit",
                   help="optuna only: fit: start a trial only if it should end within the budget; "
                        "spend: while half a trial is left (ends nearest the budget)")
    p.add_argument("--point", type=int, help="grid only: run just grid point I (for schedulers); then `collect`")
    recipe_cmd("collect", "gather finished grid points and pick the best ratio", cmd_collect)
    p = recipe_cmd("finetune", "the final merge + prune run (default ratio: the controller's p*)", cmd_finetune)
    p.add_argument("--ratio", type=float, help="prune ratio in [0, 1) (default: p* of the grasp search)")
    p.add_argument("--out", help="output folder (with --ratio)")
    p = recipe_cmd("baseline", "build (and with --evaluate, score) one baseline", cmd_baseline, before_recipe=(
        "name", dict(choices=BASELINES)))
    p.add_argument("--evaluate", action="store_true", help="also generate and evaluate it on the test split")
    p = recipe_cmd("generate", "greedy predictions of a model (+ optional PEFT adapter) as JSONL", cmd_generate)
    p.add_argument("--adapter", help="PEFT adapter folder (default: the base model, zero-shot)")
    p.add_argument("--split", default="test", choices=["train", "val", "micro_dev", "test"])
    p.add_argument("--out", required=True, help="predictions JSONL path (resumes if it exists)")
    p = recipe_cmd("evaluate", "score a predictions JSONL with the task's metrics", cmd_evaluate)
    p.add_argument("--predictions", required=True)
    p.add_argument("--split", default="test", choices=["train", "val", "micro_dev", "test"])
    p.add_argument("--out", help="metrics.json path (default: next to the predictions)")
    p = recipe_cmd("pipeline", "run a whole experiment (resumable)", cmd_pipeline)
    p.add_argument("--only", choices=STAGES, help="run only this stage")
    p.add_argument("--from", dest="start", choices=STAGES, help="run from this stage on")
    recipe_cmd("demo", "the CPU demo: embedded Gemma 3 270M on the bundled data (= pipeline demo)", cmd_demo, recipe=False)
    p = sub.add_parser("report", help="(re)build report.md, results.json and plots of a run folder")
    p.add_argument("run_dir")
    _output_options(p)
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("verify", help="check every finished unit's files against its manifest (exit 1 when damaged)")
    p.add_argument("run_dir")
    _output_options(p)
    p.set_defaults(func=cmd_verify)
    return parser


def _output_options(p: argparse.ArgumentParser, top: bool = False) -> None:
    """--quiet / --verbose / --debug, accepted before the command and after it. The subcommand's
    copies default to SUPPRESS so they never overwrite a flag given before the command."""
    default = False if top else argparse.SUPPRESS
    p.add_argument("--quiet", "-q", action="store_true", default=default,
                   help="warnings and errors only, no progress bars")
    p.add_argument("--verbose", "-v", action="store_true", default=default, help="debug messages too")
    p.add_argument("--debug", action="store_true", default=default, help="show tracebacks on errors")


_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*=")


def parse_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """argparse, with KEY=VALUE overrides accepted anywhere: argparse gives a positional list only
    the words before the first option, so overrides after an option come back as extras."""
    args, extras = parser.parse_known_args(argv)
    stray = [a for a in extras if not _OVERRIDE.match(a)]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extras:
        if not hasattr(args, "overrides"):
            parser.error(f"{args.command} takes no KEY=VALUE overrides: {' '.join(extras)}")
        args.overrides = [*args.overrides, *extras]
    args.progress = not (args.quiet or getattr(args, "no_progress", False))
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(parser, raw)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    n = getattr(args, "num_processes", None)
    if n is not None and n < 1:
        print(f"grasp-lora: error: --num-processes {n}: must be >= 1", file=sys.stderr)
        return 2
    if n is not None and n > 1 and dist.launched_world_size() == 1:
        return relaunch(raw, n)
    setup_logging(args.quiet, args.verbose)
    if not args.progress:
        # transformers' and the hub's own bars ("Loading weights") too; read when they are imported.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    dist.init()  # joins the process group under a launcher (before any model is loaded)
    quiet_other_ranks()
    from grasp_lora import tracking

    try:
        code = int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("grasp-lora: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, OSError, dist.RankFailedError, dist.RankDivergenceError) as e:
        if args.debug:
            raise
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = f" (rank {dist.rank()})" if dist.world_size() > 1 else ""
        print(f"grasp-lora: error{where}: {message}", file=sys.stderr)
        return 2
    finally:
        tracking.finish()  # flush what was logged, also when the command failed
    dist.shutdown()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
