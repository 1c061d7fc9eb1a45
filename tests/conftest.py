import os
from pathlib import Path

import pytest
import torch

# Tiny models run fastest single-threaded, and on a 2-core machine two torch threads fight with
# pytest and the tokenizer; the few tests on the real embedded model are slower this way but
# still seconds. Override with GRASP_LORA_TEST_THREADS.
torch.set_num_threads(int(os.environ.get("GRASP_LORA_TEST_THREADS", "1")))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# `make test` runs the suite on two pytest-xdist workers, one test file at a time (--dist loadfile),
# so a module fixture is built once per run; the files that take longest (CPU seconds, measured)
# start first and the many short ones fill in at the end, so the two workers finish close together
# (`make test` passes --no-loadscope-reorder so that xdist keeps this order, and prints the ten
# slowest tests). The one finished tiny pipeline run that several files read (`tiny_run`) is built
# once for both workers: test_pipeline builds it while the other worker is on test_distributed.
LONGEST_FIRST = ("test_distributed", "test_gguf_conversion", "test_pipeline", "test_artefacts", "test_grasp_search",
                 "test_resume", "test_readme", "test_xlsum_pipeline", "test_bench_controller_replay", "test_cli",
                 "test_tracking", "test_optuna_search", "test_imports")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).stem, len(rank)))  # stable within a file


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    """Two stage-1-like PEFT LoRA folders (source, target) on tiny-llama, different random factors."""
    from helpers import make_adapter

    root = tmp_path_factory.mktemp("adapters")
    return [make_adapter(root / "en", 1), make_adapter(root / "ar", 2)]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, worker_id):
    """(root, run folder, CompletedProcess) of the whole pipeline on the tiny recipe, run once by the
    installed command and shared by the xdist workers (the first one to ask builds it under a file
    lock). Read-only: tests that change a run work on a copy."""
    import subprocess

    from filelock import FileLock

    from helpers import run_tiny_pipeline

    if worker_id == "master":  # no xdist
        root = tmp_path_factory.mktemp("tiny_run")
        run, proc = run_tiny_pipeline(root)
        return root, run, proc
    root = tmp_path_factory.getbasetemp().parent / "tiny_run"
    with FileLock(str(root) + ".lock"):
        done = root / "stdout.txt"
        if not done.is_file():
            root.mkdir(exist_ok=True)
            _, proc = run_tiny_pipeline(root)
            done.write_text(proc.stdout)
    return root, root / "run", subprocess.CompletedProcess([], 0, done.read_text(), "")


@pytest.fixture
def restore_registry():
    """register_template mutates the task registry (module state): undo it after each test that calls it."""
    from grasp_lora.data import tasks

    saved = {name: (dict(s.templates), dict(s.max_new)) for name, s in tasks._TASKS.items()}
    yield
    for name, (templates, max_new) in saved.items():
        tasks._TASKS[name].templates = templates
        tasks._TASKS[name].max_new = max_new
