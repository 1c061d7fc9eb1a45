"""A language that ships no prompt, used from the command line alone: `data.prompts` in a recipe or
an override gives it one, checked at config time; every stage then builds its prompts with it.

The end-to-end test runs the three commands a README "Your own data" section shows (COMMANDS),
in this process through `grasp_lora.cli.main`, on the tiny model (tests/helpers.py)."""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

import pytest

from helpers import TINY_OVERRIDES

from grasp_lora.config import load_config
from grasp_lora.config_parsing import ConfigError
from grasp_lora.data import tasks
from grasp_lora.data.tasks import answer_cue, build_prompt, max_new_tokens, register_template, task_spec

TEMPLATE = "Jibu swali kwa kutumia muktadha.\nMuktadha:{context}\nSwali:{question}\nJibu:"
# The prompt as a shell passes it: YAML's double-quoted "\n" (two characters) is the newline.
PROMPT = r'data.prompts={sw: {template: "Jibu swali kwa kutumia muktadha.\nMuktadha:{context}\nSwali:{question}\nJibu:"}}'
SW = f"data.target_lang=sw data.target_data=sw.jsonl '{PROMPT}'"
# What README "Your own data" shows (sw.jsonl: one {"id", "context", "question", "answers"} per
# line; the demo recipe's sizes take 52 rows, 20 + 12 + 8 + 12).
COMMANDS = f"""
grasp-lora prepare demo {SW} --run-dir runs/sw
grasp-lora train-adapter demo {SW} --lang target --run-dir runs/sw
grasp-lora generate demo {SW} --adapter runs/sw/adapters/sw --out sw_predictions.jsonl --run-dir runs/sw
"""
QA = {"id": "q", "context": "CTX", "question": "QQ", "answers": ["A"]}

_PLACES = ["Nairobi", "Mombasa", "Arusha", "Dodoma", "Kisumu", "Zanzibar", "Kampala", "Tanga", "Moshi", "Lamu"]


def write_swahili_pool(path: Path, n: int = 20) -> Path:
    import json

    rows = []
    for i in range(n):
        place = _PLACES[i % len(_PLACES)]
        rows.append({"id": f"sw-{i}", "context": f"Mji wa {place} una watu {1000 + 37 * i} na soko kubwa.",
                     "question": f"Mji gani una watu {1000 + 37 * i}?", "answers": [place]})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """`grasp-lora ARGS...` in this process, in a scratch folder; returns (exit code, stderr)."""
    from grasp_lora.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRASP_LORA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    log = logging.getLogger("grasp_lora")
    saved = (list(log.handlers), log.level)

    def run(args: list[str]) -> tuple[int, str]:
        capsys.readouterr()
        code = main(args)
        return code, capsys.readouterr().err

    yield run
    log.handlers[:], log.level = saved


def tiny(args: list[str]) -> list[str]:
    """A README command on the tiny model: its overrides after the test's, so the command's win."""
    at = args.index("demo")
    return [*args[: at + 1], *TINY_OVERRIDES, *args[at + 1:], "--quiet"]


# ---- config time ------------------------------------------------------------------------------

def test_a_language_without_a_prompt_is_refused_before_any_work_naming_the_key(cli, tmp_path):
    write_swahili_pool(tmp_path / "sw.jsonl")
    code, err = cli(tiny(["prepare", "demo", "data.target_lang=sw", "data.target_data=sw.jsonl",
                          "--run-dir", "runs/sw"]))
    assert code == 2
    line = err.strip()
    assert "\n" not in line
    assert "data.target_lang: task mlqa has no prompt for 'sw'" in line
    assert "set data.prompts.sw.template" in line and "{context}, {question}" in line
    assert not (tmp_path / "runs").exists()  # refused before the run folder, the data or the model
    # The override the message suggests is one that works.
    suggested = line.split("e.g. ", 1)[1].rstrip(")")
    cfg = load_config(None, ["data.target_lang=sw", suggested])
    assert answer_cue(task_spec(cfg.data), "sw") == "Answer:"


def test_the_source_language_needs_a_prompt_too():
    with pytest.raises(ConfigError, match=r"^override 'data.source_lang=sw': data.source_lang: .*data.prompts.sw.template"):
        load_config(None, ["data.source_lang=sw"])
    with pytest.raises(ConfigError, match=r"data.target_lang: task xlsum has no prompt for 'sw'.*\{article\}"):
        load_config(None, ["data.task=xlsum", "data.target_lang=sw"])


@pytest.mark.parametrize("template,match", [
    ("Swali:{question}\nJibu:", r"data.prompts.sw.template: must contain \{context\} exactly once"),
    ("{context} {question} {title}\nJibu:", r"data.prompts.sw.template: unknown placeholder\(s\) \{title\}"),
    ("Muktadha:{context}\nSwali:{question}", r"data.prompts.sw.template: must end with an answer cue"),
])
def test_a_bad_template_in_a_recipe_is_refused_naming_the_key(tmp_path, template, match):
    import yaml

    recipe = tmp_path / "sw.yaml"
    recipe.write_text(yaml.safe_dump({"data": {"target_lang": "sw", "prompts": {"sw": {"template": template}}}}),
                      encoding="utf-8")
    with pytest.raises(ConfigError, match=match) as e:
        load_config(recipe)
    assert "\n" not in str(e.value)


def test_bad_prompt_settings_are_refused_naming_the_key():
    cases = {
        "data.prompts={sw: {template: 3}}": "data.prompts.sw.template: expected a string",
        "data.prompts={sw: {tempalte: x}}": "unknown key 'data.prompts.sw.tempalte'",
        "data.prompts={ar: {max_new_tokens: 0}}": "data.prompts.ar.max_new_tokens: must be >= 1",
        "data.prompts={sw: {max_new_tokens: 8}}": "data.prompts.sw.template: task mlqa has no prompt for 'sw' to keep",
        "data.prompts={no: {max_new_tokens: 8}}": "data.prompts: a language code must be text, got False",
        "data.prompts=[sw]": "data.prompts: expected a mapping",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError) as e:
            load_config(None, [override])
        assert message in str(e.value) and "\n" not in str(e.value), override


def test_a_configured_template_overrides_the_builtin_one_without_touching_the_registry():
    builtin = build_prompt("mlqa", "ar", QA)
    cfg = load_config(None, [r'data.prompts={ar: {template: "Ajib.\nNass:{context}\nSual:{question}\nJawab:", '
                             r'max_new_tokens: 12}}'])
    spec = task_spec(cfg.data)
    assert build_prompt(spec, "ar", QA) == "Ajib.\nNass:CTX\nSual:QQ\nJawab:"
    assert answer_cue(spec, "ar") == "Jawab:" and max_new_tokens(spec, "ar") == 12
    assert build_prompt(spec, "en", QA) == build_prompt("mlqa", "en", QA)  # other languages keep theirs
    assert build_prompt("mlqa", "ar", QA) == builtin and max_new_tokens("mlqa", "ar") == 64  # registry as it was
    # A null template keeps the builtin one and changes only the generation limit.
    cfg = load_config(None, ["data.task=xlsum", "data.prompts={ar: {max_new_tokens: 100}}"])
    spec = task_spec(cfg.data)
    assert spec.templates["ar"] == tasks.get_task("xlsum").templates["ar"] and max_new_tokens(spec, "ar") == 100
    assert max_new_tokens(task_spec(load_config(None, ["data.task=xlsum"]).data), "ar") == 128


def test_recipe_and_command_line_prompts_merge_by_language_and_round_trip(tmp_path):
    import yaml

    recipe = tmp_path / "sw.yaml"
    recipe.write_text(yaml.safe_dump({"data": {"target_lang": "sw", "prompts": {"sw": {"template": TEMPLATE}}}},
                                     allow_unicode=True), encoding="utf-8")
    cfg = load_config(recipe, ["data.prompts={sw: {max_new_tokens: 16}}"])
    assert cfg.data.prompts["sw"].template == TEMPLATE and cfg.data.prompts["sw"].max_new_tokens == 16
    assert load_config(None, ["data.target_lang=sw", PROMPT]).data.prompts["sw"].template == TEMPLATE  # shell form
    saved = tmp_path / "config.yaml"
    saved.write_text(cfg.to_yaml(), encoding="utf-8")
    assert load_config(saved) == cfg


def test_register_template_still_counts_at_config_time(restore_registry):
    register_template("mlqa", "fr", "Réponds.\nContexte:{context}\nQuestion:{question}\nRéponse :")
    cfg = load_config(None, ["data.target_lang=fr"])
    assert answer_cue(task_spec(cfg.data), "fr") == "Réponse :"


# ---- the commands, end to end -----------------------------------------------------------------

def test_a_new_language_from_the_command_line_alone(cli, tmp_path, monkeypatch):
    from grasp_lora.data import encode, tokenize
    from grasp_lora.io import manifest_complete, read_json, read_jsonl

    write_swahili_pool(tmp_path / "sw.jsonl")
    # What prompts training and generation really built (the encoders are wrapped, not replaced).
    seen: dict[str, list[tuple[str, str]]] = {"train": [], "generate": []}

    def spy(kind, real):
        def wrapped(tokenizer, task, lang, example, *args, **kwargs):
            seen[kind].append((lang, build_prompt(task, lang, example)))
            return real(tokenizer, task, lang, example, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(encode, "encode_for_training", spy("train", encode.encode_for_training))
    monkeypatch.setattr(tokenize, "encode_prompt", spy("generate", tokenize.encode_prompt))

    commands = [shlex.split(line)[1:] for line in COMMANDS.strip().splitlines()]
    assert [c[0] for c in commands] == ["prepare", "train-adapter", "generate"]
    for args in commands:
        code, err = cli(tiny(args))
        assert code == 0, f"{' '.join(args)}\n{err[-2000:]}"

    run = tmp_path / "runs" / "sw"
    test_rows = read_jsonl(run / "data" / "sw" / "test.jsonl")
    assert len(test_rows) == 4 and all(r["id"].startswith("sw-") for r in test_rows)
    adapter = run / "adapters" / "sw"
    assert (adapter / "adapter_config.json").is_file() and manifest_complete(adapter)
    manifest = read_json(adapter / "manifest.json")
    assert manifest["fingerprint"]["keys"]["data.prompts.sw.template"] == TEMPLATE
    assert manifest["n_train"] == 6 and manifest["n_val"] == 3
    predictions = read_jsonl(tmp_path / "sw_predictions.jsonl")
    assert sorted(p["id"] for p in predictions) == sorted(r["id"] for r in test_rows)  # one row per test example

    for kind, expected in (("train", 6 + 3), ("generate", 4)):
        prompts = [p for lang, p in seen[kind] if lang == "sw"]
        assert len(prompts) == expected, kind
        assert all(p.startswith("Jibu swali kwa kutumia muktadha.\nMuktadha:Mji wa ") and p.endswith("\nJibu:")
                   for p in prompts), kind
