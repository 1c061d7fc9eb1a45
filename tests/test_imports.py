"""The package's import structure: every module imports on its own, and no import cycle exists."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import grasp_lora

PACKAGE_DIR = Path(grasp_lora.__file__).resolve().parent
# The entry point of `python -m grasp_lora`: importing it runs the CLI.
NOT_IMPORTABLE = {"grasp_lora.__main__"}


def module_files() -> dict[str, Path]:
    """Dotted name -> file of every module of the package (packages by their __init__)."""
    out = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


# Each module is imported in a child forked from a fresh interpreter that has imported torch and
# nothing of grasp_lora: torch is ~2 s of every import on a 2-core machine (a minute for the package
# at one interpreter per module), and preloading it changes nothing about grasp_lora's own import
# order, which is what this test is about.
_FORK_EACH = r"""
import os, sys, traceback
import torch  # noqa: F401

failed = {}
for name in sys.argv[1:]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            __import__(name)
            code = 0
        except BaseException:
            os.write(write, traceback.format_exc().encode())
            code = 1
        os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as r:
        err = r.read().decode()
    _, status = os.waitpid(pid, 0)
    if status != 0:
        failed[name] = err.strip().splitlines()[-1] if err.strip() else f"status {status}"
print(repr(failed))
"""


def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    # A module that works only after another one was imported first (a cycle, a missing import
    # another module happens to do) fails here.
    names = [n for n in module_files() if n not in NOT_IMPORTABLE]
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, "-c", _FORK_EACH, *names], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "{}", proc.stdout


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, at any level (function-level imports included:
    they run too, only later). `from pkg import name` counts as an import of `pkg.name` when that
    is a module, else of `pkg`. A submodule's implicit import of its parent package is left out:
    Python registers a package before running its __init__, so a package that imports its own
    submodules, which import each other by their full names, is not a cycle."""
    files = module_files()
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(name, path.name == "__init__.py", node)
                for a in node.names:
                    deps.add(f"{source}.{a.name}" if f"{source}.{a.name}" in files else source)
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert {"grasp_lora.pipeline", "grasp_lora.pruning.importance", "grasp_lora.data.tasks"} <= set(graph)
    assert "grasp_lora.io" in graph["grasp_lora.config"]  # function-level imports are edges too
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
