"""Artefacts that prove themselves: manifests record every file's size and sha256, resume redoes a
damaged unit and what depends on it, `grasp-lora verify` names the file, and no command ends in a
traceback on a damaged file. Also: one process per unit (grasp_lora.run_lock)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import TINY_OVERRIDES, cli_env, comparable_results, run_cli

from grasp_lora.artefacts import check_unit, damaged_files
from grasp_lora.io import (DamagedFileError, check_safetensors, load_safetensors, read_json, read_jsonl,
                           write_json, write_manifest)


# ---- the file record, without a model ----------------------------------------------------------

def _unit(tmp_path: Path) -> Path:
    d = tmp_path / "unit"
    (d / "adapter").mkdir(parents=True)
    write_json(d / "result.json", {"ratio": 0.3})
    (d / "adapter" / "w.bin").write_bytes(b"\x00" * 64)
    (d / ".result.json.123.tmp").write_text("a temp file of a crashed write")
    write_manifest(d, stage="test")
    return d


def test_manifest_records_every_written_file_but_itself_and_hidden_ones(tmp_path):
    d = _unit(tmp_path)
    files = read_json(d / "manifest.json")["files"]
    assert set(files) == {"result.json", "adapter/w.bin"}
    assert files["adapter/w.bin"]["size"] == 64 and len(files["adapter/w.bin"]["sha256"]) == 64
    assert check_unit("unit", d).state == "complete"


@pytest.mark.parametrize("damage, expected", [
    (lambda d: (d / "adapter" / "w.bin").write_bytes(b"\x00" * 63), "adapter/w.bin has 63 bytes, 64 when written"),
    (lambda d: (d / "adapter" / "w.bin").write_bytes(b"\x00" * 63 + b"\x01"),
     "adapter/w.bin changed since it was written (sha256 differs)"),
    (lambda d: (d / "result.json").unlink(), "result.json is missing"),
])
def test_each_kind_of_damage_is_named(tmp_path, damage, expected):
    d = _unit(tmp_path)
    damage(d)
    assert damaged_files(d, read_json(d / "manifest.json")) == [expected]
    check = check_unit("unit", d)
    assert check.state == "damaged" and check.problems == [expected]


def test_a_manifest_that_does_not_parse_is_named_as_such(tmp_path):
    d = _unit(tmp_path)
    text = (d / "manifest.json").read_text()
    (d / "manifest.json").write_text(text[: len(text) // 2])
    check = check_unit("unit", d)
    assert check.state == "damaged" and check.problems == ["manifest.json does not parse"]


def test_damaged_json_jsonl_and_safetensors_are_one_named_error(tmp_path):
    from safetensors.torch import save_file

    js = tmp_path / "m.json"
    js.write_text('{"a": 1')
    jl = tmp_path / "p.jsonl"
    jl.write_text('{"id": 1}\n{"id": \n{"id": 3}\n')
    torn = tmp_path / "torn.jsonl"
    torn.write_text('{"id": 1}\n{"id": ')  # a crash mid-append: the torn last line is dropped
    bad_utf8 = tmp_path / "u.json"
    bad_utf8.write_bytes(b'{"a": "\xff"}')
    st = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(32, 32)}, str(st))
    st.write_bytes(st.read_bytes()[:-100])
    assert read_jsonl(torn) == [{"id": 1}]
    for call, path in ((read_json, js), (read_jsonl, jl), (read_json, bad_utf8), (load_safetensors, st),
                       (check_safetensors, st)):
        with pytest.raises(DamagedFileError) as e:
            call(path)
        message = str(e.value)
        assert message.startswith(f"{path}: damaged") and "\n" not in message and "grasp-lora verify" in message
    with pytest.raises(DamagedFileError, match="line 2"):
        read_jsonl(jl)


# ---- a finished tiny run, damaged ---------------------------------------------------------------

def _copy(tiny_run, tmp_path: Path) -> Path:
    _, run, _ = tiny_run
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def _units(run: Path):
    from grasp_lora.config import load_config
    from grasp_lora.run_layout import RunLayout
    from grasp_lora.run_plan import units

    cfg = load_config(run / "config.yaml")
    return units(cfg, RunLayout.of(cfg, run))


def _downstream(run: Path, names: set[str]) -> set[str]:
    """The units given and every unit that reads from them, by the plan's upstream edges."""
    out = set(names)
    for u in _units(run):  # upstream first
        if out & set(u.upstream):
            out.add(u.name)
    return out


def _flip(path: Path, at: int = 5) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGES = {  # one file of each kind a run writes, and the unit it belongs to
    "safetensors": ("adapters/ar/adapter_model.safetensors", _truncate),
    "json": ("systems/zero_shot/metrics.json", _flip),
    "jsonl": ("grasp/history.jsonl", _flip),
    "data": ("data/ar/train.jsonl", _truncate),
    "png": ("grasp/trajectory.png", _flip),
    "manifest": ("seed_42/final/manifest.json", _truncate),
}


@pytest.mark.parametrize("kind", list(DAMAGES))
def test_verify_names_the_damaged_file_and_what_a_pipeline_redoes(tiny_run, tmp_path, kind, capsys):
    from grasp_lora import fingerprint as fp
    from grasp_lora.cli import main
    from grasp_lora.verify import verify_run

    run = _copy(tiny_run, tmp_path)
    n = len(_units(run))
    assert main(["verify", str(run)]) == 0
    assert f": ok: {n} of {n} units intact" in capsys.readouterr().out
    rel, damage = DAMAGES[kind]
    damage(run / rel)
    unit = next(u.name for u in _units(run) if rel.startswith(u.name + "/"))
    assert main(["verify", str(run)]) == 1
    named = [line for line in capsys.readouterr().out.splitlines() if line.startswith("damaged:")]
    assert len(named) == 1
    assert named[0] == f"damaged: {rel} does not parse" if kind == "manifest" else named[0].startswith(f"damaged: {rel} ")
    check = verify_run(run)
    assert [u.name for u in check.damaged] == [unit]
    expected = _downstream(run, {unit})
    assert set(check.redo) == expected
    stale = fp.plan_resume(_units(run))
    assert {s.unit.name for s in stale} == expected and all(s.damaged for s in stale)


def test_pipeline_redoes_exactly_the_damaged_units_and_their_dependents(tiny_run, tmp_path):
    root, reference, _ = tiny_run
    run = _copy(tiny_run, tmp_path)
    for kind in ("safetensors", "json", "manifest"):
        rel, damage = DAMAGES[kind]
        damage(run / rel)
    expected = _downstream(run, {"adapters/ar", "systems/zero_shot", "seed_42/final"})
    untouched = {u.name: (u.dir / "manifest.json").read_bytes() for u in _units(run) if u.name not in expected}
    # No --rerun-changed: damage is redone without asking (a changed setting is refused instead).
    proc = run_cli(["pipeline", "demo", *TINY_OVERRIDES, "--run-dir", str(run), "--no-progress"], root / "cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    redo = [line for line in proc.stdout.splitlines() if line.startswith("[redo]")]
    assert {line.split()[1].rstrip(":") for line in redo} == expected
    assert "[redo] seed_42/final: manifest.json does not parse" in proc.stdout
    assert "[redo] adapters/ar: damaged: adapter_model.safetensors has" in proc.stdout
    assert {n: (run / n / "manifest.json").read_bytes() for n in untouched} == untouched  # not redone
    assert run_cli(["verify", str(run)], root / "cache").returncode == 0
    # Seeded and deterministic: the redone units give the reference's numbers again.
    assert comparable_results(run / "results.json") == comparable_results(reference / "results.json")


def test_no_command_ends_in_a_traceback_on_a_damaged_file(tiny_run, tmp_path):
    root, _, _ = tiny_run
    run = _copy(tiny_run, tmp_path)
    adapter = tmp_path / "adapter"  # outside the run folder: nothing redoes it
    shutil.copytree(run / "seed_42/final/adapter", adapter)
    _truncate(adapter / "adapter_model.safetensors")
    preds = tmp_path / "preds.jsonl"
    preds.write_text('{"id": "a", "prediction": "x"}\n{"id": \n{"id": "c", "prediction": "z"}\n')
    _flip(run / "grasp/result.json", at=0)
    yaml_run = tmp_path / "yaml_run"  # a run whose config.yaml does not parse
    shutil.copytree(run, yaml_run)
    with open(yaml_run / "config.yaml", "ab") as f:
        f.write(b"\x00: [\n")
    calls = {
        "generate": (["generate", "demo", *TINY_OVERRIDES, "--run-dir", str(run), "--adapter", str(adapter),
                      "--out", str(tmp_path / "out.jsonl")], adapter / "adapter_model.safetensors"),
        "evaluate": (["evaluate", "demo", *TINY_OVERRIDES, "--run-dir", str(run), "--predictions", str(preds)], preds),
        "report": (["report", str(run)], run / "grasp/result.json"),
        "report of a damaged config.yaml": (["report", str(yaml_run)], yaml_run / "config.yaml"),
    }
    stderr = {}
    for name, (args, path) in calls.items():
        proc = run_cli([*args, "--quiet"], root / "cache")
        stderr[name] = proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("grasp-lora: error:")]
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (name, proc.stderr[-2000:])
        assert len(errors) == 1 and errors[0].startswith(f"grasp-lora: error: {path}: damaged"), (name, errors)
    # generate and evaluate run no stage, so they leave the run's damaged unit as it is, and say so
    assert "unit(s) damaged or reading damaged ones (grasp, " in stderr["generate"]
    assert (run / "grasp/result.json").is_file()


# ---- one process per unit -----------------------------------------------------------------------

HOLDS = ("import sys; from grasp_lora.run_lock import UnitBusyError, UnitLock\n"
         "try:\n    UnitLock(sys.argv[1], sys.argv[2]).acquire().release(); print('free')\n"
         "except UnitBusyError as e:\n    print(e)")


def test_a_unit_lock_is_exclusive_across_processes_reentrant_within_one_and_released(tmp_path):
    import os

    from grasp_lora.run_lock import UnitLock, unit_lock

    def other_process(unit: str) -> str:
        return subprocess.run([sys.executable, "-c", HOLDS, str(tmp_path), unit], capture_output=True, text=True,
                              check=True).stdout.strip()

    with unit_lock(tmp_path, "seed_42/final") as held:
        assert held.held
        message = other_process("seed_42/final")
        assert f"seed_42/final is in use by another grasp-lora process (pid {os.getpid()} on " in message
        assert other_process("seed_42/grid/point_0.3000") == "free"  # other units are free
        again = UnitLock(tmp_path, "seed_42/final").acquire()  # this process again: re-entrant
        again.release()
        assert other_process("seed_42/final") != "free"  # still held by the first holder
    assert other_process("seed_42/final") == "free"


HOLD = ("import sys, time; from grasp_lora.run_lock import UnitLock; "
        "UnitLock(sys.argv[1], 'systems/grasp_seed42').acquire(); print('held', flush=True); time.sleep(120)")


def test_a_second_process_is_refused_in_one_line_and_a_dead_holder_is_taken_over(tiny_run, tmp_path):
    root, _, _ = tiny_run
    run = _copy(tiny_run, tmp_path)
    unit = run / "systems/grasp_seed42"
    shutil.rmtree(unit)  # unfinished: the one unit the pipeline has to work on
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True,
                              env=cli_env(root / "cache"))
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.perf_counter()
        refused = run_cli(["pipeline", "demo", *TINY_OVERRIDES, "--run-dir", str(run), "--quiet"], root / "cache")
        lines = [line for line in refused.stderr.strip().splitlines() if line]
        assert refused.returncode == 2 and len(lines) == 1, refused.stderr[-2000:]
        assert f"systems/grasp_seed42 is in use by another grasp-lora process (pid {holder.pid} on " in lines[0]
        assert time.perf_counter() - started < 60
        assert not (unit / "manifest.json").exists()
        assert run_cli(["verify", str(run)], root / "cache").returncode == 0  # read-only: no lock needed
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding the lock
        holder.wait()
    done = run_cli(["pipeline", "demo", *TINY_OVERRIDES, "--run-dir", str(run), "--quiet"], root / "cache")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (unit / "manifest.json").is_file()
