"""Every `grasp-lora ... demo` command of the README's "Use" block runs, on a tiny model.

The commands run in this process, through `grasp_lora.cli.main` (what the `grasp-lora` script
calls): a fresh interpreter per command would spend most of the test importing torch again.
test_pipeline and test_distributed run the installed command in subprocesses."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import logging

from helpers import TINY_OVERRIDES

README = Path(__file__).resolve().parents[1] / "README.md"
# Three grid points so the README's `--point 2` exists; everything else as the tiny pipeline test.
OVERRIDES = [o for o in TINY_OVERRIDES if not o.startswith("grid.ratios")] + ["grid.ratios=[0.3, 0.5, 0.7]"]


def readme_demo_commands() -> list[list[str]]:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"## Use\n.*?```bash\n(.*?)```", text, re.S).group(1)
    commands = []
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("grasp-lora ") and re.search(r"\bdemo\b", line):
            commands.append(shlex.split(line)[1:])
    return commands


def with_tiny_run(args: list[str], run_dir: Path) -> list[str]:
    """Point a README command at a scratch run folder and a tiny model (overrides follow the recipe)."""
    args = [a.replace("runs/demo", str(run_dir)) for a in args]
    if args[0] in ("report", "verify"):
        return args
    recipe_at = args.index("demo")
    return [*args[: recipe_at + 1], *OVERRIDES, "--run-dir", str(run_dir), "--quiet", *args[recipe_at + 1:]]


def test_readme_lists_the_stage_commands():
    verbs = {c[0] for c in readme_demo_commands()}
    assert {"prepare", "train-adapter", "search", "finetune", "baseline", "generate", "evaluate", "report",
            "verify"} <= verbs


def test_every_readme_demo_command_runs(tmp_path, monkeypatch, capsys):
    from grasp_lora.cli import main

    run_dir = tmp_path / "runs" / "demo"
    monkeypatch.chdir(tmp_path)  # relative outputs of the README (preds.jsonl) land in the scratch folder
    monkeypatch.setenv("GRASP_LORA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    log = logging.getLogger("grasp_lora")
    saved = (list(log.handlers), log.level)
    try:
        for args in readme_demo_commands():
            code = main(with_tiny_run(args, run_dir))
            assert code == 0, f"{' '.join(args)}\n{capsys.readouterr().err[-2000:]}"
    finally:
        log.handlers[:], log.level = saved
    assert (run_dir / "seed_42/final/adapter/adapter_config.json").exists()
    assert (run_dir / "systems/lorahub/metrics.json").exists()
    assert (tmp_path / "metrics.json").exists()  # `evaluate --predictions preds.jsonl` writes beside it
    assert (run_dir / "report.md").exists()


def own_data_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"## Your own data\n.*?```bash\n(.*?)```", text, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip().startswith("grasp-lora ")]


def test_your_own_data_commands_run_for_a_language_without_a_builtin_prompt(tmp_path, monkeypatch, capsys):
    """The README's three commands, as a user types them, on a tiny model: a recipe for Swahili from
    the command line alone, the whole method on it, and predictions from the adapter it returns."""
    import json

    import yaml

    from grasp_lora.cli import main
    from grasp_lora.data.demo import demo_pool
    from grasp_lora.data.tasks import get_task
    from grasp_lora.io import read_jsonl

    commands = own_data_commands()
    assert [shlex.split(c)[1] for c in commands] == ["config", "pipeline", "generate"]
    lang = re.search(r"data\.target_lang=(\w+)", commands[0]).group(1)
    assert lang not in get_task("mlqa").templates  # a language the package ships no prompt for
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRASP_LORA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with open(f"{lang}.jsonl", "w", encoding="utf-8") as f:  # the user's file: QA rows in their language
        for r in demo_pool("mlqa", "ar")[:40]:
            f.write(json.dumps({k: r[k] for k in ("id", "context", "question", "answers")}, ensure_ascii=False) + "\n")
    log = logging.getLogger("grasp_lora")
    saved = (list(log.handlers), log.level)
    try:
        for command in commands:
            args, redirect = command, None
            if " > " in command:
                args, redirect = command.rsplit(" > ", 1)
            argv = shlex.split(args)[1:]
            if argv[0] == "config":  # the recipe the user writes carries the tiny model and sizes
                argv += [o for o in TINY_OVERRIDES if not o.startswith("data.target_data")]
            capsys.readouterr()
            code = main(argv + (["--quiet"] if argv[0] != "config" else []))
            out = capsys.readouterr()
            assert code == 0, f"{command}\n{out.err[-2000:]}"
            if redirect:
                Path(redirect.strip()).write_text(out.out, encoding="utf-8")
    finally:
        log.handlers[:], log.level = saved
    recipe = yaml.safe_load(Path(f"{lang}.yaml").read_text(encoding="utf-8"))
    template = recipe["data"]["prompts"][lang]["template"]
    assert "{context}" in template and template.endswith(":") and "\n" in template
    run = tmp_path / "runs" / lang
    assert (run / "report.md").exists() and any((run / "systems").glob("*grasp*/metrics.json"))
    test_ids = [r["id"] for r in read_jsonl(run / "data" / lang / "test.jsonl")]
    predictions = read_jsonl(tmp_path / f"{lang}_predictions.jsonl")
    assert sorted(p["id"] for p in predictions) == sorted(test_ids) and len(test_ids) == 4
    manifest = json.loads((run / "adapters" / lang / "manifest.json").read_text(encoding="utf-8"))
    # the adapter was trained on the user's prompt (its fingerprint records it)
    assert manifest["fingerprint"]["keys"][f"data.prompts.{lang}.template"] == template
