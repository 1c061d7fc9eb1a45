"""Shared plumbing of the benchmark scripts (not a benchmark itself).

- command-line options every script takes (`add_common_args`) and the recipe they build
  (`build_config`: a recipe + `--set KEY=VALUE` overrides + `--smoke` sizes);
- a scratch run folder holding the prepared data and the two stage-1 adapters, built once and
  shared by every benchmark with the same data/model/adapter settings (`base_experiment`), and
  fresh experiment folders that reuse them through symlinks (`child_experiment`);
- `fixed_ratio_run`: one fixed-ratio merge + prune run (a grid point / the final run) through the
  shipped `training.finetune.train_merged`, with the knobs the benchmarks compare (dense ΔW,
  full-vocabulary head, full_pass vs train_forward norms, per-step mask agreement);
- FLOP counting (`model_dims`, `forward_flops`, `training_flops`) and the machine's dense matmul
  rate (`matmul_flops_per_s`);
- the report header (date, exact command, machine) and small statistics / table helpers.

Timing rule everywhere: the machine is noisy, so variants are alternated, repeated, and the
median is reported (with every repeat kept in the JSON).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
SCRATCH_DIR = RESULTS_DIR / "scratch"

# `--smoke`: sizes that run a whole benchmark in seconds on tiny-llama (as the integration tests).
SMOKE_OVERRIDES = [
    "data.source_sizes={train: 6, val: 3, micro_dev: 0, test: 0}",
    "data.target_sizes={train: 8, val: 3, micro_dev: 4, test: 4}",
    "train.lr=1e-3",
    "train.grad_accum=2",
    "train.epochs=2",
    "train.patience=2",
    "train.eval_batch_size=4",
    "controller.every_k_steps=2",
    "controller.micro_dev_size=4",
    "generation.batch_size=4",
    "generation.max_new_tokens=8",
    "eval.bertscore=false",
]


# ----------------------------------------------------------------------------------------------
# options, config, report header


def add_common_args(ap: argparse.ArgumentParser, name: str, model: str = "gemma-3-270m") -> None:
    ap.add_argument("--model", default=model, help="model name (builtin, hub id, folder, .gguf); default %(default)s")
    ap.add_argument("--recipe", default="demo", help="recipe YAML or shipped recipe name (default: demo)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="dotted config override, repeatable (e.g. --set data.target_sizes.train=16)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny data sizes and short training (seconds on tiny-llama); applied before --set")
    ap.add_argument("--run-dir", default=None,
                    help="scratch folder for data + adapters (default: benchmarks/results/scratch/<model>-<recipe>-<hash>)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars or stage logs")
    ap.add_argument("--out", default=None,
                    help=f"result JSON (default: benchmarks/results/{name}.json; {name}-<model>[-smoke].json for "
                         "another model or --smoke, so quick checks never overwrite the real result)")
    ap.set_defaults(_bench_name=name, _default_model=model)


def setup(args: argparse.Namespace) -> None:
    import torch

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.out is None:
        name = args._bench_name
        if args.model != args._default_model:
            name += "-" + Path(args.model).name.replace("/", "_")
        if args.smoke:
            name += "-smoke"
        args.out = str(RESULTS_DIR / f"{name}.json")
    if args.threads is not None:
        torch.set_num_threads(args.threads)


def build_config(args: argparse.Namespace, extra: Sequence[str] = ()):
    """The recipe with --smoke sizes, then `extra` (the script's own settings), then --set."""
    from grasp_lora.cli import resolve_recipe
    from grasp_lora.config import load_config

    overrides = [f"model.name={args.model}"]
    if getattr(args, "smoke", False):
        overrides += SMOKE_OVERRIDES
    overrides += list(extra) + list(args.overrides)
    return load_config(resolve_recipe(args.recipe), overrides)


def run_header(benchmark: str, args: argparse.Namespace) -> dict[str, Any]:
    from grasp_lora.io import environment_info

    argv = [Path(sys.executable).name, *sys.argv]
    return {
        "benchmark": benchmark,
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(argv),
        "cwd": os.getcwd(),
        "args": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        "environment": environment_info(),
    }


def write_report(report: dict[str, Any], out: str | Path) -> None:
    from grasp_lora.io import write_json

    write_json(out, report)
    print(f"wrote {out}")


# ----------------------------------------------------------------------------------------------
# scratch experiments


def _stage1_hash(cfg) -> str:
    """Everything the data splits and the stage-1 adapters depend on."""
    d = cfg.to_dict()
    key = {k: d[k] for k in ("data", "model", "lora", "train")}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]


def scratch_root(cfg, args: argparse.Namespace) -> Path:
    if args.run_dir:
        return Path(args.run_dir)
    model = Path(cfg.model.name).name.replace("/", "_")
    recipe = Path(args.recipe).stem
    return SCRATCH_DIR / f"{model}-{recipe}-{_stage1_hash(cfg)}"


def _log(quiet: bool) -> Callable[[str], None]:
    return (lambda _msg: None) if quiet else print


def ignore_scratch(folder: Path) -> None:
    """A folder under the scratch dir is kept out of git (the scratch dir ignores itself)."""
    if SCRATCH_DIR in folder.resolve().parents and not (SCRATCH_DIR / ".gitignore").exists():
        (SCRATCH_DIR / ".gitignore").write_text("# benchmark scratch runs (data, adapters, runs): never committed\n*\n")


def base_experiment(cfg, args: argparse.Namespace):
    """Prepared data + both stage-1 adapters in the scratch folder (resumed if already there),
    and the base model loaded once (outside every timed section)."""
    from grasp_lora.config import save_config
    from grasp_lora.pipeline import Experiment

    root = scratch_root(cfg, args)
    root.mkdir(parents=True, exist_ok=True)
    ignore_scratch(root)
    exp = Experiment(cfg, root=root, progress=not args.quiet, log=_log(args.quiet))
    save_config(cfg, root / "config.yaml")
    exp.prepare()
    exp.adapters()
    exp.base_model()  # load once; children share it
    return exp


def child_experiment(parent, cfg, root: str | Path, fresh: bool = True):
    """An Experiment in its own folder that sees the parent's data and adapters (symlinks) and
    shares its loaded base model. `fresh`: remove what an earlier benchmark left in that folder."""
    import shutil

    from grasp_lora.config import save_config
    from grasp_lora.pipeline import Experiment

    root = Path(root)
    if fresh and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    for name in ("data", "adapters"):
        link = root / name
        if not link.exists():
            link.symlink_to((parent.root / name).resolve(), target_is_directory=True)
    exp = Experiment(cfg, root=root, progress=parent.progress, log=parent.log, base=parent.base)
    save_config(cfg, root / "config.yaml")
    return exp


def encode_rows(exp, cfg, rows: list[dict]) -> list[dict]:
    from grasp_lora.data.encode import encode_rows as encode
    from grasp_lora.data.tasks import task_spec

    return encode(exp.base.tokenizer, rows, task_spec(cfg.data), cfg.data.target_lang, cfg.data.max_length,
                  cfg.data.max_article_tokens)


def headline_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric scores of a metrics.json (EM / F1 / ROUGE-L / BLEU-4 / BERTScore F1)."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            out[k] = float(v)
        elif k == "bertscore" and isinstance(v, dict):
            f = v.get("f1", v.get("F1"))
            if isinstance(f, (int, float)):
                out["bertscore_f1"] = float(f)
    return out


# ----------------------------------------------------------------------------------------------
# one fixed-ratio run with the benchmarks' knobs


def fixed_ratio_run(
    exp,
    cfg,
    ratio: Optional[float],
    *,
    dense: bool = False,
    importance_inputs: Optional[str] = None,
    full_pass_targets_only: bool = True,
    full_pass_batch: Optional[int] = None,
    max_steps: Optional[int] = None,
    validate: bool = True,
    agreement: bool = False,
    export_dir: Optional[str | Path] = None,
    progress: bool = False,
    train_rows: Optional[list[dict]] = None,
    hooks: Sequence[Any] = (),
) -> dict[str, Any]:
    """One merged fine-tune pruned at `ratio`, through the shipped builder
    (`training.finetune.train_merged`, what the pipeline's grid points and final runs call) on a
    fresh copy of `exp`'s base model, with the knobs the benchmarks compare: `dense` (the
    authors' dense ΔW forward), `cfg.train.targets_only_head`, `importance_inputs` (default
    cfg.prune.importance_inputs), the full pass's head and batch size, `agreement` (compute both
    norm sources each step and record mask agreement; prunes with `importance_inputs`),
    `max_steps` (a cap on optimizer steps), `validate` (False: no val set), `train_rows` (default:
    the target train split), `hooks` (extra training-loop hooks, e.g. a counter attached at
    `on_train_start` from `state.model`).

    Returns timings, per-step losses, the final masks (factor == 0) and, with `agreement`, the
    per-step agreement records. The model is dropped afterwards unless `export_dir` is given (the
    merged factors are then exported as a PEFT adapter)."""
    from dataclasses import replace

    from grasp_lora.io import Timer, read_jsonl
    from grasp_lora.pruning.groups import all_factors
    from grasp_lora.pruning.masks import sparsity
    from grasp_lora.training.finetune import train_merged

    kind = importance_inputs or cfg.prune.importance_inputs
    cfg = replace(cfg, prune=replace(cfg.prune, importance_inputs=kind))
    lang = cfg.data.target_lang
    model, tok = exp.base_model()
    timer = Timer()
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "train_log.jsonl"
        run = train_merged(
            cfg, model, tok, exp.source_target_adapters,
            train_rows if train_rows is not None else exp.rows(lang, "train"),
            exp.rows(lang, "val") if validate else None,
            ratio=ratio, kind="fixed-ratio", log_path=log_path, timer=timer, progress=progress, hooks=hooks,
            dense=dense, max_steps=max_steps, full_pass_batch=full_pass_batch,
            full_pass_targets_only=full_pass_targets_only, agreement=agreement,
        )
        log = read_jsonl(log_path)
    result, wall = run.result, run.train_s
    factors = all_factors(run.groups)
    step_seconds = timer.timings.get("training", 0.0) + timer.timings.get("pruning", 0.0)
    out: dict[str, Any] = {
        "ratio": ratio,
        "dense": dense,
        "targets_only_head": cfg.train.targets_only_head,
        "importance_inputs": kind if ratio is not None else None,
        "steps": result.steps,
        "wall_s": wall,
        # the run without the agreement bookkeeping (= the plain run's time; equal to wall_s otherwise)
        "wall_s_plain": wall - timer.timings.get("agreement_extra", 0.0),
        "timings": dict(timer.timings),
        "steps_per_s": result.steps / step_seconds if step_seconds > 0 else None,
        "step_losses": [r["loss"] for r in log if r.get("event") == "step"],
        "best_val_loss": result.best_val_loss,
        "best_epoch": result.best_epoch,
        "epochs": result.epochs,
        "real_sparsity": float(sparsity(factors)),
        "merge_c": run.info.scaling,
        "masks": [(p.detach() == 0).cpu() for p in factors],
    }
    if agreement and run.pruner is not None:
        out["agreement"] = run.pruner.records
    if export_dir is not None:
        from grasp_lora.models.export import export_peft

        export_peft(model, export_dir, cfg.model.name)
    del model
    return out


def summarize_agreement(records: list[dict[str, Any]]) -> dict[str, Any]:
    if not records:
        return {}
    entries = [r["entries"] for r in records]
    pruned = [r["pruned"] for r in records]
    return {
        "steps": len(records),
        "entries_mean": statistics.fmean(entries), "entries_min": min(entries), "entries_last": entries[-1],
        "pruned_jaccard_mean": statistics.fmean(pruned), "pruned_jaccard_min": min(pruned), "pruned_jaccard_last": pruned[-1],
    }


# ----------------------------------------------------------------------------------------------
# FLOPs


def model_dims(model) -> dict[str, Any]:
    """Parameter counts for the FLOP formulas: non-embedding parameters (everything but the input
    embedding and the LM head, counted once if tied; LoRA factors excluded), hidden size, vocab."""
    from grasp_lora.models.merged import merged_modules

    emb = model.get_input_embeddings()
    head = model.get_output_embeddings()
    skip = {id(p) for p in emb.parameters()}
    if head is not None:
        skip |= {id(p) for p in head.parameters()}
    lora = {id(p) for _, m in merged_modules(model) for p in [*m.lora_A, *m.lora_B]}
    seen: set[int] = set()
    non_emb = 0
    for n, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen or id(p) in skip or id(p) in lora or "lora_" in n:
            continue
        seen.add(id(p))
        non_emb += p.numel()
    d_model, vocab = emb.weight.shape[1], emb.weight.shape[0]
    if head is not None:
        vocab, d_model = head.weight.shape
    return {"non_embedding_params": int(non_emb), "d_model": int(d_model), "vocab": int(vocab),
            "embedding_params": int(emb.weight.numel())}


def lora_dims(model) -> int:
    """Σ over merged (or PEFT) LoRA modules of r · (d_in + d_out): one low-rank path's MACs per token."""
    from grasp_lora.models.merged import merged_modules

    total = 0
    for _, m in merged_modules(model):
        total += m.r * (m.in_features + m.out_features)
    if total:
        return total
    for n, mod in model.named_modules():  # PEFT LoRA layers
        a = getattr(mod, "lora_A", None)
        if a is not None and hasattr(a, "keys") and len(a):
            lin = a[next(iter(a.keys()))]
            b = mod.lora_B[next(iter(mod.lora_B.keys()))]
            total += lin.out_features * (lin.in_features + b.out_features)
    return total


FLOP_FORMULAS = {
    "forward": "2*N*T + 2*d*V*P + 2*L*T",
    "training": "4*N*T + 4*d*V*P + 6*L*T",
    "legend": ("N = non-embedding parameters (frozen backbone, LM head and input embedding excluded); T = tokens "
               "processed (padding excluded); P = positions where the LM head is applied (target tokens with the "
               "targets-only head); d = hidden size; V = vocabulary; L = sum over LoRA modules of r*(d_in+d_out). "
               "Training with a frozen backbone = forward (2) + activation gradients (2); no weight gradients "
               "except LoRA's (+2 for the LoRA path only). Attention-score FLOPs (O(T^2)) are not counted."),
}


def forward_flops(dims: dict[str, Any], tokens: int, head_positions: int, lora: int = 0) -> float:
    return 2.0 * dims["non_embedding_params"] * tokens + 2.0 * dims["d_model"] * dims["vocab"] * head_positions + 2.0 * lora * tokens


def training_flops(dims: dict[str, Any], tokens: int, head_positions: int, lora: int = 0) -> float:
    return 4.0 * dims["non_embedding_params"] * tokens + 4.0 * dims["d_model"] * dims["vocab"] * head_positions + 6.0 * lora * tokens


def token_counts(examples: Iterable[dict[str, Any]]) -> tuple[int, int]:
    """(tokens, target tokens) of encoded examples; a target token is a label whose position the
    targets-only head scores (labels != -100 after the causal shift)."""
    tokens = targets = 0
    for ex in examples:
        tokens += len(ex["input_ids"])
        targets += sum(1 for x in ex["labels"][1:] if x != -100)
    return tokens, targets


def scoring_head_positions(examples: Sequence[dict[str, Any]], batch_size: int) -> int:
    """LM-head positions `per_example_losses` really computes (targets-only head): per length-sorted
    batch, rows × |union of target positions| (left padding: the longest target of the batch)."""
    import torch

    from grasp_lora.training.loss import IGNORE, collate

    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    total = 0
    for s in range(0, len(order), batch_size):
        batch = collate([examples[i] for i in order[s : s + batch_size]], 0, left=True)
        pos = (batch["labels"][:, 1:] != IGNORE).any(dim=0).sum()
        total += int(pos) * batch["labels"].shape[0]
    return total


class TokenCounter:
    """Counts what a model really processes, from a forward pre-hook on the module the training
    code calls: tokens (attention mask; padding excluded) and LM-head positions (batch rows x
    `logits_to_keep` positions, or every position), split into forwards with autograd on
    (training) and off (validation, controller scoring, full passes)."""

    def __init__(self, model) -> None:
        self.counts = {"grad": {"forwards": 0, "tokens": 0, "head_positions": 0},
                       "nograd": {"forwards": 0, "tokens": 0, "head_positions": 0}}
        self._handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs) -> None:
        import torch

        ids = kwargs.get("input_ids", args[0] if args else None)
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            return None
        mask = kwargs.get("attention_mask")
        rows, seq = ids.shape
        tokens = int(mask.sum()) if isinstance(mask, torch.Tensor) else rows * seq
        keep = kwargs.get("logits_to_keep", 0)
        if isinstance(keep, torch.Tensor):
            head = rows * keep.numel()
        else:
            head = rows * (seq if not keep else min(int(keep), seq))
        c = self.counts["grad" if torch.is_grad_enabled() else "nograd"]
        c["forwards"] += 1
        c["tokens"] += tokens
        c["head_positions"] += head
        return None

    def flops(self, dims: dict[str, Any], lora: int = 0) -> dict[str, float]:
        g, n = self.counts["grad"], self.counts["nograd"]
        train = training_flops(dims, g["tokens"], g["head_positions"], lora)
        fwd = forward_flops(dims, n["tokens"], n["head_positions"], lora)
        return {"training": train, "no_grad_forwards": fwd, "total": train + fwd}

    def remove(self) -> None:
        self._handle.remove()


def matmul_flops_per_s(n: int = 2048, repeats: int = 5, dtype: str = "float32") -> dict[str, Any]:
    """Dense matmul rate: median over `repeats` of 2 n^3 / t for torch.matmul of two n × n matrices."""
    import torch

    dt = getattr(torch, dtype)
    a = torch.randn(n, n, dtype=dt)
    b = torch.randn(n, n, dtype=dt)
    torch.matmul(a, b)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"n": n, "dtype": dtype, "repeats": repeats, "seconds": times, "flops_per_s": 2.0 * n**3 / med,
            "threads": torch.get_num_threads()}


# ----------------------------------------------------------------------------------------------
# statistics and tables


def median(xs: Iterable[Optional[float]]) -> Optional[float]:
    v = [x for x in xs if x is not None]
    return statistics.median(v) if v else None


def mean_std(xs: Iterable[Optional[float]]) -> dict[str, Optional[float]]:
    v = [float(x) for x in xs if x is not None]
    if not v:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v)}


def fmt(x: Any, spec: str = ".3f") -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


def fmt_ms(d: dict[str, Optional[float]], spec: str = ".2f") -> str:
    if d.get("mean") is None:
        return "-"
    return f"{d['mean']:{spec}} ± {d['std']:{spec}}"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for j, r in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    text = "\n".join(lines)
    print(text)
    return text


def paired_ratios(slow: Sequence[float], fast: Sequence[float]) -> dict[str, Any]:
    """Speed-up of `fast` over `slow` from alternated repeats, paired repeat by repeat.

    Repeat i of each side ran back to back (A B A B ...), so both saw about the same load on a
    shared machine; the ratio of the pair cancels most of it. The headline is the median of the
    per-repeat ratios, printed with its min-max range so a reader sees how much the load moved it.
    """
    if len(slow) != len(fast) or not slow:
        raise ValueError(f"paired_ratios needs equal, non-empty repeat lists (got {len(slow)} and {len(fast)})")
    rs = [s / f for s, f in zip(slow, fast)]
    return {"median": statistics.median(rs), "min": min(rs), "max": max(rs), "n": len(rs), "per_repeat": rs}


def fmt_ratio(r: dict[str, Any], spec: str = ".2f") -> str:
    """'9.57x (range 9.1-10.2x, 3 repeats)'."""
    if r["n"] == 1:
        return f"{r['median']:{spec}}x (1 repeat)"
    return f"{r['median']:{spec}}x (range {r['min']:{spec}}-{r['max']:{spec}}x, {r['n']} repeats)"


class CpuWallTimer:
    """Wall-clock and this process's CPU time (all threads) of one block.

    On a shared machine wall-clock includes waiting for a core; CPU time does not. CPU / wall
    near the thread count means the run had the cores to itself, well below it means contention.
    """

    def __enter__(self) -> "CpuWallTimer":
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall_s = time.perf_counter() - self._w
        self.cpu_s = time.process_time() - self._c


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b not in (None, 0) else None
