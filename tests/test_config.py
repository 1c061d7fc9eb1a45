from pathlib import Path

import pytest

from grasp_lora.config import Config, ConfigError, load_config, parse_override

RECIPES = sorted((Path(__file__).resolve().parents[1] / "src" / "grasp_lora" / "configs").glob("*.yaml"))


def test_recipes_are_shipped():
    names = {p.stem for p in RECIPES}
    assert {"mlqa_ar", "mlqa_zh", "xlsum_ar", "xlsum_zh", "demo"} <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_shipped_recipe_parses(recipe):
    cfg = load_config(recipe)
    assert isinstance(cfg, Config)
    assert cfg.name == recipe.stem or recipe.stem.startswith("demo")


@pytest.mark.parametrize("stem", ["mlqa_ar", "mlqa_zh", "xlsum_ar", "xlsum_zh"])
def test_paper_recipes_carry_spec_numbers(stem):
    cfg = load_config(RECIPES[0].parent / f"{stem}.yaml")
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (8, 32.0, 0.05)
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    t = cfg.train
    assert (t.lr, t.batch_size, t.grad_accum, t.epochs, t.lr_gamma, t.patience) == (1e-4, 1, 8, 10, 0.85, 3)
    c = cfg.controller
    assert (c.p_min, c.p_max, c.p_init, c.every_k_steps, c.candidates, c.micro_dev_size) == (0.1, 0.8, 0.4, 10, 3, 16)
    assert (c.policy_lr, c.kl_coef, c.entropy_bonus, c.max_step, c.seed) == (0.05, 0.05, 0.01, 0.1, 42)
    assert c.grad_accum == 1 and c.fidelity == "fixed" and c.p_star_rule == "final"
    assert cfg.merge.scaling == "none"
    assert cfg.prune.importance_inputs == "train_forward"
    assert cfg.grid.ratios == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    assert cfg.pipeline.seeds == [42, 1337, 9001]
    assert cfg.data.task == stem.split("_")[0] and cfg.data.target_lang == stem.split("_")[1]


def test_defaults_equal_spec_without_a_recipe():
    cfg = load_config(None)
    assert cfg.train.lr == 1e-4 and cfg.controller.p_init == 0.4 and cfg.merge.scaling == "none"


def test_dotted_overrides_apply_and_parse_types():
    cfg = load_config(None, ["train.lr=3e-4", "controller.candidates=4", "grid.ratios=[0.2, 0.5]",
                             "model.name=tiny-llama", "train.max_steps=null", "eval.bertscore=false"])
    assert cfg.train.lr == 3e-4
    assert cfg.controller.candidates == 4
    assert cfg.grid.ratios == [0.2, 0.5]
    assert cfg.model.name == "tiny-llama"
    assert cfg.train.max_steps is None
    assert cfg.eval.bertscore is False


def test_nested_optional_dataclass_override():
    cfg = load_config(None, ["data.target_sizes.train=12"])
    assert cfg.data.target_sizes.train == 12
    assert cfg.data.target_sizes.val == 50  # the other sizes keep their defaults


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.lrr=1", "unknown key 'train.lrr'"),
        ("nosection.x=1", "unknown key 'nosection.x'"),
        ("train.epochs=two", "train.epochs: expected an integer"),
        ("train.lr=-1", "train.lr: must be > 0"),
        ("controller.p_min=0.9", "controller.p_min: must be below controller.p_max"),
        ("controller.p_init=0.95", "controller.p_init: must lie in [p_min, p_max]"),
        ("controller.candidates=1", "controller.candidates: must be >= 2"),
        ("controller.every_k_steps=0", "controller.every_k_steps: must be >= 1"),
        ("controller.micro_dev_size=0", "controller.micro_dev_size: must be >= 1"),
        ("grid.ratios=[0.5, 1.0]", "grid.ratios[1]: a ratio must be in [0, 1)"),
        ("merge.scaling=half", "merge.scaling: expected none or lora"),
        ("controller.fidelity=paper", "controller.fidelity: expected fixed or authors"),
        ("eval.bertscore=maybe", "eval.bertscore: expected true or false"),
        ("train.lr", "expected KEY=VALUE"),
    ],
)
def test_bad_overrides_fail_with_one_line_naming_the_key(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("override, key", [
    ("train.epochs=two", "train.epochs: expected an integer"),
    ("train.lr=-1", "train.lr: must be > 0"),
    ("controller.p_max=0.05", "controller.p_min: must be below controller.p_max"),  # named on the other side
    ("data.target_sizes={train: -1, val: 1, micro_dev: 1, test: 1}", "data.target_sizes.train: must be >= 0"),
    ("grid.ratios=[0.5, 1.0]", "grid.ratios[1]"),
])
def test_bad_override_on_a_recipe_names_the_override_not_the_file(tmp_path, override, key):
    p = tmp_path / "r.yaml"
    p.write_text("train:\n  lr: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, ["train.epochs=3", override, "lora.r=4"])
    msg = str(e.value)
    assert msg.startswith(f"override '{override}': ") and key in msg
    assert str(p) not in msg and "\n" not in msg


def test_bad_value_in_the_recipe_still_names_the_file(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("train:\n  epochs: two\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, ["train.lr=3e-4"])
    assert str(e.value).startswith(f"{p}: train.epochs: expected an integer")


def test_unknown_key_in_recipe_names_file_and_key(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(p) in str(e.value) and "train.learning_rate" in str(e.value)


def test_recipe_must_be_a_mapping_and_exist(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_parse_override_yaml_scalars():
    assert parse_override("a.b=1") == (["a", "b"], 1)
    assert parse_override("a=hello world") == (["a"], "hello world")


def test_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(None, ["controller.variant=authors", "data.target_sizes.train=7"])
    p = tmp_path / "c.yaml"
    p.write_text(cfg.to_yaml())
    again = load_config(p)
    assert again == cfg
    assert again.controller.p_star_rule == "best_trial"


def test_target_modules_that_do_not_read_the_layer_input_are_refused_in_one_line():
    from grasp_lora.config import ConfigError, load_config

    with pytest.raises(ConfigError) as e:
        load_config(None, ['lora.target_modules=["q_proj","o_proj","down_proj"]'])
    msg = str(e.value)
    assert "o_proj, down_proj do not read the decoder layer's input" in msg and "\n" not in msg
    cfg = load_config(None, ['lora.target_modules=["q_proj","k_proj","v_proj","gate_proj","up_proj"]'])
    assert cfg.lora.target_modules == ["q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"]
