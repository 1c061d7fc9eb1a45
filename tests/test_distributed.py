"""Data parallelism, proven on CPU: gloo processes started by the real launchers.

- The loop: 2 processes x batch B give the run of 1 process x batch 2B (fp32 tolerance), with
  accumulation, a trailing micro-batch that leaves rank 1 without an example, early stopping, and
  fixed-ratio pruning whose input norms are summed over processes (train_forward and full_pass).
- The controller: history, committed masks and weights identical on both ranks, and the same run
  as one process with the doubled batch.
- Failures: one rank failing (inside a training step, in a rank-0 write, while scoring, in a
  rank-0-first load, while generating) fails every rank with that rank's error, and nothing hangs.
- The CLI through accelerate's launcher (`--num-processes 2`): the whole pipeline runs; its
  adapters, controller run, final run and grid points equal the 1-process run with the doubled
  batch; grid points run as separate jobs are gathered by `collect` (the README's Slurm recipe).

This file doubles as the worker script: `python -m torch.distributed.run --nproc_per_node 2
tests/test_distributed.py SCENARIO[,SCENARIO...] OUT_DIR` runs each SCENARIO in turn on every rank,
and each rank saves what it holds to OUT_DIR/SCENARIO/rank<r>.pt for the tests to compare. The four
scenarios share one launch (`two_processes`, a module fixture): each launch costs two fresh interpreters
importing torch and transformers, seconds of CPU that tell nothing; the failures run last, so the
group they leave usable is checked by their own final barrier.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from grasp_lora import distributed as dist
from grasp_lora.config import Config
from grasp_lora.models.tiny import BOS, EOS, tiny_model
from grasp_lora.training.loss import IGNORE

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))  # helpers.py, also when run as the worker script

from helpers import TINY_OVERRIDES  # noqa: E402

WORKER_TIMEOUT = 240  # seconds; a deadlock shows up as a timeout, never as a hung CI job


# ---- shared scenarios (run by the workers, and in-process for the 1-process reference) --------
def make_example(prompt: list[int], target: list[int]) -> dict[str, list[int]]:
    ids = [BOS] + prompt + target + [EOS]
    return {"input_ids": ids, "labels": [IGNORE] * (1 + len(prompt)) + target + [EOS]}


def overfit_data(n_train: int = 9, n_val: int = 3) -> tuple[list[dict], list[dict]]:
    """Training targets that the validation set contradicts: fitting them makes validation worse,
    so early stopping fires after a few epochs. Prompts differ in length (padding is exercised)."""
    g = torch.Generator().manual_seed(11)
    prompts = [torch.randint(4, 260, (5 + i % 4,), generator=g).tolist() for i in range(n_train)]
    train_set = [make_example(p, [10 + i % 3, 11, 12]) for i, p in enumerate(prompts)]
    val_set = [make_example(p, [200, 201, 202 + i]) for i, p in enumerate(prompts[:n_val])]
    return train_set, val_set


def make_adapter(out: Path, seed: int, scale: float = 0.2) -> Path:
    """A stage-1-like PEFT LoRA folder with random A and B (pruning them changes the loss)."""
    from peft import LoraConfig, get_peft_model

    model, _ = tiny_model("llama", 0)
    pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    pm.save_pretrained(str(out))
    cfg_path = out / "adapter_config.json"  # the base name goes in afterwards (no hub lookup)
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = "tiny-llama"
    cfg_path.write_text(json.dumps(cfg))
    return out


def make_adapters(root: Path, scale: float = 0.2) -> list[Path]:
    """Rank 0 writes the two adapters; every rank returns their folders once they exist."""
    dirs = [root / "adapters" / "en", root / "adapters" / "ar"]
    dist.run_on_main(lambda: [make_adapter(d, s, scale) for d, s in zip(dirs, (1, 2))], "make adapters")
    return dirs


def scenario_train(root: Path, batch_size: int) -> dict:
    """Merged fine-tunes with the fixed-ratio pruner, once per source of input norms."""
    from grasp_lora.models.merged import factor_groups, merge_adapters
    from grasp_lora.pruning.groups import all_factors
    from grasp_lora.training.finetune import attach_fixed_ratio_pruner
    from grasp_lora.training.loop import train

    adapter_dirs = make_adapters(root)
    train_set, val_set = overfit_data()
    out: dict = {}
    for kind in ("train_forward", "full_pass"):
        cfg = Config()
        cfg.prune.importance_inputs = kind
        # 9 examples, 2 per micro-batch, accumulation 2: windows of 2, 2 and 1 micro-batches; in
        # the last (one example) rank 1 has nothing to forward but must still join every sum.
        cfg.train = replace(cfg.train, lr=3e-2, batch_size=batch_size, grad_accum=2, epochs=8, patience=1,
                            lr_gamma=1.0, eval_batch_size=2, seed=3)
        model, _ = tiny_model("llama", 0)
        merge_adapters(model, [str(d) for d in adapter_dirs])
        groups = factor_groups(model)
        pruner, layer_hooks = attach_fixed_ratio_pruner(model, groups, 0.3, cfg, train_set)
        try:
            res = train(model, train_set, val_set, cfg.train, hooks=[pruner], progress=False)
        finally:
            layer_hooks.remove()
        out[kind] = {
            "factors": [p.detach().clone() for p in all_factors(groups)],
            "val_losses": [e["val_loss"] for e in res.epochs],
            "train_losses": [e["train_loss"] for e in res.epochs],
            "best_epoch": res.best_epoch,
            "stopped_early": res.stopped_early,
            "steps": res.steps,
        }
    return out


def scenario_controller(root: Path, batch_size: int) -> dict:
    """A full controller run (run_grasp_search) on demo rows and the tiny model."""
    from grasp_lora.data.demo import demo_pool
    from grasp_lora.models.merged import factor_groups
    from grasp_lora.pruning.groups import all_factors
    from grasp_lora.search.grasp import run_grasp_search

    # Large random adapters hurt the model, so pruning them helps: rounds commit masks.
    adapter_dirs = make_adapters(root, scale=1.0)
    cfg = Config()
    cfg.model.name = "tiny-llama"
    cfg.train = replace(cfg.train, lr=1e-2, batch_size=batch_size, epochs=2, patience=2, eval_batch_size=4, seed=5)
    cfg.controller = replace(cfg.controller, every_k_steps=2, lookahead_steps=2, micro_dev_size=3, score_batch_size=2,
                             seed=7)  # the default controller, its lookahead K steps
    rows = demo_pool("mlqa", "ar")
    model, tok = tiny_model("llama", 0)
    summary = run_grasp_search(cfg, model, tok, adapter_dirs, rows[:7], rows[7:10], rows[10:13], root / "grasp",
                               progress=False)
    factors = [p.detach().clone() for p in all_factors(factor_groups(model))]
    keep = ("p_star", "final_p_c", "mu", "sigma", "rounds", "steps", "best_val_loss")
    return {"summary": {k: summary[k] for k in keep}, "factors": factors,
            "rank_digests": summary.get("rank_digests")}


class _Boom(RuntimeError):
    pass


def _outcome(fn) -> str:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the test compares what each rank raised
        return f"{type(e).__name__}: {e}"
    return "ok"


def scenario_failures(root: Path) -> dict:
    """Each case fails on one rank only; every rank must raise, and the group must stay usable
    for the next case (the collectives stayed matched)."""
    from peft import LoraConfig, get_peft_model

    from grasp_lora.config import TrainConfig
    from grasp_lora.evaluation.generate import generate_predictions
    from grasp_lora.training.loop import train
    from grasp_lora.training.parallel import mean_loss_across_processes

    me = dist.rank()
    train_set, val_set = overfit_data(6, 2)
    base, tok = tiny_model("llama", 0)
    model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, target_modules=["q_proj"]))
    calls = {"n": 0}

    def exploding_forward(module, args, kwargs):
        calls["n"] += 1
        if me == 1 and calls["n"] == 3:  # rank 1, third training forward: say, out of memory
            raise _Boom("rank 1 ran out of memory")

    handle = model.register_forward_pre_hook(exploding_forward, with_kwargs=True)
    cfg = TrainConfig(lr=1e-3, batch_size=1, grad_accum=1, epochs=2, eval_batch_size=2, seed=1)
    out = {"train_step": _outcome(lambda: train(model, train_set, val_set, cfg, progress=False))}
    handle.remove()

    def write_on_main():
        raise OSError("No space left on device: results.json")

    out["rank0_write"] = _outcome(lambda: dist.run_on_main(write_on_main, "write results"))

    def scoring():
        with torch.no_grad():
            return mean_loss_across_processes(model if me == 1 else _Exploding(model), val_set, 2)

    out["scoring"] = _outcome(scoring)

    def load():
        with dist.main_first("load the base model"):
            if me == 1:
                raise FileNotFoundError("rank 1 cannot read the model cache")

    out["main_first"] = _outcome(load)

    rows = [{"id": f"q{i}", "context": "The cat sat on the mat.", "question": f"Where {i}?", "answers": ["mat"]}
            for i in range(5)]

    class FailingGenerate(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.generation_config = inner.generation_config

        def generate(self, **kw):
            if me == 1:
                raise _Boom("rank 1 failed while generating")
            return self.inner.generate(**kw)

    out["generation"] = _outcome(lambda: generate_predictions(
        FailingGenerate(base), tok, "mlqa", "en", rows, root / "predictions.jsonl", batch_size=2, max_new_tokens=2,
        progress=False, shard=True))
    out["final_barrier"] = _outcome(lambda: dist.check_all(None, "final barrier"))
    return out


class _Exploding(torch.nn.Module):
    """A model whose forward fails (for the scoring case)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def forward(self, *args, **kwargs):
        raise _Boom("rank 0 failed while scoring")


def scenario_generation(root: Path) -> dict:
    """Sharded generation: every rank returns every prediction, rank 0 alone wrote the file."""
    from grasp_lora.evaluation.generate import generate_predictions

    model, tok = tiny_model("llama", 0)
    rows = [{"id": f"q{i}", "context": "The meeting was held in Paris last spring." * (1 + i % 3),
             "question": f"Where was meeting {i} held?", "answers": ["Paris"]} for i in range(7)]
    preds = generate_predictions(model, tok, "mlqa", "en", rows, root / "predictions.jsonl", batch_size=2,
                                 max_new_tokens=3, progress=False, shard=True)
    return {"predictions": preds}


SCENARIOS = {
    "train": lambda root: scenario_train(root, batch_size=1),
    "controller": lambda root: scenario_controller(root, batch_size=1),
    "failures": scenario_failures,
    "generation": scenario_generation,
}


def _worker(scenarios: str, root: Path) -> None:
    torch.set_num_threads(1)
    dist.init()
    assert dist.world_size() == 2, "the worker expects 2 processes"
    for scenario in scenarios.split(","):
        result = SCENARIOS[scenario](root / scenario)
        torch.save(result, root / scenario / f"rank{dist.rank()}.pt")
    dist.shutdown()


# ---- launching ---------------------------------------------------------------------------------
def child_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
        "GRASP_LORA_CACHE": str(cache),
        # CPU processes with gloo even on a machine with GPUs.
        "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true",
    })
    return env


def launch_workers(scenarios: list[str], root: Path) -> dict[str, list[dict]]:
    """Every scenario in turn on 2 processes (one launch) -> {scenario: [rank 0's result, rank 1's]};
    scenario S ran in root/S."""
    for scenario in scenarios:
        (root / scenario).mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(dist.free_port()), str(HERE), ",".join(scenarios), str(root)]
    proc = subprocess.run(cmd, env=child_env(root / "cache"), capture_output=True, text=True, timeout=WORKER_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {s: [torch.load(root / s / f"rank{r}.pt", weights_only=False) for r in (0, 1)] for s in scenarios}


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> tuple[Path, dict[str, list[dict]]]:
    """(root, {scenario: per-rank results}) of one 2-process launch running every scenario, the
    failures last; scenario S ran in root/S."""
    root = tmp_path_factory.mktemp("two")
    return root, launch_workers(["train", "controller", "generation", "failures"], root)


def assert_same_tensors(a: list[torch.Tensor], b: list[torch.Tensor], atol: float = 0.0) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if atol == 0.0:
            assert torch.equal(x, y)
        else:
            torch.testing.assert_close(x, y, atol=atol, rtol=0)


# ---- unit level: the loop, the pruner, the controller ------------------------------------------
def test_micro_batches_are_shared_out_whole_and_in_order():
    from grasp_lora.training.parallel import global_batches, local_part

    order = [7, 3, 9, 0, 4, 8, 1, 6, 2]
    batches = global_batches(order, batch_size=2, world=2)
    assert batches == [[7, 3, 9, 0], [4, 8, 1, 6], [2]]
    assert global_batches(order, batch_size=4, world=1) == batches  # 1 process x batch 4: the same
    for world in (1, 2, 3, 4):
        for b in global_batches(order, 2, world):
            parts = [local_part(b, r, world) for r in range(world)]
            assert [i for p in parts for i in p] == b  # contiguous shares, nothing lost or repeated
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert [local_part([2], r, 2) for r in (0, 1)] == [[2], []]  # the short tail leaves rank 1 empty


def test_sharded_backbones_are_refused():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from grasp_lora.training.parallel import check_distributed_type

    for kind in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        with pytest.raises(ValueError, match="data parallelism only"):
            check_distributed_type(SimpleNamespace(distributed_type=kind))
    for kind in (DistributedType.NO, DistributedType.MULTI_GPU, DistributedType.MULTI_CPU):
        check_distributed_type(SimpleNamespace(distributed_type=kind))


def test_num_processes_relaunches_through_accelerate():
    from grasp_lora.cli import main
    from grasp_lora.launch import launcher_command

    cmd = launcher_command(["search", "demo", "x=1", "--num-processes", "4", "--quiet", "--num-processes=4"], 4, port=29555)
    i = cmd.index("accelerate.commands.launch")
    assert cmd[i + 1 :] == ["--multi_gpu", "--num_processes", "4", "--num_machines", "1", "--main_process_port", "29555",
                            "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "grasp_lora",
                            "search", "demo", "x=1", "--quiet"]
    assert main(["prepare", "demo", "--num-processes", "0"]) == 2


def test_two_processes_train_like_one_with_the_doubled_batch(two_processes, tmp_path):
    ranks = two_processes[1]["train"]
    reference = scenario_train(tmp_path / "one", batch_size=2)
    for kind in ("train_forward", "full_pass"):
        r0, r1, ref = ranks[0][kind], ranks[1][kind], reference[kind]
        # Both ranks hold exactly the same weights (and so the same pruned entries).
        assert_same_tensors(r0["factors"], r1["factors"])
        assert r0["val_losses"] == r1["val_losses"] and r0["best_epoch"] == r1["best_epoch"]
        # ... and they are the 1-process run with batch 2, up to fp32 rounding.
        assert_same_tensors(r0["factors"], ref["factors"], atol=1e-5)
        for a, b in zip(r0["factors"], ref["factors"]):
            assert torch.equal(a == 0, b == 0), f"{kind}: different entries pruned"
        assert (r0["steps"], r0["best_epoch"], r0["stopped_early"]) == (ref["steps"], ref["best_epoch"], ref["stopped_early"])
        assert ref["stopped_early"] and ref["best_epoch"] < len(ref["val_losses"])
        torch.testing.assert_close(torch.tensor(r0["val_losses"]), torch.tensor(ref["val_losses"]), atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.tensor(r0["train_losses"]), torch.tensor(ref["train_losses"]), atol=1e-5, rtol=0)
        # 30 % of every factor is zero: the pruner ran on the summed norms.
        zeros = sum(int((f == 0).sum()) for f in r0["factors"]) / sum(f.numel() for f in r0["factors"])
        assert 0.29 < zeros < 0.31


def test_controller_takes_identical_decisions_on_every_rank(two_processes, tmp_path):
    two = two_processes[0] / "controller"
    r0, r1 = two_processes[1]["controller"]
    assert r0["summary"] == r1["summary"]
    assert_same_tensors(r0["factors"], r1["factors"])  # same weights, same committed mask
    assert r0["rank_digests"] is not None and len(set(r0["rank_digests"])) == 1 and len(r0["rank_digests"]) == 2
    history = [json.loads(line) for line in (two / "grasp" / "history.jsonl").read_text().splitlines()]
    assert len(history) == r0["summary"]["rounds"] >= 2
    committed = [h["committed_ratio"] for h in history]
    assert any(c is not None for c in committed), "no round committed: the masks were never tested"

    reference = scenario_controller(tmp_path / "one", batch_size=2)
    ref_history = [json.loads(line) for line in (tmp_path / "one" / "grasp" / "history.jsonl").read_text().splitlines()]
    assert [h["committed_ratio"] is None for h in history] == [h["committed_ratio"] is None for h in ref_history]
    # Losses agree to fp32 rounding; the policy's numbers get that rounding divided by the spread of
    # the round's rewards (the default controller standardizes its advantages), hence a wider margin.
    tolerance = {"losses": 1e-5, "candidates": 1e-4, "p_c": 1e-4, "mu": 1e-4, "sigma": 1e-4, "sparsity": 1e-4}
    for h, g in zip(history, ref_history):
        for key, atol in tolerance.items():
            torch.testing.assert_close(torch.tensor(h[key]), torch.tensor(g[key]), atol=atol, rtol=0,
                                       msg=lambda m, key=key, h=h: f"round {h['round']} {key}: {m}")
    assert_same_tensors(r0["factors"], reference["factors"], atol=1e-5)


def test_sharded_generation_returns_everything_everywhere(two_processes, tmp_path):
    from grasp_lora.evaluation.generate import generate_predictions, read_predictions

    two = two_processes[0] / "generation"
    ranks = two_processes[1]["generation"]
    assert ranks[0]["predictions"] == ranks[1]["predictions"]
    written = read_predictions(two / "predictions.jsonl")
    assert written == ranks[0]["predictions"] and len(written) == 7  # each id once, rank 0's file
    model, tok = tiny_model("llama", 0)
    rows = [{"id": f"q{i}", "context": "The meeting was held in Paris last spring." * (1 + i % 3),
             "question": f"Where was meeting {i} held?", "answers": ["Paris"]} for i in range(7)]
    one = generate_predictions(model, tok, "mlqa", "en", rows, tmp_path / "one.jsonl", batch_size=2,
                               max_new_tokens=3, progress=False)
    assert one == written


def test_a_failing_rank_fails_every_rank_without_a_hang(two_processes):
    # A hang would end in launch_workers' timeout (subprocess.TimeoutExpired), failing the test.
    r0, r1 = two_processes[1]["failures"]
    # Inside a training step: the failing rank raises its error, the other names it.
    assert r1["train_step"].startswith("_Boom: rank 1 ran out of memory")
    assert r0["train_step"].startswith("RankFailedError") and "rank 1" in r0["train_step"] and "out of memory" in r0["train_step"]
    # A write on rank 0.
    assert r0["rank0_write"].startswith("OSError") and r1["rank0_write"].startswith("RankFailedError")
    assert "rank 0" in r1["rank0_write"] and "No space left" in r1["rank0_write"]
    # Scoring on shards (validation, micro-dev).
    assert r0["scoring"].startswith("_Boom") and r1["scoring"].startswith("RankFailedError") and "rank 0" in r1["scoring"]
    # A rank-0-first block failing on the other rank.
    assert r1["main_first"].startswith("FileNotFoundError") and r0["main_first"].startswith("RankFailedError")
    # Sharded generation.
    assert r1["generation"].startswith("_Boom") and r0["generation"].startswith("RankFailedError")
    # After all of that the collectives are still matched: a final barrier passes on both.
    assert r0["final_barrier"] == r1["final_barrier"] == "ok"


# ---- the CLI through accelerate's launcher ------------------------------------------------------
def run_cli(args: list[str], cache: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grasp_lora", *args], env=child_env(cache), capture_output=True,
                          text=True, timeout=timeout)


EXACT = [*TINY_OVERRIDES, "lora.dropout=0"]  # dropout draws differ per process; without it runs are comparable


def adapter_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def assert_same_adapter(a: Path, b: Path, atol: float = 1e-5) -> None:
    ta, tb = adapter_tensors(a), adapter_tensors(b)
    assert ta.keys() == tb.keys() and ta
    for k in ta:
        torch.testing.assert_close(ta[k], tb[k], atol=atol, rtol=0, msg=k)


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """The whole pipeline on 2 processes x batch 1 through `--num-processes 2` (accelerate's
    launcher), and, in this process, the 1-process x batch 2 reference of its training stages,
    with the grid points run as separate jobs and gathered by `collect` (the scheduler recipe)."""
    from grasp_lora.cli import main

    root = tmp_path_factory.mktemp("cli")
    two, one, cache = root / "two", root / "one", root / "cache"
    started = time.perf_counter()
    proc = run_cli(["pipeline", "demo", *EXACT, "train.batch_size=1", "--run-dir", str(two), "--no-progress",
                    "--num-processes", "2"], cache)
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr[-4000:]

    overrides, where = [*EXACT, "train.batch_size=2"], ["--run-dir", str(one), "--quiet"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRASP_LORA_CACHE", str(cache))
        rc = {
            "grasp": main(["search", "demo", *overrides, "--method", "grasp", *where]),
            "final": main(["finetune", "demo", *overrides, *where]),
            "point 0": main(["search", "demo", *overrides, "--method", "grid", "--point", "0", *where]),
            "early collect": main(["collect", "demo", *overrides, *where]),  # point 1 missing
            "point 1": main(["search", "demo", *overrides, "--method", "grid", "--point", "1", *where]),
            "collect": main(["collect", "demo", *overrides, *where]),
        }
    return {"two": two, "one": one, "cache": cache, "proc": proc, "seconds": seconds, "rc": rc}


def test_cli_pipeline_on_two_processes_matches_one_process_with_the_doubled_batch(cli_runs):
    two, one = cli_runs["two"], cli_runs["one"]
    print(f"2-process pipeline: {cli_runs['seconds']:.1f} s")
    for lang in ("en", "ar"):
        assert_same_adapter(two / "adapters" / lang, one / "adapters" / lang)
        manifest = json.loads((two / "adapters" / lang / "manifest.json").read_text())
        assert manifest["processes"] == 2 and len(set(manifest["rank_digests"])) == 1
    # The controller: both ranks agreed (digests of history + masks + weights), and the run is
    # the 1-process run with the doubled batch.
    grasp = json.loads((two / "grasp" / "result.json").read_text())
    assert grasp["processes"] == 2 and len(grasp["rank_digests"]) == 2 and len(set(grasp["rank_digests"])) == 1
    h2 = [json.loads(x) for x in (two / "grasp" / "history.jsonl").read_text().splitlines()]
    h1 = [json.loads(x) for x in (one / "grasp" / "history.jsonl").read_text().splitlines()]
    assert len(h2) == len(h1) >= 2
    for a, b in zip(h2, h1):
        torch.testing.assert_close(torch.tensor(a["candidates"]), torch.tensor(b["candidates"]), atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.tensor(a["losses"]), torch.tensor(b["losses"]), atol=1e-5, rtol=0)
        assert a["committed_ratio"] == b["committed_ratio"]
    # The final run and the grid points, pruned with norms summed over the processes.
    for stage in ("final", "grid/point_0.3000", "grid/point_0.6000"):
        assert_same_adapter(two / "seed_42" / stage / "adapter", one / "seed_42" / stage / "adapter")
        result = json.loads((two / "seed_42" / stage / "result.json").read_text())
        assert result["processes"] == 2 and len(set(result["rank_digests"])) == 1
    best = [json.loads((d / "seed_42" / "grid" / "summary.json").read_text())["best_ratio"] for d in (two, one)]
    assert best[0] == best[1]
    # The stages without training ran on rank 0, generation was shared out, the report is whole.
    assert (two / "baselines" / "ties" / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((two / "baselines" / "adaptive_merge" / "result.json").read_text())["processes"] == 2
    test_ids = {json.loads(x)["id"] for x in (two / "data" / "ar" / "test.jsonl").read_text().splitlines()}
    systems = sorted((two / "systems").iterdir())
    assert len(systems) >= 6
    for system in systems:
        ids = [json.loads(x)["id"] for x in (system / "predictions.jsonl").read_text().splitlines()]
        assert sorted(ids) == sorted(test_ids), system.name  # every example once
        assert (system / "metrics.json").is_file() and (system / "manifest.json").is_file()
    assert (two / "report.md").is_file()
    lines = cli_runs["proc"].stdout.splitlines()  # one copy of the output: rank 0's
    assert lines.count("[run]  train en adapter") == 1
    assert sum(line.startswith(f"report: {two}") for line in lines) == 1


def test_grid_points_as_separate_jobs_then_collect(cli_runs):
    """The scheduler recipe: one job per point (`--point I`), then `collect`."""
    rc, one = cli_runs["rc"], cli_runs["one"]
    assert rc == {"grasp": 0, "final": 0, "point 0": 0, "early collect": 2, "point 1": 0, "collect": 0}
    summary = json.loads((one / "seed_42" / "grid" / "summary.json").read_text())
    assert [p["ratio"] for p in summary["points"]] == [0.3, 0.6] and summary["runs"] == 2
    best = min(summary["points"], key=lambda p: (p["val_loss"], p["ratio"]))
    assert summary["best_ratio"] == best["ratio"]
    selection = json.loads((one / "grid" / "summary.json").read_text())  # one seed: its best is the selection
    assert selection["selected_ratio"] == best["ratio"] and selection["seeds"] == [42]


def test_cli_error_on_every_rank_exits_nonzero(cli_runs):
    proc = run_cli(["search", "demo", *EXACT, "--method", "grid", "--point", "7", "--run-dir", str(cli_runs["two"]),
                    "--quiet", "--num-processes", "2"], cli_runs["cache"], timeout=120)
    assert proc.returncode != 0
    assert "--point 7: the grid has points 0..1" in proc.stderr


if __name__ == "__main__":
    _worker(sys.argv[1], Path(sys.argv[2]))
