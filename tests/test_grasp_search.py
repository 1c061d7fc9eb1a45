"""The controller run on a tiny model: same seed, same machine -> the same history and p*."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from grasp_lora.cli import resolve_recipe
from grasp_lora.config import load_config
from grasp_lora.pipeline import Experiment
from grasp_lora.search.grasp import EmptyMicroDevError, run_grasp_search
from helpers import TINY_OVERRIDES


@pytest.fixture(scope="module")
def exp(tmp_path_factory, monkeypatch_module):
    root = tmp_path_factory.mktemp("grasp")
    monkeypatch_module.setenv("GRASP_LORA_CACHE", str(root / "cache"))
    cfg = load_config(resolve_recipe("demo"), TINY_OVERRIDES)
    e = Experiment(cfg, root=root / "run", progress=False, log=lambda _: None)
    e.prepare()
    e.adapters()
    return e


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def controller_run(exp: Experiment, out, cfg=None):
    cfg = cfg or exp.cfg
    lang = cfg.data.target_lang
    model, tok = exp.base_model()
    result = run_grasp_search(cfg, model, tok, exp.source_target_adapters, exp.rows(lang, "train"),
                              exp.rows(lang, "val"), exp.rows(lang, "micro_dev"), out, progress=False)
    return result, (out / "history.jsonl").read_text()


def test_same_seed_gives_the_same_history_and_p_star(exp, tmp_path):
    first, history_a = controller_run(exp, tmp_path / "a")
    second, history_b = controller_run(exp, tmp_path / "b")
    assert history_a == history_b and history_a.count("\n") == first["rounds"] > 0
    assert first["p_star"] == second["p_star"]
    other = replace(exp.cfg, controller=replace(exp.cfg.controller, seed=7))
    _, history_c = controller_run(exp, tmp_path / "c", other)
    assert json.loads(history_c.splitlines()[0])["candidates"] != json.loads(history_a.splitlines()[0])["candidates"]


def test_empty_micro_dev_is_one_clear_error_before_training(exp, tmp_path):
    lang = exp.cfg.data.target_lang
    model, tok = exp.base_model()
    with pytest.raises(EmptyMicroDevError, match="micro-dev split is empty"):
        run_grasp_search(exp.cfg, model, tok, exp.source_target_adapters, exp.rows(lang, "train"),
                         exp.rows(lang, "val"), [], tmp_path / "x", progress=False)
    assert not (tmp_path / "x" / "history.jsonl").exists()
