"""The controller's regime suite (issue 24): does GRASP find the grid's best ratio wherever it lies,
and at what cost?

A regime is a recipe plus overrides whose grid curve differs from the others' (a low best, an
interior best, a high best). Every regime runs with the same protocol:
  - an 8-point grid over [0.1, 0.95] (`GRID`) for every seed, cached, and the test scores of each
    seed's run at the grid's selected ratio (lowest mean validation loss over the seeds);
  - the controller's `p_max` is 0.95 in every regime, so no answer is the bound by construction;
  - per controller variant (`--phase controller`): a controller run per seed (controller seed = the
    seed, `pipeline.controller_per_seed`) and a final run at each seed's p*, evaluated on test;
  - per seed, the two searches a user would pick instead, read from the same cache at no cost:
    the best of the 3-point grid {0.2, 0.5, 0.8} (`GRID3`), and Optuna (`--phase optuna`, TPE +
    Hyperband over the same range with GRASP's own CPU budget: controller run + final run).

A case (regime, seed) is a hit when its final run's validation loss is within 0.02 of the seed's best
grid point, or its ratio within one grid step (0.15 here: the coarsest spacing of `GRID`) of the
seed's best ratio. Cost is CPU time (all threads of the process), in grid points of the same regime
(the mean CPU time of its grid points over the seeds).

    python -m benchmarks.bench_regimes --regimes demo,demo_smollm2 --phase grid --threads 1 --quiet
    python -m benchmarks.bench_regimes --regimes demo --phase controller --variant default --threads 1
    python -m benchmarks.bench_regimes --summarize --variant default   # writes bench_regimes_scoreboard.json

Regimes that read real data (`xquad_*`) need `--data ../shared/data/xquad`; nothing is copied into the
repository (the cache lives under benchmarks/results/scratch/, which git ignores).

Suite v2 (`--suite v2`; the section "Suite v2" below): independent cases (each seed draws its own
data split), a judging set of 200 test / 50 validation examples where the pool allows, and every
method's returned adapter judged on test loss and the task metric, with paired bootstrap CIs, sign
tests and leave-one-seed-out regret (benchmarks/_stats.py). Phase by phase, per regime (cases are
independent: two processes at --threads 1 use both cores):

    python -m benchmarks.bench_regimes --plan                                  # regimes, sizes, CPU hours
    python -m benchmarks.bench_regimes --suite v2 --regimes demo --phase grid --threads 1 --quiet
    python -m benchmarks.bench_regimes --suite v2 --regimes demo --phase controller --variant default --threads 1 --quiet
    python -m benchmarks.bench_regimes --suite v2 --regimes demo --phase optuna --threads 1 --quiet
    python -m benchmarks.bench_regimes --suite v2 --regimes demo --phase metric --threads 1 --quiet   # fills gaps
    python -m benchmarks.bench_regimes --suite v2 --summarize --markdown       # bench_regimes_v2_scoreboard.json

Real data: `--data ../shared/data/xquad` (xquad_*), `--summaries-data ../shared/data/summaries`
(summaries_*). Case records (with every per-example test loss) go to benchmarks/results/bench_regimes_v2/.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any, Sequence

from benchmarks import _common as C

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"
REAL = Path(__file__).resolve().parent / "real_data.yaml"

GRID = [0.1, 0.2, 0.3, 0.4, 0.5, 0.65, 0.8, 0.95]
GRID3 = [0.2, 0.5, 0.8]
SEEDS = [42, 1337, 9001]
GRID_STEP = 0.15  # the coarsest spacing of GRID: "within one grid step" of a seed's best ratio
REGRET_GOAL = 0.02

# Each regime: the recipe, whether it reads --data (XQuAD), and its overrides. Sizes fit the
# 2-core machine (a grid point of the demo regimes costs about a minute of one core).
REAL_SMALL = ["data.split_by=context", "data.source_sizes={train: 40, val: 8, micro_dev: 0, test: 0}",
              "data.target_sizes={train: 24, val: 16, micro_dev: 8, test: 24}", "controller.every_k_steps=5",
              "controller.micro_dev_size=8", "generation.max_new_tokens=24"]
# The demo recipe as the suite measured it (2026-12-05), before the demo was made smaller to fit
# `make demo` in 10 minutes: every demo regime starts from these, so the cached grids stay valid.
DEMO_AS_MEASURED = ["data.source_sizes={train: 40, val: 8, micro_dev: 0, test: 0}",
                    "data.target_sizes={train: 32, val: 12, micro_dev: 8, test: 40}", "lorahub.steps=40",
                    "lorahub.examples=4"]
REGIMES: dict[str, dict[str, Any]] = {
    # the demo as shipped (template data, Gemma 3 270M, lr 1e-3, 2 epochs)
    "demo": {"recipe": DEMO, "overrides": []},
    # the second target language of the demo data (its template answers are learnt almost exactly:
    # validation loss 0.014-0.020 at 0.1-0.3, so every ratio is within the 0.02 regret goal; left out)
    "demo_zh": {"recipe": DEMO, "overrides": ["data.target_lang=zh"]},
    # another target module set: every projection fed by the decoder layer's input (q, k, v, gate, up).
    # (o_proj and down_proj were the first choice: their grid crashed in the input-aware importance,
    # which weighs them by the layer input's norms; the config now refuses them in one line.)
    "demo_qkv_mlp": {"recipe": DEMO, "overrides": ['lora.target_modules=["q_proj","k_proj","v_proj","gate_proj","up_proj"]']},
    # fewer source examples: a weaker English adapter to reuse
    "demo_few_source": {"recipe": DEMO, "overrides": ["data.source_sizes={train: 8, val: 8, micro_dev: 0, test: 0}"]},
    # a 3x larger learning rate: the adapters overfit the 32 examples more, where pruning may help
    "demo_lr3e-3": {"recipe": DEMO, "overrides": ["train.lr=3e-3"]},
    # the merge scaled by alpha / r (= 4) instead of the authors' 1: larger merged factors
    "demo_lora_scaling": {"recipe": DEMO, "overrides": ["merge.scaling=lora"]},
    # Tried and left out for cost on 2 cores (each about 2-3x a demo regime): the paper's learning rate
    # 1e-4 at 6 epochs, SmolLM2-135M (its tokenizer splits Arabic into ~2x the tokens), a larger target
    # training set. `demo_lr1e-4` and `demo_smollm2` stay runnable.
    "demo_lr1e-4": {"recipe": DEMO, "overrides": ["train.lr=1e-4", "train.epochs=6", "train.patience=2"]},
    "demo_smollm2": {"recipe": DEMO, "overrides": ["model.name=smollm2-135m"]},
    # real XQuAD en -> ar / zh (split by passage), smaller than bench_real_data's sizes
    "xquad_ar": {"recipe": REAL, "data": "ar", "overrides": REAL_SMALL},
    "xquad_zh": {"recipe": REAL, "data": "zh", "overrides": REAL_SMALL},
}

# Controller variants compared on the suite: a package variant (grasp_lora/controller/variants.py)
# plus explicit overrides on top of the regime, so that a name keeps its meaning whatever the
# package's default. `default` is the shipped default controller (its runs are the method `grasp`
# of suite v2); the demo recipe pins its lookahead to K = 5 steps.
VARIANTS: dict[str, list[str]] = {
    "default": ["controller.variant=dense_lookahead_budget"],
    "paper": ["controller.variant=paper"],
    # the dense run with the lookahead, each mask trained K (not 2 K) steps, stopped after the
    # rounds that fit in 3 grid points
    "ahead_k_budget3": ["controller.variant=dense_lookahead", "controller.lookahead_steps=5",
                        "controller.budget_grid_points=3"],
    # the dense run scored at once (immediate reward), standardized advantages, same budget
    "dense_budget3": ["controller.variant=dense", "controller.budget_grid_points=3"],
    # issue 33's designs: no round wasted at a bound, controller + final run within 3.3 grid points
    "bounded": ["controller.variant=bounded"],
    # the same controller stopped within 1.3 grid points: with its final run and the anchor (a
    # finished run at HEDGE_ANCHOR, the grid's point there) it is the method `hedged`, 3.3 in all
    "bounded_short": ["controller.variant=bounded", "controller.budget_grid_points=1.3"],
    # late probing: the dense run's whole schedule, then the rounds at its best weights (2.3 grid
    # points with them, 3.3 with the final run)
    "late_probe": ["controller.variant=late_probe"],
}


def regime_config(args, name: str, extra: list[str] = ()):
    from grasp_lora.config import load_config

    regime = REGIMES[name]
    overrides = [*(DEMO_AS_MEASURED if regime["recipe"] == DEMO else []), f"grid.ratios={json.dumps(GRID)}",
                 "controller.p_max=0.95", f"pipeline.seeds={json.dumps(args.seeds)}", "pipeline.controller_per_seed=true",
                 *regime["overrides"]]
    if "data" in regime:
        from benchmarks.bench_real_data import subset_files

        if args.data is None:
            raise SystemExit(f"regime {name} reads XQuAD: pass --data ../shared/data/xquad")
        lang = regime["data"]
        files = subset_files(args.data, [lang], 8, args.work / "xquad")
        overrides += [f"data.target_lang={lang}", f"data.source_data={files['en']}", f"data.target_data={files[lang]}"]
    return load_config(regime["recipe"], [*overrides, *args.overrides, *extra])


def base_experiment(args, name: str):
    from grasp_lora.pipeline import Experiment

    exp = Experiment(regime_config(args, name), root=args.work / name, progress=not args.quiet, log=C._log(args.quiet))
    exp.prepare()
    exp.adapters()
    return exp


def evaluate_adapter(exp, adapter: Path, out: Path) -> dict[str, Any]:
    from benchmarks.bench_real_data import evaluate_adapter as ev

    return C.headline_metrics(ev(exp, adapter, out))


def run_grid(args, name: str) -> dict[str, Any]:
    """Every seed's grid, the selected ratio, and each seed's test scores there."""
    from grasp_lora.search.grid import point_dir

    exp = base_experiment(args, name)
    exp.grid()
    sel = exp.collect()
    out = {"ratios": GRID, "selected_ratio": sel["selected_ratio"], "per_ratio": sel["per_ratio"], "seeds": {}}
    for seed in args.seeds:
        s = sel["per_seed"][str(seed)]
        adapter = point_dir(exp.seed_dir(seed) / "grid", sel["selected_ratio"]) / "adapter"
        test = evaluate_adapter(exp, adapter, args.work / name / "eval" / f"grid_seed{seed}_{sel['selected_ratio']:.2f}")
        out["seeds"][str(seed)] = {"best_ratio": s["best_ratio"], "best_val_loss": s["best_val_loss"],
                                   "points": s["points"], "test": test}
    return out


def run_controller(args, name: str, variant: str) -> dict[str, Any]:
    """A controller run per seed, its final run, and their test scores."""
    from grasp_lora.io import read_json

    parent = base_experiment(args, name)
    cfg = regime_config(args, name, VARIANTS[variant] + args.controller_overrides)
    exp = C.child_experiment(parent, cfg, args.work / name / "variants" / variant, fresh=False)
    exp.grasp()
    exp.final()
    rows = {}
    for seed in args.seeds:
        ctrl = read_json(exp.grasp_dir(seed) / "result.json")
        final = read_json(exp.seed_dir(seed) / "final" / "result.json")
        test = evaluate_adapter(exp, exp.seed_dir(seed) / "final" / "adapter", exp.root / "eval" / f"seed{seed}")
        history = [json.loads(line) for line in (exp.grasp_dir(seed) / "history.jsonl").read_text().splitlines() if line]
        rows[str(seed)] = {"p_star": ctrl["p_star"], "val_loss": final["best_val_loss"], "test": test,
                           "controller_cpu_s": ctrl.get("cpu_s"), "final_cpu_s": final.get("cpu_s"),
                           "controller_wall_s": ctrl["wall_clock_s"], "final_wall_s": final["wall_clock_s"],
                           "rounds": ctrl["rounds"], "stopped": ctrl.get("stopped"),
                           "trajectory": [{k: h.get(k) for k in ("round", "p_c", "mu", "sigma", "candidates", "rewards")}
                                          for h in history]}
    return {"variant": variant, "overrides": VARIANTS[variant] + args.controller_overrides, "seeds": rows}


def run_optuna(args, name: str, budget_s: float) -> dict[str, Any]:
    """Optuna TPE + Hyperband per seed over [p_min, p_max] = [0.1, 0.95], each seed stopped once
    GRASP's wall-clock per seed (controller run + final run, `budget_s`) is spent."""
    parent = base_experiment(args, name)
    exp = C.child_experiment(parent, parent.cfg, args.work / name / "optuna", fresh=False)
    res = exp.optuna(n_trials=16, budget_s=budget_s)
    return {str(seed): {k: r[k] for k in ("best_ratio", "best_val_loss", "n_finished", "n_complete", "n_pruned",
                                          "stopped_by", "budget_s", "wall_clock_s", "total_trial_s")}
            for seed, r in res.items()}


# ----------------------------------------------------------------------------------------------
# the scoreboard


def grid_point_cpu_s(grid: dict[str, Any]) -> float:
    return statistics.fmean(p.get("cpu_s") or 0.0 for s in grid["seeds"].values() for p in s["points"])


def loss_at(seed_grid: dict[str, Any], ratio: float) -> float:
    return next(p["val_loss"] for p in seed_grid["points"] if abs(p["ratio"] - ratio) < 1e-9)


def mean_curve_regret(grid: dict[str, Any], ratio: float) -> float:
    """`ratio`'s loss on the regime's mean curve over seeds (linear between grid points) minus the
    curve's minimum: how far it is from the expected best, with each seed's own noise averaged out."""
    import numpy as np

    curve = [p["mean_val_loss"] for p in grid["per_ratio"]]
    return float(np.interp(ratio, [p["ratio"] for p in grid["per_ratio"]], curve)) - min(curve)


def case(seed: str, p_star: float, seed_grid: dict[str, Any], val_loss: float) -> dict[str, Any]:
    regret = val_loss - seed_grid["best_val_loss"]
    hit = regret <= REGRET_GOAL + 1e-9 or abs(p_star - seed_grid["best_ratio"]) <= GRID_STEP + 1e-9
    return {"seed": int(seed), "p_star": p_star, "seed_best_ratio": seed_grid["best_ratio"], "regret": regret, "hit": hit}


def regime_board(name: str, entry: dict[str, Any], variant: str) -> dict[str, Any] | None:
    grid = entry.get("grid")
    ctrl = entry.get("controllers", {}).get(variant)
    if grid is None:
        return None
    point = grid_point_cpu_s(grid)
    out: dict[str, Any] = {"name": name, "grid_ratios": grid["ratios"], "grid_mean_curve": [p["mean_val_loss"] for p in grid["per_ratio"]],
                           "best_ratio": grid["selected_ratio"], "grid_point_cpu_s": point,
                           "grid_selected_test": statistics.fmean(first_score(s["test"]) for s in grid["seeds"].values())}
    # the best of the 3-point grid, per seed (from the cache)
    g3 = []
    for seed, sg in grid["seeds"].items():
        r3 = min(GRID3, key=lambda r: loss_at(sg, r))
        g3.append(case(seed, r3, sg, loss_at(sg, r3)) | {"mean_curve_regret": mean_curve_regret(grid, r3)})
    out["grid3_cases"] = g3
    if ctrl is not None:
        cases, costs, tests = [], [], []
        for seed, row in ctrl["seeds"].items():
            cases.append(case(seed, row["p_star"], grid["seeds"][seed], row["val_loss"])
                         | {"mean_curve_regret": mean_curve_regret(grid, row["p_star"])})
            costs.append((row["controller_cpu_s"] or 0.0) / point)
            tests.append(first_score(row["test"]))
        out.update(controller_cost_grid_points=max(costs), controller_cost_grid_points_per_seed=costs,
                   cases=cases, mean_test=statistics.fmean(tests))
    if entry.get("optuna"):
        oc = []
        for seed, res in entry["optuna"].items():
            oc.append(case(seed, res["best_ratio"], grid["seeds"][seed], res["best_val_loss"]) | {"trials": res.get("n_finished")})
        out["optuna_cases"] = oc
    return out


def first_score(test: dict[str, float]) -> float:
    """The task's headline score: token F1 (QA) or ROUGE-L (summaries)."""
    for key in ("f1", "rougeL", "rouge_l"):
        if key in test:
            return test[key]
    return float("nan")


def summarize(report: dict[str, Any], variant: str) -> dict[str, Any]:
    regimes = [b for name, entry in report.get("regimes", {}).items() if (b := regime_board(name, entry, variant))]
    cases = [c for r in regimes for c in r.get("cases", [])]
    out = {"variant": variant, "regimes": regimes}
    if cases:
        out["hits"], out["cases"] = sum(c["hit"] for c in cases), len(cases)
        g3 = [c for r in regimes if r.get("cases") for c in r["grid3_cases"]]
        out["grid3_hits"] = sum(c["hit"] for c in g3)
        out["mean_regret"] = statistics.fmean(c["regret"] for c in cases)
        out["grid3_mean_regret"] = statistics.fmean(c["regret"] for c in g3)
        out["mean_curve_regret"] = statistics.fmean(c["mean_curve_regret"] for c in cases)
        out["grid3_mean_curve_regret"] = statistics.fmean(c["mean_curve_regret"] for c in g3)
        oc = [c for r in regimes if r.get("cases") for c in r.get("optuna_cases", [])]
        if oc:
            out["optuna_hits"], out["optuna_cases"] = sum(c["hit"] for c in oc), len(oc)
            out["optuna_mean_regret"] = statistics.fmean(c["regret"] for c in oc)
    return out


def print_board(board: dict[str, Any]) -> None:
    rows = []
    for r in board["regimes"]:
        curve = " ".join(f"{x:.3f}" for x in r["grid_mean_curve"])
        rows.append([r["name"], r["best_ratio"], curve, r.get("controller_cost_grid_points"),
                     " ".join(f"{c['p_star']:.2f}/{c['seed_best_ratio']:.2f}{'+' if c['hit'] else '-'}" for c in r.get("cases", [])),
                     " ".join(f"{c['p_star']:.2f}{'+' if c['hit'] else '-'}" for c in r["grid3_cases"]),
                     r.get("mean_test"), r["grid_selected_test"]])
    C.print_table(["regime", "best", "mean curve (val loss)", "ctrl cost (grid pts)", "p*/seed best (hit)",
                   "3-pt grid", "test", "grid test"], rows)
    if "cases" in board:
        print(f"\n{board['variant']}: {board['hits']}/{board['cases']} hits, mean regret {board['mean_regret']:.4f}; "
              f"3-point grid {board['grid3_hits']}/{board['cases']}, mean regret {board['grid3_mean_regret']:.4f}")
        print(f"on the regimes' mean curves: {board['variant']} {board['mean_curve_regret']:.4f}, "
              f"3-point grid {board['grid3_mean_curve_regret']:.4f}")
        if "optuna_hits" in board:
            print(f"Optuna at GRASP's budget: {board['optuna_hits']}/{board['optuna_cases']} hits, "
                  f"mean regret {board['optuna_mean_regret']:.4f}")


def rule_analysis(report: dict[str, Any], variant: str) -> list[dict[str, Any]]:
    """What other p* rules and round caps would have answered on the recorded runs of `variant`.

    A dense controller run's trajectory does not depend on its p* rule, and a run capped at R rounds
    is the first R rounds of the uncapped one (tests/test_grasp_search.py), so both can be read off
    the histories without training. The validation loss at such a p* is interpolated linearly on the
    seed's grid curve (the real final runs are the check: `interp_check` compares the interpolation
    at each run's own p* with its final run's loss)."""
    import numpy as np

    from grasp_lora.config import ControllerConfig
    from grasp_lora.controller.grpo import GRPOController

    out = []
    for name, entry in report.get("regimes", {}).items():
        grid, ctrl = entry.get("grid"), entry.get("controllers", {}).get(variant)
        if grid is None or ctrl is None:
            continue
        for seed, row in ctrl["seeds"].items():
            sg = grid["seeds"][seed]
            ratios, losses = [p["ratio"] for p in sg["points"]], [p["val_loss"] for p in sg["points"]]
            interp = lambda r: float(np.interp(r, ratios, losses))  # noqa: E731
            # losses up to each round's L0 (a per-round constant: the fit's intercepts absorb it); p_c
            # only moves on a commit, so the last record's p_c is the `final` rule's answer
            history = [{**h, "losses": [-x for x in h["rewards"]], "committed_ratio": h["p_c"]} for h in row["trajectory"]]
            cfg = ControllerConfig(p_min=0.1, p_max=0.95)
            res = {"regime": name, "seed": int(seed), "seed_best_ratio": sg["best_ratio"], "p_star": row["p_star"],
                   "interp_check": interp(row["p_star"]) - row["val_loss"], "rules": {}}
            for rounds in range(1, len(history) + 1):
                c = GRPOController(cfg)
                c.history = history[:rounds]
                for rule in ("final", "best_trial", "fit"):
                    p = c.p_star(rule)
                    k = case(seed, p, sg, interp(p))
                    res["rules"][f"{rule}@{rounds}"] = {"p_star": p, "regret": k["regret"], "hit": k["hit"]}
            out.append(res)
    return out


def noise_ceiling(report: dict[str, Any]) -> dict[str, Any]:
    """How many cases rules that never see the case's own training could hit, from the grids alone.

    A hit is judged against the seed's own 8-point curve, whose neighbouring points differ by up to
    0.2-0.4 in validation loss from run-to-run noise. `other_seeds_best` knows the two other seeds'
    whole grids and picks their mean curve's best ratio: the most any rule can learn about a regime's
    expected curve without training the seed at several ratios (a controller run sees less).
    `constant_<r>` answers r everywhere; `random` is the expected hits of a grid ratio drawn
    uniformly. The 3-point grid, by contrast, picks among the seed's own realised runs.
    `grid_after_epoch_1` does train the seed at every ratio, but picks by the validation loss after
    the first of two epochs (from the grid points' train logs, where the cache still has them): how
    well a half-fidelity look predicts the final curve (what Hyperband and any short lookahead rely on)."""
    rules: dict[str, list[dict[str, Any]]] = {}
    for name, entry in report.get("regimes", {}).items():
        grid = entry.get("grid")
        if grid is None:
            continue
        seeds = grid["seeds"]
        for seed, sg in seeds.items():
            others = [o for o in seeds if o != seed]
            if others:
                mean = {r: statistics.fmean(loss_at(seeds[o], r) for o in others) for r in grid["ratios"]}
                p = min(mean, key=mean.get)
                rules.setdefault("other_seeds_best", []).append(case(seed, p, sg, loss_at(sg, p)) | {"regime": name})
            at = {r: case(seed, r, sg, loss_at(sg, r)) | {"regime": name} for r in grid["ratios"]}
            for r, k in at.items():
                rules.setdefault(f"constant_{r:g}", []).append(k)
            rules.setdefault("random", []).append({"hit": statistics.fmean(k["hit"] for k in at.values()), "regret": statistics.fmean(
                k["regret"] for k in at.values()), "regime": name, "seed": int(seed)})
            half = {p["ratio"]: v for p in sg["points"] if (v := first_epoch_val_loss(p)) is not None}
            if len(half) == len(sg["points"]):
                rules.setdefault("grid_after_epoch_1", []).append(at[min(half, key=half.get)])
    return {rule: {"cases": len(cs), "hits": sum(c["hit"] for c in cs), "mean_regret": statistics.fmean(c["regret"] for c in cs),
                   "per_case": cs} for rule, cs in rules.items()}


def first_epoch_val_loss(point: dict[str, Any]) -> float | None:
    """A grid point's validation loss after its first epoch, from its train log next to the adapter."""
    from grasp_lora.io import read_jsonl
    from grasp_lora.training.adapters import TRAIN_LOG

    log = Path(point.get("adapter") or "").parent / TRAIN_LOG
    if not point.get("adapter") or not log.is_file():
        return None
    return next((e.get("val_loss") for e in read_jsonl(log) if e.get("event") == "epoch" and e.get("epoch") == 1), None)


def print_noise_ceiling(ceiling: dict[str, Any]) -> None:
    C.print_table(["rule (never picks among the seed's finished runs)", "cases", "hits", "mean regret"],
                  [[k, v["cases"], v["hits"], v["mean_regret"]] for k, v in ceiling.items()])


def print_rule_analysis(rows: list[dict[str, Any]]) -> None:
    keys = sorted({k for r in rows for k in r["rules"]}, key=lambda k: (k.split("@")[0], int(k.split("@")[1])))
    table = []
    for k in keys:
        have = [r["rules"][k] for r in rows if k in r["rules"]]
        table.append([k, len(have), sum(h["hit"] for h in have), statistics.fmean(h["regret"] for h in have)])
    C.print_table(["rule@rounds", "cases", "hits", "mean regret (interpolated)"], table)
    print("interpolation check (grid curve at p* minus the real final run's loss):",
          " ".join(f"{r['regime']}/{r['seed']} {r['interp_check']:+.3f}" for r in rows))


def markdown(board: dict[str, Any]) -> str:
    """The scoreboard as BENCHMARKS.md's tables: the grid curves, then every case."""
    head = "| regime | " + " | ".join(f"{r:g}" for r in GRID) + " | best (mean) | seeds' bests |"
    lines = [head, "|---|" + "---:|" * (len(GRID) + 1) + "---|"]
    for r in board["regimes"]:
        curve = r["grid_mean_curve"]
        cells = [f"**{v:.3f}**" if abs(g - r["best_ratio"]) < 1e-9 else f"{v:.3f}" for g, v in zip(GRID, curve)]
        bests = ", ".join(f"{c['seed_best_ratio']:g}" for c in r["grid3_cases"])
        lines.append(f"| {r['name']} | " + " | ".join(cells) + f" | {r['best_ratio']:g} | {bests} |")
    lines += ["", "| regime | seed | seed's best | GRASP p* | regret | hit | 3-point grid | its regret | hit |"
              " controller cost (grid points) |", "|---|---:|---:|---:|---:|---|---:|---:|---|---:|"]
    for r in board["regimes"]:
        for i, (c, g) in enumerate(zip(r.get("cases", []), r["grid3_cases"])):
            cost = r["controller_cost_grid_points_per_seed"][i]
            lines.append(f"| {r['name']} | {c['seed']} | {c['seed_best_ratio']:g} | {c['p_star']:.2f} | {c['regret']:+.3f} | "
                         f"{'yes' if c['hit'] else 'no'} | {g['p_star']:g} | {g['regret']:+.3f} | {'yes' if g['hit'] else 'no'} | "
                         f"{cost:.2f} |")
    if any(r.get("optuna_cases") for r in board["regimes"]):
        lines += ["", "| regime | seed | seed's best | Optuna's best ratio | regret | hit | finished trials |",
                  "|---|---:|---:|---:|---:|---|---:|"]
        for r in board["regimes"]:
            for c in r.get("optuna_cases", []):
                lines.append(f"| {r['name']} | {c['seed']} | {c['seed_best_ratio']:g} | {c['p_star']:.2f} | {c['regret']:+.3f} | "
                             f"{'yes' if c['hit'] else 'no'} | {c.get('trials')} |")
    if board.get("noise_ceiling"):
        lines += ["", "| rule (never picks among the seed's finished runs) | hits | mean regret |", "|---|---:|---:|"]
        lines += [f"| {k} | {v['hits']:g}/{v['cases']} | {v['mean_regret']:+.3f} |" for k, v in board["noise_ceiling"].items()]
    return "\n".join(lines)


# ==============================================================================================
# Suite v2: an evaluation with the power to rank ratio-selection methods
#
# What changed from the suite above (v1, whose results stay in bench_regimes_<regime>.json and
# bench_regimes_scoreboard.json):
#   - a case is (regime, seed) with its OWN data split (`data.seed` = the seed), its own stage-1
#     adapters and its own run folder, so cases are independent draws;
#   - a larger judging set: target test 200 and validation 50 where the pool allows (`*_V2` sizes);
#   - the judge is what the user gets: every method's returned adapter scored on the test split's
#     TEST LOSS (teacher-forced mean target-token loss on the gold answers / summaries, the
#     validation loss's definition: `training.loss.per_example_losses`, per example, kept) and on the
#     task metric (F1 / ROUGE-L) of each method's pick. Every grid point is scored on test loss
#     once (cached), so the grid-picking methods (grid8, grid3, constant) cost no extra run;
#   - methods: `grasp` (the default controller's final run), `grid3` (best of {0.2, 0.5, 0.8} by
#     validation loss), `grid8` (best of the 8-point grid), `optuna` (TPE + Hyperband at GRASP's CPU
#     budget), `constant` (the controller's p_init, 0.4, trained once), `no_pruning` (the adaptive
#     merge: ratio 0), and any other controller variant run (`--variant NAME`);
#   - statistics (benchmarks/_stats.py): paired differences over cases with a bootstrap 95% CI and a
#     sign test, leave-one-seed-out regret on the regime's mean validation curve; hits remain as a
#     secondary column (they favour in-sample pickers: grid8 hits every case by construction).

SEEDS_V2 = [42, 1337, 9001, 31337]
METHODS = ["grasp", "grid3", "grid8", "optuna", "constant", "no_pruning", "paper", "bounded", "hedged", "late_probe"]
DEFAULT_METHOD = "grasp"
DEFAULT_VARIANT_LABEL = "default"  # `--variant default`: the method `grasp`
METRIC_OF_TASK = {"mlqa": "f1", "xlsum": "rouge_l"}
XLSUM = {"ar": REPO / "configs" / "xlsum_ar.yaml", "zh": REPO / "configs" / "xlsum_zh.yaml"}
RECORDS_V2 = C.RESULTS_DIR / "bench_regimes_v2"
SCOREBOARD_V2 = C.RESULTS_DIR / "bench_regimes_v2_scoreboard.json"
OPTUNA_MAX_TRIALS = 16

# Settings of every v2 case: the 8-point grid, the controller's range up to the grid's top, one
# controller per seed, the adaptive merge as the only baseline (no_pruning), no BERTScore (the
# judge's metric is F1 / ROUGE-L).
V2_COMMON = [f"grid.ratios={json.dumps(GRID)}", "controller.p_max=0.95", "pipeline.controller_per_seed=true",
             'pipeline.baselines=["adaptive_merge"]', "eval.bertscore=false"]
# The demo as the v1 suite measured it (source train 40, target train 32), with the v2 judging set:
# target validation 50 and test 200 (the demo pools hold 360 rows per language).
DEMO_V2 = ["data.source_sizes={train: 40, val: 8, micro_dev: 0, test: 0}",
           "data.target_sizes={train: 32, val: 50, micro_dev: 8, test: 200}"]
# XQuAD (after its first 8 articles, the source's: 407 target questions in 80 passages), split by
# passage. K = 5 (the 6 optimizer steps of an epoch on 24 examples), the default's lookahead K steps
# as configs/demo.yaml pins it.
XQUAD_V2 = ["data.split_by=context", "data.source_sizes={train: 40, val: 8, micro_dev: 0, test: 0}",
            "data.target_sizes={train: 24, val: 50, micro_dev: 8, test: 200}", "controller.every_k_steps=5",
            "controller.lookahead_steps=5", "controller.micro_dev_size=8", "generation.max_new_tokens=24"]
# Real summaries (../shared/data/summaries: 99 Arabic, 106 Chinese, 151 English pairs): the pools
# allow neither test 200 nor validation 50; the target splits use the whole pool. Otherwise
# bench_summaries' CPU recipe (Gemma 3 270M, articles cut at 256 tokens, one-sentence summaries).
SUMMARIES_CPU = ["model.name=gemma-3-270m", "data.max_article_tokens=256", "generation.max_new_tokens=48",
                 "train.lr=1e-3", "train.grad_accum=4", "train.epochs=2", "train.patience=2",
                 "controller.score_batch_size=1", "data.split_by=context", "controller.every_k_steps=5",
                 "controller.lookahead_steps=5", "controller.micro_dev_size=8",
                 "data.source_sizes={train: 100, val: 10, micro_dev: 0, test: 0}"]
SUMMARIES_V2 = {"zh": [*SUMMARIES_CPU, "data.target_sizes={train: 24, val: 24, micro_dev: 8, test: 50}"],
                "ar": [*SUMMARIES_CPU, "data.target_sizes={train: 24, val: 20, micro_dev: 8, test: 47}"]}

# Each regime: recipe, overrides (after V2_COMMON and the case's seed), whether it reads real data
# (`data`: ("xquad" | "summaries", language)), and where its cost is calibrated (`calibration`: a
# committed result with grid points of the same recipe, and the sizes they were measured at).
_DEMO_CAL = {"file": "bench_regimes_demo.json", "kind": "regime", "train": 32, "val": 12, "epochs": 2}
REGIMES_V2: dict[str, dict[str, Any]] = {
    # the demo (template data, Gemma 3 270M, lr 1e-3, 2 epochs): v1's mean curve best at 0.2
    "demo": {"recipe": DEMO, "overrides": DEMO_V2, "calibration": _DEMO_CAL},
    # lr 3e-3: v1 best at 0.5 (0.1-0.2 clearly worse)
    "demo_lr3e-3": {"recipe": DEMO, "overrides": [*DEMO_V2, "train.lr=3e-3"],
                    "calibration": {**_DEMO_CAL, "file": "bench_regimes_demo_lr3e-3.json"}},
    # 8 source examples: a weaker English adapter; v1 best at 0.4
    "demo_few_source": {"recipe": DEMO, "overrides": [*DEMO_V2, "data.source_sizes={train: 8, val: 8, micro_dev: 0, test: 0}"],
                        "calibration": {**_DEMO_CAL, "file": "bench_regimes_demo_few_source.json"}},
    # the merge scaled by alpha / r: v1 best at 0.95 (the top of the range)
    "demo_lora_scaling": {"recipe": DEMO, "overrides": [*DEMO_V2, "merge.scaling=lora"],
                          "calibration": {**_DEMO_CAL, "file": "bench_regimes_demo_lora_scaling.json"}},
    # the paper's learning rate 1e-4 and its 10 epochs (early stopping, patience 2, ends a run once
    # validation stops improving: the cost estimate counts all 10); not measured in v1
    "demo_lr1e-4": {"recipe": DEMO, "overrides": [*DEMO_V2, "train.lr=1e-4", "train.epochs=10", "train.patience=2"],
                    "calibration": _DEMO_CAL},
    # three times the target training data (96; the pool's 360 rows hold 96 + 50 + 8 + 200): the
    # regime meant to have its best at no pruning or the lowest ratio (more data, less to regularise)
    "demo_more_data": {"recipe": DEMO, "overrides": [DEMO_V2[0], "data.target_sizes={train: 96, val: 50, micro_dev: 8, test: 200}"],
                       "calibration": _DEMO_CAL},
    # real XQuAD en -> ar / zh, split by passage
    "xquad_ar": {"recipe": REAL, "overrides": ["data.target_lang=ar", *XQUAD_V2], "data": ("xquad", "ar"),
                 "calibration": {"file": "bench_real_data_ar_context.json", "kind": "real_data", "lang": "ar",
                                 "train": 50, "val": 50, "epochs": 2}},
    "xquad_zh": {"recipe": REAL, "overrides": ["data.target_lang=zh", *XQUAD_V2], "data": ("xquad", "zh"),
                 "calibration": {"file": "bench_real_data_zh_context.json", "kind": "real_data", "lang": "zh",
                                 "train": 50, "val": 50, "epochs": 2}},
    # real summaries en -> zh (XSum English articles as the source); ar is defined, not in the suite
    "summaries_zh": {"recipe": XLSUM["zh"], "overrides": SUMMARIES_V2["zh"], "data": ("summaries", "zh"),
                     "calibration": {"file": "bench_summaries.json", "kind": "summaries", "key": "zh_256", "points": 8,
                                     "train": 40, "val": 20, "epochs": 2}},
    "summaries_ar": {"recipe": XLSUM["ar"], "overrides": SUMMARIES_V2["ar"], "data": ("summaries", "ar"),
                     "calibration": {"file": "bench_summaries.json", "kind": "summaries", "key": "ar_256", "points": 8,
                                     "train": 40, "val": 20, "epochs": 2}},
}
# The suite, in the order `--phase all` takes cases (seed-major, so an interrupted suite has every
# regime at the same number of seeds): three demo regimes whose v1 curves had their best low (demo),
# in the middle (lr 3e-3, few source) and at the top (lora scaling), and real XQuAD en -> ar, zh.
SUITE_V2 = ["demo", "demo_lr3e-3", "demo_few_source", "demo_lora_scaling", "xquad_ar", "xquad_zh"]
# Defined and runnable (--regimes), after the suite: real summaries and the two costliest regimes
# (demo_lr1e-4 is 2.9x a demo case: 10 epochs; demo_more_data 1.5x).
EXTRA_V2 = ["summaries_zh", "demo_more_data", "demo_lr1e-4"]
# The methods `--phase all` runs for every case: the shipped default controller, the paper's
# controller (the ablation the next issue starts from), Optuna at the default's CPU budget.
ALL_CONTROLLERS = ["default", "paper"]
# Issue 33's designs, run after the suite's own methods (`--phase all --controllers ...`).
DESIGN_CONTROLLERS = ["bounded", "bounded_short", "late_probe"]
# The hedge (Hyperband's full-budget bracket): the controller's answer against a finished run at a
# low ratio, the better on validation returned. A grid point is exactly that finished run (same
# recipe, seed and ratio), so the anchor's run is read from the case's grid, its cost counted.
HEDGE_ANCHOR = 0.2
HEDGED = {"hedged": "bounded_short"}  # derived method -> the controller variant it hedges


def method_name(label: str) -> str:
    """The scoreboard's name of a controller variant's runs: the default's is `grasp`."""
    return DEFAULT_METHOD if label == DEFAULT_VARIANT_LABEL else label


def regime_v2_config(name: str, seed: int, overrides: Sequence[str] = (), data: Sequence[str] = ()):
    """The config of case (regime `name`, `seed`): the case's own data split, training seed and
    controller seed. `data`: the real-data file overrides (`data_overrides`), `overrides` the user's."""
    from grasp_lora.config import load_config

    regime = REGIMES_V2[name]
    return load_config(regime["recipe"], [*V2_COMMON, f"data.seed={seed}", f"pipeline.seeds=[{seed}]",
                                          *regime["overrides"], *data, *overrides])


def data_overrides(args, name: str) -> list[str]:
    """The source and target files of a real-data regime (nothing is copied into the repository)."""
    regime = REGIMES_V2[name]
    if "data" not in regime:
        return []
    kind, lang = regime["data"]
    if kind == "xquad":
        from benchmarks.bench_real_data import subset_files

        if args.data is None:
            raise SystemExit(f"regime {name} reads XQuAD: pass --data ../shared/data/xquad")
        files = subset_files(args.data, [lang], 8, args.work / "xquad")
        return [f"data.source_data={files['en']}", f"data.target_data={files[lang]}"]
    from benchmarks.bench_summaries import data_files

    if args.summaries_data is None:
        raise SystemExit(f"regime {name} reads real summaries: pass --summaries-data ../shared/data/summaries")
    source, target = data_files(args.summaries_data, lang)
    return [f"data.source_data={source}", f"data.target_data={target}"]


def case_root(args, name: str, seed: int) -> Path:
    return args.work / "v2" / name / f"seed_{seed}"


def record_path(args, name: str, seed: int) -> Path:
    return args.records / f"{name}_seed{seed}.json"


def read_case(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())["case"] if path.exists() else {}


def write_case(args, path: Path, update) -> dict[str, Any]:
    """Re-read the case's record, apply `update(case)`, write it back (every step of a phase ends
    here, so a killed phase keeps what it finished)."""
    report = json.loads(path.read_text()) if path.exists() else {}
    header = C.run_header("bench_regimes", args)
    report.update(header)
    report.setdefault("commands", {})[args.phase] = header["command"]  # each phase's last command
    case = report.setdefault("case", {})
    update(case)
    path.parent.mkdir(parents=True, exist_ok=True)
    C.write_report(json.loads(json.dumps(report, default=str)), path)
    return case


def case_experiment(args, name: str, seed: int):
    """The case's run folder with its data and stage-1 adapters (trained here the first time) and
    the CPU seconds that took. A later phase must use the settings the grid phase recorded (the
    same --set overrides): the cached runs of the case were made with them."""
    from grasp_lora.config import config_hash, save_config
    from grasp_lora.pipeline import Experiment

    cfg = regime_v2_config(name, seed, args.overrides, data_overrides(args, name))
    recorded = read_case(record_path(args, name, seed)).get("config_hash")
    root = case_root(args, name, seed)
    if recorded is not None and recorded != config_hash(cfg):
        # the record's own copy of the config (a fresh clone has no cache), else the cache's
        saved = read_case(record_path(args, name, seed)).get("config")
        changed = settings_changed(root / "config.yaml", cfg) if saved is None else config_changes(saved, cfg)
        if changed is None or changed:
            what = "" if not changed else " (" + ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items()) + ")"
            raise SystemExit(f"{name} seed {seed}: the case was started with other settings (config hash {recorded}, "
                             f"now {config_hash(cfg)}){what}; pass the same --set overrides, or use another --work "
                             "and --records")
    root.mkdir(parents=True, exist_ok=True)
    exp = Experiment(cfg, root=root, progress=not args.quiet, log=C._log(args.quiet))
    save_config(cfg, root / "config.yaml")
    with C.CpuWallTimer() as t:
        exp.prepare()
        exp.adapters()
    digests = stage1_digests(exp)
    recorded = read_case(record_path(args, name, seed)).get("stage1_digests")
    if recorded is not None and recorded != digests:
        # the cache is gone (a new session's fresh clone) and stage 1 was trained again: its runs
        # would not continue the recorded ones
        raise CaseCannotContinue(f"{name} seed {seed}: the stage-1 adapters trained now differ from the ones the case's "
                         f"recorded runs used ({digests} vs {recorded}); the case cannot be continued, start it again "
                         f"(delete {record_path(args, name, seed)})")
    return exp, t


class CaseCannotContinue(SystemExit):
    """A case whose recorded runs this process cannot continue (`--phase all` skips it)."""


def stage1_digests(exp) -> dict[str, str]:
    """The SHA-256 of each stage-1 adapter's weights: a later session, whose fresh clone has no
    cache, retrains them, and may continue the case only if they come out the same."""
    from grasp_lora.fingerprint import file_digest

    return {Path(d).name: file_digest(Path(d) / "adapter_model.safetensors") for d in exp.layout.source_target_adapters}


def settings_changed(saved: Path, cfg) -> dict[str, tuple[Any, Any]] | None:
    """`config_changes` against the config file a case saved; None when there is none."""
    import yaml

    if not saved.is_file():
        return None
    return config_changes(yaml.safe_load(saved.read_text()), cfg)


def config_changes(saved: dict[str, Any], cfg) -> dict[str, tuple[Any, Any]]:
    """What differs between a case's saved config (a dict) and `cfg`, as a run folder's resume
    judges it: a key the package added since, at the value that keeps the old behaviour, is no
    difference (`fingerprint.ADDED_KEYS`)."""
    from grasp_lora.fingerprint import _diff, flatten

    return _diff(flatten(saved), flatten(cfg.to_dict()))


def adapter_key(exp, adapter: Path) -> str:
    """An adapter's name within its case: the run folder holding it, relative to the case root."""
    return Path(adapter).absolute().parent.relative_to(exp.root.absolute()).as_posix()


def split_examples(exp, tok, split: str) -> list[dict]:
    """The target split encoded as the runs encode their training and validation examples."""
    return C.encode_rows(exp, exp.cfg, exp.rows(exp.cfg.data.target_lang, split))


def score_test_loss(exp, adapter: Path, split: str = "test") -> dict[str, Any]:
    """The adapter's test loss: per test example, the teacher-forced mean target-token loss on the
    gold answer / summary (`training.loss.per_example_losses`, as the validation loss), with the
    adapter folded into a fresh base model. Cached per adapter under <case>/eval/test_loss/.
    `split="val"` scores the validation split the same way (the check that the exported adapter is
    the run the training loop validated)."""
    from grasp_lora.evaluation.run import with_adapter
    from grasp_lora.io import read_json, write_json
    from grasp_lora.training.loss import per_example_losses

    key = adapter_key(exp, adapter)
    cache = exp.root / "eval" / f"{split}_loss" / (key.replace("/", "__") + ".json")
    ids = [r.get("id") for r in exp.rows(exp.cfg.data.target_lang, split)]
    weights = Path(adapter) / "adapter_model.safetensors"
    stamp = weights.stat().st_mtime_ns if weights.exists() else None
    if cache.is_file():
        cached = read_json(cache)
        if cached.get("adapter") == str(adapter) and cached.get("ids") == ids and cached.get("adapter_mtime_ns") == stamp:
            return cached
    with C.CpuWallTimer() as t:
        model, tok = exp.base_model()
        model = with_adapter(model, adapter)
        losses = per_example_losses(model, split_examples(exp, tok, split), exp.cfg.train.eval_batch_size)
        del model
    out = {"adapter": str(adapter), "adapter_mtime_ns": stamp, "key": key, "n": len(losses),
           "loss": float(losses.mean()) if len(losses) else None, "losses": [round(float(x), 6) for x in losses],
           "ids": ids, "cpu_s": t.cpu_s, "wall_s": t.wall_s}
    write_json(cache, out)
    return out


def test_record(scored: dict[str, Any]) -> dict[str, Any]:
    """What a case record keeps of a test-loss scoring (the ids are kept once per case)."""
    return {k: scored[k] for k in ("loss", "n", "losses", "cpu_s")}


def run_result(folder: Path) -> dict[str, Any]:
    from grasp_lora.io import read_json

    return read_json(folder / "result.json")


def case_header(exp, name: str, seed: int) -> dict[str, Any]:
    from grasp_lora.config import config_hash

    cfg = exp.cfg
    sizes = lambda s: None if s is None else {k: getattr(s, k) for k in ("train", "val", "micro_dev", "test")}  # noqa: E731
    return {"regime": name, "seed": seed, "suite": "v2", "real_data": "data" in REGIMES_V2[name],
            "task": cfg.data.task, "metric": METRIC_OF_TASK[cfg.data.task], "target_lang": cfg.data.target_lang,
            "overrides": REGIMES_V2[name]["overrides"], "source_sizes": sizes(cfg.data.source_sizes),
            "target_sizes": sizes(cfg.data.target_sizes), "epochs": cfg.train.epochs, "p_init": cfg.controller.p_init,
            "grid_ratios": list(cfg.grid.ratios), "root": str(exp.root), "config_hash": config_hash(cfg),
            "config": cfg.to_dict(),  # write_case makes it JSON
            "test_ids": [r.get("id") for r in exp.rows(cfg.data.target_lang, "test")]}


def run_case_grid(args, name: str, seed: int) -> None:
    """Stage-1 adapters, the 8-point grid and the no-pruning run of one case, each scored on test loss."""
    path = record_path(args, name, seed)
    exp, stage1 = case_experiment(args, name, seed)
    header = case_header(exp, name, seed) | {"user_overrides": list(args.overrides)}

    digests = stage1_digests(exp)

    def start(case):
        case.update(header)
        case["stage1_digests"] = digests
        if stage1.cpu_s > 1.0 or "stage1_cpu_s" not in case:  # a cached stage 1 costs nothing now
            case["stage1_cpu_s"] = stage1.cpu_s

    write_case(args, path, start)
    exp.grid()
    points = []
    for i, p in enumerate(exp.collect()["per_seed"][str(seed)]["points"]):
        adapter = Path(p["adapter"])
        points.append({"ratio": p["ratio"], "val_loss": p["val_loss"], "cpu_s": p.get("cpu_s"), "wall_s": p.get("wall_clock_s"),
                       "real_sparsity": p.get("real_sparsity"), "key": adapter_key(exp, adapter),
                       "test": test_record(score_test_loss(exp, adapter))})
        if i == 0:  # the scoring path (exported adapter folded into the base) against the loop's validation
            points[0]["val_check"] = score_test_loss(exp, adapter, "val")["loss"] - p["val_loss"]
        write_case(args, path, lambda case: case.update(grid={"ratios": header["grid_ratios"], "points": points}))
    exp.baselines()  # pipeline.baselines = [adaptive_merge]: the merged run without pruning
    folder = exp.layout.baseline_dir("adaptive_merge")
    res = run_result(folder)
    no_pruning = {"ratio": 0.0, "val_loss": res["best_val_loss"], "cpu_s": res.get("cpu_s"), "wall_s": res.get("wall_clock_s"),
                  "key": adapter_key(exp, folder / "adapter"), "test": test_record(score_test_loss(exp, folder / "adapter"))}
    write_case(args, path, lambda case: case.update(no_pruning=no_pruning))
    if not args.skip_metric:
        fill_metrics(args, name, seed, exp)


def run_case_controller(args, name: str, seed: int, variant: str) -> None:
    """A controller run of `variant` for the case and its final run, scored on test loss."""
    path = record_path(args, name, seed)
    parent, _ = case_experiment(args, name, seed)
    overrides = VARIANTS[variant] + args.controller_overrides
    label = variant + "".join(f"+{o}" for o in args.controller_overrides)
    cfg = regime_v2_config(name, seed, [*args.overrides, *overrides], data_overrides(args, name))
    exp = C.child_experiment(parent, cfg, parent.root / "variants" / label.replace("/", "_"), fresh=False)
    exp.grasp()
    exp.final()
    ctrl, final = run_result(exp.grasp_dir(seed)), run_result(exp.seed_dir(seed) / "final")
    adapter = exp.seed_dir(seed) / "final" / "adapter"
    history = [json.loads(line) for line in (exp.grasp_dir(seed) / "history.jsonl").read_text().splitlines() if line]
    row = {"variant": variant, "overrides": overrides, "p_star": ctrl["p_star"], "val_loss": final["best_val_loss"],
           "controller_cpu_s": ctrl.get("cpu_s"), "final_cpu_s": final.get("cpu_s"),
           "controller_wall_s": ctrl.get("wall_clock_s"), "final_wall_s": final.get("wall_clock_s"),
           "rounds": ctrl.get("rounds"), "stopped": ctrl.get("stopped"), "key": adapter_key(parent, adapter),
           "test": test_record(score_test_loss(parent, adapter)),
           "trajectory": [{k: h.get(k) for k in ("round", "p_c", "mu", "sigma", "candidates", "rewards")} for h in history]}
    write_case(args, path, lambda case: case.setdefault("controllers", {}).__setitem__(label, row))
    if not args.skip_metric:
        fill_metrics(args, name, seed, parent)


def run_case_optuna(args, name: str, seed: int) -> None:
    """Optuna TPE + Hyperband over [p_min, p_max] with GRASP's CPU seconds for this case (its
    controller run + final run) as its budget, counted in the search's own CPU seconds and spent
    whole (`budget_rule="spend"`: trials start while half a trial's cost is left, so the search
    ends as near the budget as whole trials allow). Its returned adapter (the best trial's) is scored."""
    from grasp_lora.io import manifest_complete, read_json

    path = record_path(args, name, seed)
    grasp = read_case(path).get("controllers", {}).get(DEFAULT_VARIANT_LABEL)
    if grasp is None:
        raise SystemExit(f"{name} seed {seed}: run --phase controller --variant {DEFAULT_VARIANT_LABEL} first "
                         "(Optuna's budget is GRASP's CPU seconds)")
    budget = (grasp["controller_cpu_s"] or 0.0) + (grasp["final_cpu_s"] or 0.0)
    parent, _ = case_experiment(args, name, seed)
    exp = C.child_experiment(parent, parent.cfg, parent.root / "optuna", fresh=False)
    folder = exp.layout.optuna_dir(seed)
    # a finished search is read, not resumed: a second call would start a new budget
    res = (read_json(folder / "result.json") if manifest_complete(folder)
           else exp.optuna(OPTUNA_MAX_TRIALS, budget, budget_clock="cpu", budget_rule="spend")[seed])
    spent = 0.0
    for t in res["trials"]:
        f = Path(t["dir"]) / "result.json"
        if t["state"] in ("complete", "pruned") and f.exists():
            spent += read_json(f).get("cpu_s") or 0.0
    adapter = Path(res["best_adapter"])
    row = {"best_ratio": res["best_ratio"], "best_val_loss": res["best_val_loss"], "budget_cpu_s": budget, "cpu_s": spent,
           **{k: res.get(k) for k in ("n_finished", "n_complete", "n_pruned", "stopped_by", "wall_clock_s", "total_trial_s")},
           "key": adapter_key(parent, adapter), "test": test_record(score_test_loss(parent, adapter))}
    write_case(args, path, lambda case: case.update(optuna=row))
    if not args.skip_metric:
        fill_metrics(args, name, seed, parent)


def fill_metrics(args, name: str, seed: int, exp=None) -> None:
    """The task metric (F1 / ROUGE-L, generated on the test split) of every method's pick that has
    none yet; each adapter once (grid3 and grid8 often pick the same point)."""
    from benchmarks.bench_real_data import evaluate_adapter

    path = record_path(args, name, seed)
    case = read_case(path)
    todo = {}
    for m in case_methods(case).values():
        if m.get("key") and m["key"] not in case.get("metrics", {}):
            todo[m["key"]] = m["key"]
    if not todo:
        return
    if exp is None:
        exp, _ = case_experiment(args, name, seed)
    for key in todo:
        with C.CpuWallTimer() as t:
            metrics = C.headline_metrics(evaluate_adapter(exp, exp.root / key / "adapter",
                                                          exp.root / "eval" / "metric" / key.replace("/", "__")))
        metrics["cpu_s"] = t.cpu_s
        write_case(args, path, lambda case: case.setdefault("metrics", {}).__setitem__(key, metrics))


# ----------------------------------------------------------------------------------------------
# the v2 scoreboard (pure functions of the case records)


def _at(points: list[dict[str, Any]], ratio: float) -> dict[str, Any] | None:
    return next((p for p in points if abs(p["ratio"] - ratio) < 1e-9), None)


def case_methods(case: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every method's answer for one case record: its ratio, validation loss, test loss, task
    metric and CPU seconds (what the user pays for the method on one seed: every run it trains)."""
    metric, metrics = case.get("metric", "f1"), case.get("metrics", {})

    def row(ratio, val_loss, run, cpu_s, **extra):
        m = metrics.get(run.get("key"))
        return {"ratio": ratio, "val_loss": val_loss, "test_loss": (run.get("test") or {}).get("loss"),
                "test_metric": None if m is None else m.get(metric), "cpu_s": cpu_s, "key": run.get("key"), **extra}

    out: dict[str, dict[str, Any]] = {}
    points = (case.get("grid") or {}).get("points") or []
    cpu = lambda ps: sum(p.get("cpu_s") or 0.0 for p in ps)  # noqa: E731
    if points:
        best = min(points, key=lambda p: (p["val_loss"], p["ratio"]))
        out["grid8"] = row(best["ratio"], best["val_loss"], best, cpu(points), runs=len(points))
        three = [p for r in GRID3 if (p := _at(points, r)) is not None]
        if three:
            b3 = min(three, key=lambda p: (p["val_loss"], p["ratio"]))
            out["grid3"] = row(b3["ratio"], b3["val_loss"], b3, cpu(three), runs=len(three))
        p_init = case.get("p_init", 0.4)
        if (const := _at(points, p_init)) is not None:
            out["constant"] = row(p_init, const["val_loss"], const, const.get("cpu_s"), runs=1)
    if (np_run := case.get("no_pruning")) is not None:
        out["no_pruning"] = row(0.0, np_run["val_loss"], np_run, np_run.get("cpu_s"), runs=1)
    for label, c in sorted((case.get("controllers") or {}).items()):
        spent = (c.get("controller_cpu_s") or 0.0) + (c.get("final_cpu_s") or 0.0)
        out[method_name(label)] = row(c["p_star"], c["val_loss"], c, spent,
                                      controller_cpu_s=c.get("controller_cpu_s"), final_cpu_s=c.get("final_cpu_s"),
                                      rounds=c.get("rounds"))
    for method, label in HEDGED.items():
        c, anchor = (case.get("controllers") or {}).get(label), _at(points, HEDGE_ANCHOR)
        if c is not None and anchor is not None:
            ctrl_cpu = (c.get("controller_cpu_s") or 0.0) + (c.get("final_cpu_s") or 0.0)
            pick, ratio = ((c, c["p_star"]) if (c["val_loss"], c["p_star"]) <= (anchor["val_loss"], HEDGE_ANCHOR)
                           else (anchor, HEDGE_ANCHOR))
            out[method] = row(ratio, pick["val_loss"], pick, ctrl_cpu + (anchor.get("cpu_s") or 0.0),
                              controller_cpu_s=c.get("controller_cpu_s"), final_cpu_s=c.get("final_cpu_s"),
                              anchor_cpu_s=anchor.get("cpu_s"), rounds=c.get("rounds"))
    if (o := case.get("optuna")) is not None:
        out["optuna"] = row(o["best_ratio"], o["best_val_loss"], o, o.get("cpu_s"), budget_cpu_s=o.get("budget_cpu_s"),
                            trials=o.get("n_finished"))
    return out


def ordered_methods(names) -> list[str]:
    names = set(names)
    return [m for m in METHODS if m in names] + sorted(names - set(METHODS))


def regime_curves(cases: list[dict[str, Any]]) -> tuple[list[float], dict[int, list[float]]]:
    """The validation curve of each case with a complete grid: at ratio 0 (the no-pruning run)
    when every such case has one, then at the grid ratios. Returns (ratios, {seed: curve})."""
    complete = [c for c in cases if c.get("grid") and c["grid"].get("points")]
    if not complete:
        return [], {}
    ratios = sorted({p["ratio"] for c in complete for p in c["grid"]["points"]})
    complete = [c for c in complete if all(_at(c["grid"]["points"], r) for r in ratios)]
    with_zero = bool(complete) and all(c.get("no_pruning") for c in complete)
    curves = {c["seed"]: ([c["no_pruning"]["val_loss"]] if with_zero else [])
                         + [_at(c["grid"]["points"], r)["val_loss"] for r in ratios] for c in complete}
    return ([0.0] if with_zero else []) + ratios, curves


def hit(ratio: float, val_loss: float, points: list[dict[str, Any]]) -> bool:
    """v1's hit against the case's own grid (regret <= 0.02 or within one grid step of its best
    ratio): a secondary column, which favours in-sample pickers (grid8 hits every case)."""
    best = min(points, key=lambda p: (p["val_loss"], p["ratio"]))
    return bool(val_loss - best["val_loss"] <= REGRET_GOAL + 1e-9 or abs(ratio - best["ratio"]) <= GRID_STEP + 1e-9)


def three_seed_cost(method: str, row: dict[str, Any], point_cpu_s: float) -> float:
    """A method's CPU seconds for a three-seed result, the paper's protocol: a controller run (or
    an Optuna search) once, then its ratio trained at the other seeds (GRASP: the final run three
    times; Optuna: its best trial is one seed's run, two more runs); a grid at every seed (the
    pipeline's selection is the mean over seeds); constant and no pruning: three runs; a hedge: its
    controller, final and anchor runs once, then the ratio it returned at the other two seeds."""
    if "anchor_cpu_s" in row:
        return (row["cpu_s"] or 0.0) + 2 * point_cpu_s
    if "controller_cpu_s" in row:
        return (row.get("controller_cpu_s") or 0.0) + 3 * (row.get("final_cpu_s") or 0.0)
    if method == "optuna":
        return (row["cpu_s"] or 0.0) + 2 * point_cpu_s
    return 3 * (row["cpu_s"] or 0.0)


def scoreboard_v2(cases: list[dict[str, Any]], regime_order: Sequence[str] = SUITE_V2) -> dict[str, Any]:
    """The v2 scoreboard from case records (`read_case`): per regime and case every method's row;
    paired comparisons over cases on test loss and task metric; leave-one-seed-out regret; hits
    (secondary); cost for one seed and three."""
    from benchmarks import _stats as S

    by_regime: dict[str, list[dict[str, Any]]] = {}
    for c in cases:
        by_regime.setdefault(c["regime"], []).append(c)
    names = [n for n in regime_order if n in by_regime] + sorted(set(by_regime) - set(regime_order))
    regimes, flat, regime_of = [], [], []
    for name in names:
        rcases = sorted(by_regime[name], key=lambda c: c["seed"])
        ratios, curves = regime_curves(rcases)
        rows = []
        for c in rcases:
            methods = case_methods(c)
            points = (c.get("grid") or {}).get("points") or []
            point_cpu = statistics.fmean(p.get("cpu_s") or 0.0 for p in points) if points else None
            for m, r in methods.items():
                if points:
                    r["hit"] = hit(r["ratio"], r["val_loss"], points)
                if point_cpu:
                    r["grid_points"] = (r["cpu_s"] or 0.0) / point_cpu
                    r["three_seeds_cpu_s"] = three_seed_cost(m, r, point_cpu)
                    r["three_seeds_grid_points"] = r["three_seeds_cpu_s"] / point_cpu
            rows.append({"seed": c["seed"], "methods": methods, "grid_point_cpu_s": point_cpu,
                         "stage1_cpu_s": c.get("stage1_cpu_s"), "test_n": len(c.get("test_ids") or [])})
        for m in {m for row in rows for m in row["methods"]}:
            picks = {row["seed"]: row["methods"][m]["ratio"] for row in rows if m in row["methods"]}
            for seed, regret in S.loso_regrets(curves, ratios, picks).items():
                next(row for row in rows if row["seed"] == seed)["methods"][m]["loso_regret"] = regret
        first = rcases[0]
        regimes.append({"name": name, "real_data": bool(first.get("real_data")), "metric": first.get("metric"),
                        "task": first.get("task"), "target_sizes": first.get("target_sizes"),
                        "curve_ratios": ratios,
                        # the scoring path against the training loop's validation loss (first grid point of each case)
                        "val_check_max_abs": max((abs(p["val_check"]) for c in rcases for p in (c.get("grid") or {}).get("points", [])
                                                  if p.get("val_check") is not None), default=None),
                        "mean_val_curve": [statistics.fmean(v) for v in zip(*curves.values())] if curves else [],
                        "cases": rows})
        flat += rows
        regime_of += [name] * len(rows)
    methods = ordered_methods(m for row in flat for m in row["methods"])
    col = lambda m, k: [row["methods"].get(m, {}).get(k) for row in flat]  # noqa: E731
    pairs = []
    for metric, higher in (("test_loss", False), ("test_metric", True)):
        for i, a in enumerate(methods):
            for b in methods[i + 1:]:
                res = S.paired_comparison(col(a, metric), col(b, metric), higher_is_better=higher, clusters=regime_of)
                if res["n"]:
                    pairs.append({"a": a, "b": b, "metric": metric, **res})
    loso, hits, cost, means = {}, {}, {}, {}
    for m in methods:
        regrets = [x for x in col(m, "loso_regret") if x is not None]
        if regrets:
            lo, hi = S.bootstrap_ci(regrets)
            loso[m] = {"mean": statistics.fmean(regrets), "ci95": [lo, hi], "n": len(regrets)}
        h = [x for x in col(m, "hit") if x is not None]
        hits[m] = {"hits": sum(h), "cases": len(h)}
        one, three = [x for x in col(m, "cpu_s") if x is not None], [x for x in col(m, "three_seeds_cpu_s") if x is not None]
        gp1, gp3 = [x for x in col(m, "grid_points") if x is not None], [x for x in col(m, "three_seeds_grid_points") if x is not None]
        cost[m] = {"n": len(one), "one_seed_cpu_s": statistics.fmean(one) if one else None,
                   "one_seed_grid_points": statistics.fmean(gp1) if gp1 else None,
                   "three_seeds_cpu_s": statistics.fmean(three) if three else None,
                   "three_seeds_grid_points": statistics.fmean(gp3) if gp3 else None}
        for k in ("test_loss", "test_metric"):
            v = [x for x in col(m, k) if x is not None]
            means.setdefault(m, {})[k] = statistics.fmean(v) if v else None
    return {"suite": "v2", "default_method": DEFAULT_METHOD, "methods": methods, "cases": len(flat),
            "regimes": regimes, "pairs": pairs, "loso_regret": loso, "hits": hits, "cost": cost, "means": means,
            "notes": {
                "pairs": "mean over cases of a - b with a percentile bootstrap 95% CI over cases (10,000 resamples, "
                         "seed 0) and a two-sided sign test (ties dropped); ci95_clustered: the two-stage bootstrap "
                         "(regimes, then cases within them), the interval when a regime's cases are alike; test_loss: "
                         "lower is better, test_metric (F1 for QA, ROUGE-L for summaries, pooled): higher is better; "
                         "significant: the CI over cases excludes 0",
                "loso_regret": "each case's ratio judged on the mean validation curve of the regime's other seeds, "
                               "from ratio 0 (the no-pruning run) through the grid, linear between points: "
                               "curve(ratio) - min(curve)",
                "hits": "secondary: within 0.02 validation loss of the case's own best grid point or one grid step "
                        "(0.15) from it; favours in-sample pickers (grid8 hits every case by construction)",
                "cost": "CPU seconds of the runs a method trains for one seed (GRASP: controller + final run; Optuna: "
                        "every trial); three seeds: a search once and its ratio trained at the other seeds (grids at "
                        "every seed); grid points: in units of the case's mean grid point; stage-1 adapters excluded "
                        "(common to all)"}}


def _ci(ci, spec: str = "+.4f") -> str:
    return "–" if ci[0] is None else f"[{ci[0]:{spec}}, {ci[1]:{spec}}]"


def markdown_v2(board: dict[str, Any]) -> str:
    """One table per question: pairs on test loss; pairs on the task metric; LOSO regret; cost."""
    lines = []
    for metric, spec, title in (
            ("test_loss", "+.4f", "Which method's adapter has the lower test loss? (a − b over cases; negative: a better)"),
            ("test_metric", "+.2f", "Which method's adapter scores higher on the task metric (F1 / ROUGE-L)? "
                                    "(a − b over cases; positive: a better)")):
        lines += [f"**{title}**", "", "| a | b | mean a − b | 95% CI | 95% CI, regimes resampled | cases | a better in | "
                  "b better in | sign test p |", "|---|---|---:|---|---|---:|---:|---:|---:|"]
        for p in board["pairs"]:
            if p["metric"] == metric:
                star = " *" if p["significant"] else ""
                lines.append(f"| {p['a']} | {p['b']} | {p['mean_diff']:{spec}} | {_ci(p['ci95'], spec)}{star} | "
                             f"{_ci(p.get('ci95_clustered', [None, None]), spec)} | "
                             f"{p['n']} | {p['a_wins']} | {p['b_wins']} | {p['sign_test_p']:.3g} |")
        lines += ["", "\\* the CI excludes 0 (and at least 2 cases).", ""]
    lines += ["**How far is each method's ratio from the best, judged out of sample?** (leave-one-seed-out regret on the "
              "regime's mean validation curve of the other seeds; lower is better)", "",
              "| method | LOSO regret | 95% CI | cases | hits (secondary; favours in-sample pickers) |", "|---|---:|---|---:|---:|"]
    for m in board["methods"]:
        r, h = board["loso_regret"].get(m), board["hits"].get(m, {})
        lines.append(f"| {m} | " + ("– | – | 0" if r is None else f"{r['mean']:.4f} | {_ci(r['ci95'])} | {r['n']}")
                     + f" | {h.get('hits', 0)}/{h.get('cases', 0)} |")
    lines += ["", "**What does each method cost?** (CPU seconds as the user pays them; grid points of the same case)", "",
              "| method | one seed: CPU s | grid points | three seeds: CPU s | grid points |", "|---|---:|---:|---:|---:|"]
    for m in board["methods"]:
        c = board["cost"].get(m, {})
        lines.append(f"| {m} | {C.fmt(c.get('one_seed_cpu_s'), '.0f')} | {C.fmt(c.get('one_seed_grid_points'), '.2f')} | "
                     f"{C.fmt(c.get('three_seeds_cpu_s'), '.0f')} | {C.fmt(c.get('three_seeds_grid_points'), '.2f')} |")
    lines += ["", "**Per regime: mean test loss (task metric) of each method**", "",
              "| regime | cases | " + " | ".join(board["methods"]) + " |", "|---|---:|" + "---:|" * len(board["methods"])]
    for r in board["regimes"]:
        cells = []
        for m in board["methods"]:
            got = [row["methods"][m] for row in r["cases"] if m in row["methods"]]
            tl = [x["test_loss"] for x in got if x["test_loss"] is not None]
            tm = [x["test_metric"] for x in got if x["test_metric"] is not None]
            cells.append("–" if not tl else f"{statistics.fmean(tl):.3f}" + (f" ({statistics.fmean(tm):.1f})" if tm else ""))
        lines.append(f"| {r['name']} | {len(r['cases'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_board_v2(board: dict[str, Any]) -> None:
    print(f"suite v2: {board['cases']} cases in {len(board['regimes'])} regimes; methods {', '.join(board['methods'])}")
    C.print_table(["method", "test loss", "task metric", "LOSO regret", "95% CI", "hits*", "CPU s (1 seed)", "grid pts"],
                  [[m, board["means"][m]["test_loss"], board["means"][m]["test_metric"],
                    (board["loso_regret"].get(m) or {}).get("mean"),
                    _ci((board["loso_regret"].get(m) or {}).get("ci95", [None, None])),
                    f"{board['hits'][m]['hits']}/{board['hits'][m]['cases']}", board["cost"][m]["one_seed_cpu_s"],
                    board["cost"][m]["one_seed_grid_points"]] for m in board["methods"]])
    print("* hits favour in-sample pickers (secondary)")
    rows = [[p["a"], p["b"], p["metric"], p["mean_diff"], _ci(p["ci95"]), p["n"], p["sign_test_p"],
             ("yes" if p["a_better"] else "no") + (" (CI excludes 0)" if p["significant"] else "")]
            for p in board["pairs"] if DEFAULT_METHOD in (p["a"], p["b"])]
    if rows:
        print()
        C.print_table(["a", "b", "metric", "mean a-b", "95% CI", "n", "sign p", "a better"], rows)


# ----------------------------------------------------------------------------------------------
# the v2 plan: regimes, sizes and estimated CPU hours (from committed grid-point CPU seconds)

# Cost model, in forward-equivalents (FE: one example's forward pass): a training example-epoch is
# 2 FE (forward + activation gradients through the frozen backbone: _common's FLOP formula, 4 NT
# against 2 NT), a validation / test-loss example 1 FE. A committed grid point of the same recipe
# gives the CPU seconds per FE at the sizes it was measured at.
CONTROLLER_POINTS = 3.0  # the default controller's budget (budget_grid_points), in grid points
# Generation per test example, in FE: bench_summaries measured about 3.1 CPU s per summary (48 new
# tokens, articles at 256 tokens) at 1.33 CPU s per FE of its grid points (2.3 FE, rounded up).
GEN_FE = 2.5
GEN_ADAPTERS = 5  # distinct picks generated per case (grasp, optuna, grid8 / grid3, constant, no_pruning)


def forward_equivalents(train: int, val: int, epochs: int) -> float:
    return epochs * (2.0 * train + val)


def measured_point_cpu_s(cal: dict[str, Any], results_dir: Path = C.RESULTS_DIR) -> float:
    """Mean CPU seconds of a committed grid point (the calibration of a regime's cost)."""
    doc = json.loads((results_dir / cal["file"]).read_text())
    if cal["kind"] == "regime":
        return grid_point_cpu_s(doc["regime"]["grid"])
    if cal["kind"] == "real_data":
        seeds = doc["languages"][cal["lang"]]["grid"]["seeds"].values()
        return statistics.fmean(p["cpu_s"] for s in seeds for p in s["points"])
    if cal["kind"] == "summaries":
        return doc["languages"][cal["key"]]["stages"]["grid"]["cpu_s"] / cal["points"]
    raise ValueError(f"unknown calibration kind {cal['kind']!r}")


def regime_plan(name: str, seeds: Sequence[int], overrides: Sequence[str] = (), results_dir: Path = C.RESULTS_DIR) -> dict[str, Any]:
    """A regime's sizes and its estimated CPU seconds per case and in all (`seeds` cases)."""
    cfg = regime_v2_config(name, seeds[0], overrides)
    cal = REGIMES_V2[name]["calibration"]
    measured = measured_point_cpu_s(cal, results_dir)
    rate = measured / forward_equivalents(cal["train"], cal["val"], cal["epochs"])
    t, s, e = cfg.data.target_sizes, cfg.data.source_sizes, cfg.train.epochs
    point = rate * forward_equivalents(t.train, t.val, e)
    n_grid = len(cfg.grid.ratios)
    ctrl = (cfg.controller.budget_grid_points or CONTROLLER_POINTS) * point
    phases = {
        "grid": rate * (forward_equivalents(s.train, s.val, e) + forward_equivalents(t.train, t.val, e))  # stage 1
                + (n_grid + 1) * point + rate * t.test * (n_grid + 1),  # grid, no pruning, their test losses
        "controller": ctrl + point + rate * t.test,  # controller run, final run, its test loss
        "optuna": ctrl + point + rate * t.test,  # GRASP's budget, its pick's test loss
        "metric": rate * t.test * GEN_FE * GEN_ADAPTERS,
    }
    case = sum(phases.values())
    return {"name": name, "real_data": "data" in REGIMES_V2[name], "seeds": list(seeds),
            "source": {"train": s.train, "val": s.val}, "target": {k: getattr(t, k) for k in ("train", "val", "micro_dev", "test")},
            "epochs": e, "lr": cfg.train.lr, "calibration": cal["file"], "measured_point_cpu_s": measured,
            "cpu_s_per_fe": rate, "point_cpu_s": point, "phases_cpu_s": phases, "case_cpu_s": case,
            "cpu_hours": case * len(seeds) / 3600.0}


def print_plan(plans: list[dict[str, Any]]) -> None:
    C.print_table(["regime", "real", "target tr/val/md/test", "source tr/val", "epochs", "lr", "grid pt CPU s (measured -> v2)",
                   "case CPU s (grid+ctrl+optuna+metric)", "seeds", "CPU h"],
                  [[p["name"], "yes" if p["real_data"] else "no", "/".join(str(v) for v in p["target"].values()),
                    f"{p['source']['train']}/{p['source']['val']}", p["epochs"], f"{p['lr']:g}",
                    f"{p['measured_point_cpu_s']:.0f} -> {p['point_cpu_s']:.0f}",
                    " + ".join(f"{v:.0f}" for v in p["phases_cpu_s"].values()), len(p["seeds"]), p["cpu_hours"]]
                   for p in plans])
    total = sum(p["cpu_hours"] for p in plans)
    print(f"\nsuite: {len(plans)} regimes, {sum(len(p['seeds']) for p in plans)} cases, about {total:.1f} CPU hours "
          f"({total / 2:.1f} h on 2 cores with two processes at --threads 1); the default controller and Optuna only: "
          f"each further controller (--phase all adds {', '.join(ALL_CONTROLLERS[1:])}) adds about its controller + final "
          f"run per case")


def v2_phase(args, regimes: list[str]) -> None:
    for name in regimes:
        for seed in args.seeds:
            if args.phase == "grid":
                run_case_grid(args, name, seed)
            elif args.phase == "controller":
                run_case_controller(args, name, seed, args.variant)
            elif args.phase == "optuna":
                run_case_optuna(args, name, seed)
            else:
                fill_metrics(args, name, seed)


def case_done(case: dict[str, Any], controllers: Sequence[str] = ALL_CONTROLLERS) -> bool:
    """Whether a case record holds every method `--phase all` runs."""
    return (grid_done(case) and all(v in (case.get("controllers") or {}) for v in controllers)
            and case.get("optuna") is not None)


# Wall seconds per estimated CPU second of a case (one thread per process on its own core, plus
# whatever else runs on the machine).
ESTIMATE_MARGIN = 1.15


def measured_phases_s(case: dict[str, Any]) -> dict[str, float]:
    """The CPU seconds a case record shows for each phase it finished (test-loss scoring included):
    grid (stage 1, grid points, no pruning), controller (mean of its controller + final runs), optuna."""
    out: dict[str, float] = {}
    tested = lambda run: (run.get("cpu_s") or 0.0) + ((run.get("test") or {}).get("cpu_s") or 0.0)  # noqa: E731
    if grid_done(case):
        out["grid"] = (case.get("stage1_cpu_s") or 0.0) + sum(tested(p) for p in case["grid"]["points"]) + tested(case["no_pruning"])
    ctrls = (case.get("controllers") or {}).values()
    if ctrls:
        out["controller"] = statistics.fmean((c.get("controller_cpu_s") or 0.0) + (c.get("final_cpu_s") or 0.0)
                                             + ((c.get("test") or {}).get("cpu_s") or 0.0) for c in ctrls)
    if (o := case.get("optuna")) is not None:
        out["optuna"] = (o.get("cpu_s") or 0.0) + ((o.get("test") or {}).get("cpu_s") or 0.0)
    return out


def plan_calibration(records: Path) -> dict[str, float]:
    """Per phase, measured over planned CPU seconds, pooled over every case record in `records`
    that finished the phase (1.0 where none has)."""
    measured: dict[str, float] = {}
    planned: dict[str, float] = {}
    for f in sorted(Path(records).glob("*.json")):
        case = json.loads(f.read_text()).get("case") or {}
        if case.get("regime") not in REGIMES_V2:
            continue
        phases = regime_plan(case["regime"], [0])["phases_cpu_s"]
        for phase, cpu in measured_phases_s(case).items():
            measured[phase] = measured.get(phase, 0.0) + cpu
            planned[phase] = planned.get(phase, 0.0) + phases[phase]
    return {phase: measured.get(phase, 0.0) / planned[phase] if planned.get(phase) else 1.0
            for phase in ("grid", "controller", "optuna")}


def case_estimate_s(name: str, case: dict[str, Any], controllers: Sequence[str],
                    calibration: dict[str, float] | None = None) -> float:
    """The wall seconds the rest of a case should take: `regime_plan`'s estimate (without the
    metric), each phase scaled by `calibration` (measured / planned on the finished cases,
    `plan_calibration`), each missing controller counted as a controller + final run."""
    phases = regime_plan(name, [0])["phases_cpu_s"]
    k = calibration or {}
    todo = 0.0 if grid_done(case) else phases["grid"] * k.get("grid", 1.0)
    todo += phases["controller"] * k.get("controller", 1.0) * sum(v not in (case.get("controllers") or {}) for v in controllers)
    todo += 0.0 if case.get("optuna") is not None else phases["optuna"] * k.get("optuna", 1.0)
    return ESTIMATE_MARGIN * todo


def grid_done(case: dict[str, Any]) -> bool:
    """Whether the record holds the case's whole grid and its no-pruning run."""
    points = (case.get("grid") or {}).get("points") or []
    return len(points) == len(case.get("grid_ratios") or GRID) and case.get("no_pruning") is not None


def claim(args, name: str, seed: int) -> bool:
    """Take case (name, seed) for this process: a claim file holding its pid, created exclusively;
    a claim whose process is gone (a killed suite) is taken over. Cases resume from their cache,
    so taking over a half-done case loses nothing finished."""
    import os

    folder = args.records / ".claims"
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / f"{name}_seed{seed}"
    for _ in range(2):
        try:
            fd = os.open(f, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(f.read_text() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid == os.getpid():
                return True
            try:
                if pid:
                    os.kill(pid, 0)
                    return False  # another live process has it
            except ProcessLookupError:
                pass
            f.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as out:
            out.write(str(os.getpid()))
        return True
    return False


def run_all(args, regimes: list[str], controllers: Sequence[str] = ALL_CONTROLLERS) -> None:
    """Every case of the suite, seed-major, each to the end before the next (grid and no pruning,
    then each of `controllers` with its final run, then Optuna at the default's CPU budget),
    skipping cases whose estimate does not fit before `args.finish_by`,
    skipping finished cases and cases another live process has claimed: start this in two
    processes at --threads 1 to use both cores; start it again after a crash to go on."""
    import time

    args.skip_metric = True
    for seed in args.seeds:
        for name in regimes:
            case = read_case(record_path(args, name, seed))
            if case_done(case, controllers):
                continue
            if args.finish_by is not None and time.time() + case_estimate_s(
                    name, case, controllers, plan_calibration(args.records)) > args.finish_by:
                C._log(False)(f"[skip] {name} seed {seed}: its estimated time does not fit before --finish-by")
                continue
            if not claim(args, name, seed):
                continue
            C._log(args.quiet)(f"[case] {name} seed {seed}")
            try:
                if not grid_done(read_case(record_path(args, name, seed))):  # else read from the record, not rerun
                    run_case_grid(args, name, seed)
                for variant in controllers:
                    if variant not in read_case(record_path(args, name, seed)).get("controllers", {}):
                        run_case_controller(args, name, seed, variant)
                if read_case(record_path(args, name, seed)).get("optuna") is None:
                    run_case_optuna(args, name, seed)
            except CaseCannotContinue as e:
                C._log(False)(f"[skip] {e}")


def summarize_v2(args, regimes: list[str] | None) -> dict[str, Any]:
    cases = []
    for f in sorted(args.records.glob("*.json")):
        case = json.loads(f.read_text()).get("case")
        if case and case.get("suite") == "v2" and (regimes is None or case.get("regime") in regimes):
            cases.append(case)
    if not cases:
        raise SystemExit(f"{args.records}: no v2 case records (run the phases first)")
    board = scoreboard_v2(cases)
    board["records"] = str(args.records)
    return board


def clock_time(value: str) -> float:
    """'HH:MM' -> the epoch seconds of the next such time of day (local)."""
    import datetime as dt

    try:
        hh, mm = (int(x) for x in value.split(":"))
        at = dt.datetime.now().replace(hour=hh, minute=mm, second=0, microsecond=0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HH:MM, got {value!r}") from None
    if at <= dt.datetime.now():
        at += dt.timedelta(days=1)
    return at.timestamp()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=["v1", "v2"], default="v1",
                    help="v1: the committed suite (one data split, hits); v2: independent cases judged on test loss")
    ap.add_argument("--regimes", default=None, help="comma-separated (default: every v1 regime / SUITE_V2)")
    ap.add_argument("--seeds", default=None, help=f"comma-separated (default v1 {SEEDS}, v2 {SEEDS_V2})")
    ap.add_argument("--phase", choices=["grid", "controller", "optuna", "metric", "all"], default="grid",
                    help="metric (v2 only): the task metric of every method's pick still missing one; all (v2 only): "
                         "every unfinished, unclaimed case to the end, without the metric")
    ap.add_argument("--variant", default="default", help=f"controller variant ({', '.join(VARIANTS)})")
    ap.add_argument("--controller-set", dest="controller_overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="extra controller overrides (the variant is then recorded with them)")
    ap.add_argument("--controllers", type=lambda v: [x for x in v.split(",") if x], default=[],
                    help=f"--phase all: controller variants to run after {ALL_CONTROLLERS} (issue 33's: "
                         f"{','.join(DESIGN_CONTROLLERS)})")
    ap.add_argument("--data", type=Path, help="folder with xquad.{en,ar,zh}.dev.json (the xquad_* regimes)")
    ap.add_argument("--summaries-data", type=Path, help="folder with english_dev.jsonl, ... (the summaries_* regimes, v2)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--work", type=Path, default=C.SCRATCH_DIR / "regimes")
    ap.add_argument("--out", type=Path, default=None,
                    help="result file (v1 default: benchmarks/results/bench_regimes_<regime>.json; with --summarize "
                         "bench_regimes_scoreboard.json, v2 bench_regimes_v2_scoreboard.json)")
    ap.add_argument("--records", type=Path, default=RECORDS_V2, help="v2: folder of the case records (%(default)s)")
    ap.add_argument("--skip-metric", action="store_true", help="v2: no generation in this phase (--phase metric later)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--finish-by", type=clock_time, default=None, metavar="HH:MM",
                    help="--phase all: start only cases whose estimated time ends before this time of day (local; "
                         "the next such time), e.g. the end of a session whose cache does not survive it")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--plan", action="store_true", help="run nothing: v2's regimes, sizes and estimated CPU hours")
    ap.add_argument("--markdown", action="store_true", help="with --summarize: also print BENCHMARKS.md's tables")
    ap.add_argument("--summarize", action="store_true",
                    help="run nothing: v1 reads every bench_regimes_<regime>.json and writes bench_regimes_scoreboard.json; "
                         "v2 reads the case records and writes bench_regimes_v2_scoreboard.json")
    args = ap.parse_args(argv)
    v2 = args.suite == "v2" or args.plan
    known = REGIMES_V2 if v2 else REGIMES
    chosen = [x for x in (args.regimes or "").split(",") if x]
    regimes = chosen or list(SUITE_V2 if v2 else REGIMES)
    args.seeds = [int(x) for x in (args.seeds or ",".join(map(str, SEEDS_V2 if v2 else SEEDS))).split(",") if x]
    if (unknown := [r for r in regimes if r not in known]) and not (v2 and args.summarize):  # records name theirs
        ap.error(f"unknown regimes {unknown} (known: {', '.join(known)})")
    if args.variant not in VARIANTS:
        ap.error(f"unknown variant {args.variant!r} (known: {', '.join(VARIANTS)})")
    if unknown_ctrl := [c for c in args.controllers if c not in VARIANTS]:
        ap.error(f"--controllers: unknown variants {unknown_ctrl} (known: {', '.join(VARIANTS)})")
    if args.phase == "all" and args.controller_overrides:
        ap.error("--phase all runs the suite's own controllers (ALL_CONTROLLERS); use --phase controller for --controller-set")
    if args.plan:
        print_plan([regime_plan(name, args.seeds, args.overrides) for name in regimes])
        return 0
    if v2 and args.summarize:
        board = summarize_v2(args, chosen or None)
        print_board_v2(board)
        if args.markdown:
            print("\n" + markdown_v2(board))
        C.write_report(json.loads(json.dumps(board, default=str)), args.out or SCOREBOARD_V2)
        return 0
    if not v2 and args.phase in ("metric", "all"):
        ap.error(f"--phase {args.phase} belongs to --suite v2")
    if args.summarize:
        report = {"regimes": {}}
        for name in regimes:
            f = C.RESULTS_DIR / f"bench_regimes_{name}.json"
            if f.exists():
                report["regimes"][name] = json.loads(f.read_text())["regime"]
        board = summarize(report, args.variant)
        print_board(board)
        board["noise_ceiling"] = noise_ceiling(report)
        print_noise_ceiling(board["noise_ceiling"])
        board["rule_analysis"] = rule_analysis(report, args.variant)
        if board["rule_analysis"]:
            print_rule_analysis(board["rule_analysis"])
        if args.markdown:
            print("\n" + markdown(board))
        C.write_report(board, args.out or C.RESULTS_DIR / "bench_regimes_scoreboard.json")
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    C.ignore_scratch(args.work)
    if v2:
        if args.phase == "all":
            run_all(args, regimes, [*ALL_CONTROLLERS, *(c for c in args.controllers if c not in ALL_CONTROLLERS)])
        else:
            v2_phase(args, regimes)
        return 0
    for name in regimes:
        out = args.out or C.RESULTS_DIR / f"bench_regimes_{name}.json"
        report = json.loads(out.read_text()) if out.exists() else {}
        report.update(C.run_header("bench_regimes", args))
        entry = report.setdefault("regime", {"name": name, "overrides": REGIMES[name]["overrides"]})
        if args.phase == "grid":
            entry["grid"] = run_grid(args, name)
        elif args.phase == "controller":
            label = args.variant + "".join(f"+{o}" for o in args.controller_overrides)
            entry.setdefault("controllers", {})[label] = run_controller(args, name, args.variant)
        else:
            board = regime_board(name, entry, args.variant)
            if not board or "cases" not in board:
                raise SystemExit(f"{name}: run --phase grid and --phase controller --variant {args.variant} first")
            rows = entry["controllers"][args.variant]["seeds"].values()
            # GRASP's CPU seconds per seed (controller + final run): the controllers ran beside other
            # benchmark processes, so their wall-clock overstates them; run this phase with --threads 1
            # on an otherwise idle core, where Optuna's wall-clock budget is CPU time.
            budget = statistics.fmean(r["controller_cpu_s"] + r["final_cpu_s"] for r in rows)
            entry["optuna"] = run_optuna(args, name, budget)
        C.write_report(json.loads(json.dumps(report, default=str)), out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
