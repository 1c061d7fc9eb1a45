"""Config fingerprints, input digests and the stale-unit plan (no model, no pipeline)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from grasp_lora.config import Config
from grasp_lora.fingerprint import (
    Unit,
    config_fingerprint,
    flatten,
    plan_resume,
    record,
    remove_unit,
    results_hash,
    stale_message,
)
from grasp_lora.io import manifest_complete, manifest_extra, read_json, write_manifest


def test_flatten_and_fingerprint_keys_per_kind():
    d = Config().to_dict()
    flat = flatten(d)
    assert flat["train.lr"] == 1e-4 and flat["data.target_sizes"] is None
    fp = config_fingerprint(d, "adapter")
    assert fp["keys"]["lora.r"] == 8 and fp["keys"]["train.lr"] == 1e-4
    # keys that cannot change an adapter are not part of it
    assert not any(k.startswith(("eval.", "generation.", "controller.", "grid.", "pipeline.")) for k in fp["keys"])
    assert "train.eval_batch_size" not in fp["keys"] and "model.device" not in fp["keys"]
    assert "data.target_sizes" in config_fingerprint(d, "prepare")["keys"]
    # the controller run trains at controller.grad_accum, so train.grad_accum is not its key
    g = config_fingerprint(d, "grasp")["keys"]
    assert "controller.grad_accum" in g and "train.grad_accum" not in g and "controller.score_batch_size" not in g
    with pytest.raises(ValueError, match="unknown unit kind"):
        config_fingerprint(d, "nope")


def test_fingerprint_hash_moves_only_with_its_keys():
    a = Config()
    b = replace(a, train=replace(a.train, lr=0.05))
    c = replace(a, generation=replace(a.generation, batch_size=64), model=replace(a.model, device="cpu"))
    h = lambda cfg, kind: config_fingerprint(cfg.to_dict(), kind)["hash"]  # noqa: E731
    assert h(a, "adapter") != h(b, "adapter")
    assert h(a, "system") == h(b, "system")  # evaluation does not read train.lr (its adapter does)
    assert h(a, "system") == h(c, "system") and h(a, "adapter") == h(c, "adapter")
    assert results_hash(a.to_dict()) == results_hash(c.to_dict()) != results_hash(b.to_dict())


def _chain(tmp_path, cfg: Config) -> list[Unit]:
    d = cfg.to_dict()
    data_file = tmp_path / "pool.jsonl"
    if not data_file.exists():
        data_file.write_text('{"a": 1}\n')
    return [
        Unit("data", tmp_path / "data", "prepare", d, files=(data_file,)),
        Unit("adapters/ar", tmp_path / "adapters" / "ar", "adapter", d, upstream=("data",)),
        Unit("grid/point_0.30", tmp_path / "grid" / "point_0.30", "grid_point", d, upstream=("data", "adapters/ar")),
        Unit("systems/grid_best", tmp_path / "systems" / "grid_best", "grid_system", d, upstream=("data", "grid/point_0.30")),
        Unit("systems/zero_shot", tmp_path / "systems" / "zero_shot", "system", d, upstream=("data",)),
    ]


def _finish(units: list[Unit]) -> None:
    by_name = {u.name: u for u in units}
    for u in units:  # upstream first, as the pipeline runs them
        with manifest_extra(u.dir, **record(u, by_name)):
            write_manifest(u.dir, stage=u.kind)


def test_unchanged_rerun_has_nothing_stale(tmp_path):
    units = _chain(tmp_path, Config())
    assert plan_resume(units) == []  # nothing finished yet
    _finish(units)
    m = read_json(tmp_path / "adapters" / "ar" / "manifest.json")
    assert m["fingerprint"]["keys"]["lora.r"] == 8 and m["inputs"]["data"]
    assert plan_resume(_chain(tmp_path, Config())) == []


def test_changed_key_makes_its_units_and_downstream_stale(tmp_path):
    _finish(_chain(tmp_path, Config()))
    cfg = Config()
    cfg = replace(cfg, lora=replace(cfg.lora, r=4), train=replace(cfg.train, lr=0.05))
    stale = plan_resume(_chain(tmp_path, cfg))
    assert [s.unit.name for s in stale] == ["adapters/ar", "grid/point_0.30", "systems/grid_best"]
    assert stale[0].changed == {"lora.r": (8, 4), "train.lr": (1e-4, 0.05)}
    assert stale[2].changed == {} and stale[2].reasons == ["grid/point_0.30 will be redone"]
    msg = stale_message(tmp_path, stale)
    assert "\n" not in msg
    assert "lora.r 8 -> 4" in msg and "train.lr 0.0001 -> 0.05" in msg
    assert "affected: adapters/ar, grid/point_0.30, systems/grid_best" in msg
    assert "--run-dir" in msg and "--rerun-changed" in msg


def test_eval_and_grid_keys_touch_only_their_units(tmp_path):
    _finish(_chain(tmp_path, Config()))
    c = Config()
    ev = replace(c, eval=replace(c.eval, bertscore_rescale=False))
    assert [s.unit.name for s in plan_resume(_chain(tmp_path, ev))] == ["systems/grid_best", "systems/zero_shot"]
    gr = replace(c, grid=replace(c.grid, ratios=[0.3, 0.5]))
    assert [s.unit.name for s in plan_resume(_chain(tmp_path, gr))] == ["systems/grid_best"]
    ds = replace(c, data=replace(c.data, seed=7))
    assert len(plan_resume(_chain(tmp_path, ds))) == 5  # everything reads the data


def test_edited_data_file_and_redone_upstream_are_detected(tmp_path):
    units = _chain(tmp_path, Config())
    _finish(units)
    (tmp_path / "pool.jsonl").write_text('{"a": 2}\n')
    stale = plan_resume(_chain(tmp_path, Config()))
    assert stale[0].unit.name == "data" and any("pool.jsonl changed" in r for r in stale[0].reasons)
    assert len(stale) == 5
    (tmp_path / "pool.jsonl").write_text('{"a": 1}\n')
    # the adapter redone out of band (new manifest): what read it is stale, the adapter is not
    with manifest_extra(units[1].dir, **record(units[1], {u.name: u for u in units})):
        write_manifest(units[1].dir, stage="adapter", redone=True)
    stale = plan_resume(_chain(tmp_path, Config()))
    assert [s.unit.name for s in stale] == ["grid/point_0.30", "systems/grid_best"]
    assert stale[0].reasons == ["adapters/ar was redone since"]


def test_unrecorded_manifest_is_stale_and_remove_unit(tmp_path):
    units = _chain(tmp_path, Config())
    write_manifest(units[0].dir, stage="prepare")  # an older run: no record
    (units[0].dir / "en").mkdir()
    stale = plan_resume(units)
    assert stale[0].reasons == ["made without a settings record (an older grasp-lora)"]
    assert "older grasp-lora" in stale_message(tmp_path, stale)
    remove_unit(units[0])
    assert not units[0].dir.exists() and not manifest_complete(units[0].dir)
    remove_unit(units[0])  # nothing there: no error


def test_manifest_extra_goes_only_to_its_unit(tmp_path):
    from grasp_lora.io import set_manifest_extra

    unit = tmp_path / "adapters" / "ar"
    set_manifest_extra(unit, {"fingerprint": {"keys": {}}})
    try:
        write_manifest(tmp_path / "adapters" / ".ar.tmp-123", stage="x")  # built in a temp sibling
        write_manifest(tmp_path / "other", stage="y")
    finally:
        set_manifest_extra(None)
    write_manifest(unit, stage="z")
    assert "fingerprint" in read_json(tmp_path / "adapters" / ".ar.tmp-123" / "manifest.json")
    assert "fingerprint" not in read_json(tmp_path / "other" / "manifest.json")
    assert "fingerprint" not in read_json(unit / "manifest.json")  # cleared


def test_a_key_added_later_is_no_change_at_the_value_older_runs_had(tmp_path, monkeypatch):
    from grasp_lora import fingerprint

    older = tuple(k for k in fingerprint.UNIT_KEYS["prepare"] if k != "data.split_by")
    with monkeypatch.context() as m:  # an older grasp-lora: data.split_by did not exist
        m.setitem(fingerprint.UNIT_KEYS, "prepare", older)
        _finish(_chain(tmp_path, Config()))
    assert "data.split_by" not in read_json(tmp_path / "data" / "manifest.json")["fingerprint"]["keys"]
    assert plan_resume(_chain(tmp_path, Config())) == []
    c = Config()
    by_context = replace(c, data=replace(c.data, split_by="context"))
    stale = plan_resume(_chain(tmp_path, by_context))
    assert len(stale) == 5 and stale[0].changed == {"data.split_by": ("<absent>", "context")}


def test_damage_is_redone_unasked_but_a_change_downstream_still_asks(tmp_path):
    units = _chain(tmp_path, Config())
    _finish(units)
    weights = units[1].dir / "adapter_model.safetensors"
    (units[1].dir / "manifest.json").unlink()
    weights.write_bytes(b"0123456789")
    with manifest_extra(units[1].dir, **record(units[1], {u.name: u for u in units})):
        write_manifest(units[1].dir, stage="adapter")
    for u in units[2:]:  # re-record what read the adapter, as a finished run would have
        with manifest_extra(u.dir, **record(u, {x.name: x for x in units})):
            write_manifest(u.dir, stage=u.kind)
    assert plan_resume(_chain(tmp_path, Config())) == []
    weights.write_bytes(b"0123456789"[:5])
    stale = plan_resume(_chain(tmp_path, Config()))
    assert [(s.unit.name, s.damaged) for s in stale] == [
        ("adapters/ar", True), ("grid/point_0.30", True), ("systems/grid_best", True)]
    assert stale[0].reasons == ["damaged: adapter_model.safetensors has 5 bytes, 10 when written"]
    assert "affected" in stale_message(tmp_path, stale) and "adapters/ar" not in stale_message(tmp_path, stale)
    c = Config()
    changed = plan_resume(_chain(tmp_path, replace(c, grid=replace(c.grid, ratios=[0.3, 0.5]))))
    assert [(s.unit.name, s.damaged) for s in changed] == [
        ("adapters/ar", True), ("grid/point_0.30", True), ("systems/grid_best", False)]


def test_prompts_are_keys_of_what_they_change_and_older_runs_without_them_stay_valid(tmp_path, monkeypatch):
    from grasp_lora import fingerprint
    from grasp_lora.config import PromptConfig

    d = Config().to_dict()
    for kind in ("adapter", "lorahub", "adaptive_merge", "grasp", "final", "grid_point", "system", "grid_system"):
        assert config_fingerprint(d, kind)["keys"]["data.prompts"] == {}, kind
    assert not any(k.startswith("data.prompts") for k in config_fingerprint(d, "prepare")["keys"])
    # An older grasp-lora: no data.prompts in any record.
    older = {kind: tuple(p for p in pats if p != "data.prompts") for kind, pats in fingerprint.UNIT_KEYS.items()}
    with monkeypatch.context() as m:
        m.setattr(fingerprint, "UNIT_KEYS", older)
        _finish(_chain(tmp_path, Config()))
    assert "data.prompts" not in read_json(tmp_path / "adapters" / "ar" / "manifest.json")["fingerprint"]["keys"]
    assert plan_resume(_chain(tmp_path, Config())) == []  # the default, no prompts: what those runs did
    c = Config()
    ar = replace(c, data=replace(c.data, prompts={"ar": PromptConfig(template="N:{context}\nS:{question}\nJ:")}))
    stale = plan_resume(_chain(tmp_path, ar))
    assert [s.unit.name for s in stale] == ["adapters/ar", "grid/point_0.30", "systems/grid_best", "systems/zero_shot"]
    assert stale[0].changed == {"data.prompts.ar.max_new_tokens": ("<absent>", None),
                                "data.prompts.ar.template": ("<absent>", "N:{context}\nS:{question}\nJ:")}
