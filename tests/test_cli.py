"""CLI conventions: --version, `config`, KEY=VALUE overrides anywhere, errors naming the override,
logging levels (--quiet / default / --verbose)."""

from __future__ import annotations

import logging

import pytest
import yaml

import grasp_lora
from grasp_lora.cli import main, resolve_recipe
from grasp_lora.config import load_config
from helpers import TINY_OVERRIDES, run_cli


@pytest.fixture(autouse=True)
def restore_logging():
    log = logging.getLogger("grasp_lora")
    saved = (list(log.handlers), log.level, log.propagate)
    yield
    log.handlers[:], log.level, log.propagate = saved


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"grasp-lora {grasp_lora.__version__}"


def test_version_matches_the_installed_distribution():
    from importlib.metadata import version

    assert version("grasp-lora") == grasp_lora.__version__


def test_config_prints_what_a_run_saves(tmp_path, capsys):
    run = tmp_path / "run"
    # Overrides on both sides of the options.
    args = ["demo", "train.lr=3e-4", "--run-dir", str(run), "--quiet", "lora.r=4"]
    assert main(["config", *args]) == 0
    printed = capsys.readouterr().out
    assert yaml.safe_load(printed)["train"]["lr"] == 3e-4 and yaml.safe_load(printed)["lora"]["r"] == 4
    assert main(["prepare", *args]) == 0
    assert (run / "config.yaml").read_text(encoding="utf-8") == printed
    expected = load_config(resolve_recipe("demo"), ["train.lr=3e-4", "lora.r=4", f"pipeline.output_dir={run}"])
    assert yaml.safe_load(printed) == expected.to_dict()


def test_bad_override_is_one_line_naming_the_override(capsys):
    assert main(["config", "demo", "--quiet", "train.epochs=two"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "grasp-lora: error: override 'train.epochs=two': train.epochs: expected an integer, got 'two'"


def test_stray_word_is_still_refused(capsys):
    with pytest.raises(SystemExit) as e:
        main(["config", "demo", "--quiet", "notanoverride"])
    assert e.value.code == 2 and "unrecognized arguments: notanoverride" in capsys.readouterr().err


def test_logging_levels(tmp_path, capsys):
    line = "data mlqa/ar: loaded"
    assert main(["prepare", "demo", "--run-dir", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert line in out and "[run]  prepare data" in out and "grasp_lora.data.sources" not in out
    assert main(["prepare", "demo", "--run-dir", str(tmp_path / "b"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert line not in out and "[run]" not in out and "splits written to" in out  # results still print
    assert main(["--verbose", "prepare", "demo", "--run-dir", str(tmp_path / "c")]) == 0
    assert f"grasp_lora.data.sources: {line}" in capsys.readouterr().out


def test_overrides_after_the_options_run_a_grid_search(tmp_path):
    """The issue's example: `grasp-lora search demo --method grid train.lr=3e-4`."""
    run = tmp_path / "run"
    proc = run_cli(["search", "demo", "--method", "grid", "--run-dir", str(run), "--no-progress", *TINY_OVERRIDES,
                    "train.lr=3e-4"], tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "grid best ratio" in proc.stdout and "[run]  grid point 1" in proc.stdout
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["lr"] == 3e-4
    assert (run / "seed_42/grid/summary.json").is_file()
