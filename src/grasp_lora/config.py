"""Typed configuration: dataclasses loaded from YAML recipes, with dotted command-line overrides.

A recipe is a YAML mapping whose top-level keys are the sections of `Config`. Unknown keys,
wrong types and out-of-range values are rejected with one line naming the key (`ConfigError`).
Defaults are the paper's settings (docs/METHOD.md) except where a key says otherwise: the
controller (`controller.variant`, default `dense_lookahead_budget`, see METHOD.md "Controller
variants"; `paper` is the paper's) and what the paper does not have (`data.split_by`'s `context`, `data.max_article_tokens`).
`configs/demo.yaml` scales sizes down.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import yaml

from grasp_lora.config_parsing import ConfigError, build, has_field, merge, nested, parse_override
from grasp_lora.controller.variants import DEFAULT_VARIANT, VARIANTS, preset_values, upgrade_legacy


@dataclass
class SplitSizes:
    train: int = 50
    val: int = 50
    micro_dev: int = 16
    test: int = 100


@dataclass
class PromptConfig:
    """One language's prompt (`data.prompts.<lang>`); grasp_lora.data.tasks checks it."""

    # {context} and {question} (mlqa) or {article} (xlsum), each once, then an answer cue ("\nJibu:");
    # None: the task's builtin template for the language (there must be one).
    template: Optional[str] = None
    # Generation limit for the language; None: its builtin one, else the task's (QA 64, summary 96).
    # generation.max_new_tokens, when set, wins over every language's.
    max_new_tokens: Optional[int] = None


@dataclass
class DataConfig:
    task: str = "mlqa"  # mlqa | xlsum
    source_lang: str = "en"
    target_lang: str = "ar"
    # Where each language's pool comes from: "hub" (facebook/mlqa, csebuetnlp/xlsum), "demo"
    # (the bundled data set) or a path to a local file (MLQA JSON, XL-Sum JSONL, CSV, JSONL).
    source_data: str = "hub"
    target_data: str = "hub"
    seed: int = 42
    # Split sizes; None means the table of METHOD.md, "Data", for the task and language (see data.splits).
    source_sizes: Optional[SplitSizes] = None
    target_sizes: Optional[SplitSizes] = None
    # How the pool is cut into splits: "question" (row by row: the paper's scripts; MLQA asks about 5
    # questions per paragraph, so a micro-dev, validation or test question can share its paragraph
    # with training questions) or "context" (whole paragraphs: no paragraph of micro_dev / val / test
    # is in train). XL-Sum has one summary per article, where both give the same splits.
    split_by: str = "question"
    max_length: int = 4096  # prompt + target limit for training examples
    max_total_generation: int = 2200  # prompt + generated tokens
    # Article token budget: the task's long field (an article; a QA paragraph) cut to at most this
    # many tokens, keeping its beginning, in training and in generation prompts (None: only the
    # limits above cut). The CPU setting for long articles; recorded in the report.
    max_article_tokens: Optional[int] = None
    # Prompt templates by language code, added to (or replacing) the task's builtin ones (en, ar,
    # zh): how a run uses a language that ships none. In a recipe
    #   prompts:
    #     sw: {template: "Jibu swali.\nMuktadha:{context}\nSwali:{question}\nJibu:", max_new_tokens: 32}
    # on the command line 'data.prompts={sw: {template: "...\n...{context}...{question}\nJibu:"}}'
    # (YAML flow; merged language by language with the recipe's). Checked at config time as
    # grasp_lora.data.tasks.register_template checks a template; every stage builds its prompts,
    # answer cues and generation limits with `tasks.task_spec(cfg.data)`.
    prompts: dict[str, PromptConfig] = field(default_factory=dict)


@dataclass
class ModelConfig:
    name: str = "gemma-3-270m"  # builtin name | hub id | local HF folder | local .gguf file
    dtype: str = "auto"  # auto (fp32 on CPU, bf16 on CUDA) | float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    trust_remote_code: bool = False
    cache_dir: Optional[str] = None  # default: $GRASP_LORA_CACHE or ~/.cache/grasp-lora


@dataclass
class LoraConfig:
    r: int = 8
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclass
class TrainConfig:
    lr: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 1
    grad_accum: int = 8
    epochs: int = 10
    lr_gamma: float = 0.85  # StepLR, once per epoch
    patience: int = 3  # early stopping on validation loss
    max_steps: Optional[int] = None  # optimizer steps cap (None: epochs decide)
    eval_batch_size: int = 8
    targets_only_head: bool = True  # apply the LM head only where labels exist
    seed: int = 42


@dataclass
class MergeConfig:
    scaling: str = "none"  # none: c = 1 (the authors) | lora: c = alpha / r


@dataclass
class PruneConfig:
    importance_inputs: str = "train_forward"  # train_forward | full_pass


@dataclass
class ControllerConfig:
    p_min: float = 0.10
    p_max: float = 0.80
    p_init: float = 0.40
    every_k_steps: int = 10
    candidates: int = 3
    micro_dev_size: int = 16
    policy_lr: float = 0.05
    kl_coef: float = 0.05
    entropy_bonus: float = 0.01
    max_step: float = 0.10
    seed: int = 42
    grad_accum: int = 1  # the authors' controller runs: batch 1 x accumulation 1
    score_batch_size: int = 16  # micro-dev examples scored per forward
    # Which controller (METHOD.md, "Controller variants"): a preset of controller/variants.py, which
    # sets the ten keys below it; any of them set in the recipe or on the command line overrides
    # the preset's value. The defaults here are the default preset's (dense_lookahead_budget).
    variant: str = DEFAULT_VARIANT
    fidelity: str = "fixed"  # fixed | authors (the released scripts; METHOD.md, "Fidelity")
    # true: the committed mask is applied and the controller run trains under it (the paper);
    # false: a commit moves p_c only, the run trains dense and every mask of a round is cut from the
    # same weights
    train_under_mask: bool = False
    # immediate: a mask's micro-dev loss on the current weights (the paper); lookahead: each mask, and
    # p_c's for L0, is first trained under for lookahead_steps optimizer steps, then scored
    reward: str = "lookahead"
    lookahead_steps: int = 10  # optimizer steps of the lookahead reward (unused by the immediate one)
    advantage: str = "standardized"  # centered (a_i = r_i - mean r, the paper) | standardized (GRPO's)
    p_star_rule: str = "final"  # final | best_trial | fit (a quadratic fitted to every scored candidate)
    # clamp: a draw outside [p_min, p_max] is clamped to the bound (the paper; near a bound many
    # candidates are the bound itself) | reflect: folded back into the range (distinct candidates)
    sampling: str = "clamp"
    # The most the policy mean may move in one round (1.0: no bound, the paper: one round's update can
    # carry mu across the whole range)
    max_mu_step: float = 1.0
    # during: a round every K optimizer steps of the controller run (the paper) | end: the run trains
    # its whole schedule first, then the rounds run back to back at its returned (best-epoch)
    # weights, so every candidate is judged on a fully trained model (late probing; needs a cap on
    # rounds: budget_grid_points or max_rounds)
    rounds_at: str = "during"
    # When the controller run ends (METHOD.md, "Controller cost"); the final run is a separate run,
    # so rounds after the decision buy nothing. budget_grid_points: stop after the rounds that fit in
    # this many grid points of compute, counted in example passes (controller.budget) | null: none.
    # max_rounds: stop after this many rounds | null. The tighter of the two wins; both null: the
    # run trains its whole schedule, as the paper's.
    budget_grid_points: Optional[float] = 3.0
    max_rounds: Optional[int] = None


# Projections that read something other than the decoder layer's input hidden state (the attention
# output, the MLP's intermediate activation), in the module names of common architectures. The
# input-aware importance of the fixed-ratio runs weighs A's columns by the layer input's norms
# (SPEC, the authors' allocator), which for these modules would be the wrong features: of another
# size (a crash deep in the grid) or, where the sizes agree (Llama's o_proj), silently wrong.
NOT_FED_BY_LAYER_INPUT = frozenset({"o_proj", "down_proj", "out_proj", "dense", "fc2", "c_proj", "dense_4h_to_h",
                                    "w2", "wo"})


@dataclass
class GridConfig:
    enabled: bool = True
    ratios: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    # Only val_loss: selecting by a generated validation metric would need generation on the
    # validation split for every grid point; refused at config time rather than ignored.
    select_by: str = "val_loss"


@dataclass
class GenerationConfig:
    batch_size: int = 8
    max_new_tokens: Optional[int] = None  # None: the task's limit per language (METHOD.md, "Data")


@dataclass
class EvalConfig:
    bertscore: bool = True
    # "embedded" = the embedded model's hidden states (offline default, reported under its own
    # name); any other value is a hub id or local path of an encoder.
    bertscore_model: str = "embedded"
    bertscore_layer: Optional[int] = None  # None: the middle layer
    # The raw F of a decoder encoder (our offline default) sits near 100 for any pair; the rescaled
    # score, against a baseline of mismatched reference pairs, is the informative one.
    bertscore_rescale: bool = True
    bertscore_idf: bool = False
    chinese_segmenter: str = "char"  # char | jieba (XL-Sum's lang="chinese" mode)


@dataclass
class LoraHubConfig:
    steps: int = 40
    weight_min: float = -1.5
    weight_max: float = 1.5
    l1: float = 0.05
    examples: int = 5  # few-shot target train examples scored per candidate
    optimizer: str = "NGOpt"


@dataclass
class TiesConfig:
    density: float = 0.5
    weights: list[float] = field(default_factory=lambda: [1.0, 1.0])


# Every system the report compares GRASP with (`pipeline.baselines`, `grasp-lora baseline NAME`).
BASELINES = ("zero_shot", "target_lora", "ties", "lorahub", "adaptive_merge", "grid_best")


@dataclass
class PipelineConfig:
    output_dir: str = "runs/experiment"
    seeds: list[int] = field(default_factory=lambda: [42])
    # false: the paper's protocol (one controller run, seeded by controller.seed, then a final run
    # per seed at its p*); true: a controller run per seed (variance studies).
    controller_per_seed: bool = False
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))


@dataclass
class Config:
    name: str = "experiment"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    lorahub: LoraHubConfig = field(default_factory=LoraHubConfig)
    ties: TiesConfig = field(default_factory=TiesConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


def seed_config(cfg: Config, seed: int) -> Config:
    """The config of one seed of a seed sweep (final runs, grid points): training draws from that seed."""
    return replace(cfg, train=replace(cfg.train, seed=seed))


def controller_config(cfg: Config, seed: int | None = None) -> Config:
    """The config of a controller run. The paper's protocol (seed None): one run, seeded by
    controller.seed for both the controller's generator and the training order. Per-seed
    controllers (`pipeline.controller_per_seed`): both from `seed`."""
    s = cfg.controller.seed if seed is None else seed
    return replace(cfg, train=replace(cfg.train, seed=s), controller=replace(cfg.controller, seed=s))


def with_variant(controller: ControllerConfig, name: str, **overrides: Any) -> ControllerConfig:
    """`controller` switched to preset `name` (the preset's keys take its values), then `overrides`:
    what `controller.variant=NAME` plus explicit keys give on the command line, for Python callers."""
    if name not in VARIANTS:
        raise ConfigError(f"controller.variant: expected one of {', '.join(VARIANTS)}, got {name!r}")
    out = replace(controller, **{**preset_values(name), **overrides, "variant": name})
    validate(replace(Config(), controller=out))
    return out


def with_preset(data: dict[str, Any]) -> dict[str, Any]:
    """Recipe data with the chosen controller preset's values under the keys the data does not set
    itself (explicit keys win). The one place a variant name turns into values."""
    section = data.get("controller")
    section = dict(section) if isinstance(section, dict) else {}
    name = section.get("variant", DEFAULT_VARIANT)
    if name not in VARIANTS:
        raise ConfigError(f"controller.variant: expected one of {', '.join(VARIANTS)}, got {name!r}")
    return {**data, "controller": {**preset_values(name), **section}}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a recipe (or the defaults when `path` is None) and apply dotted overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: recipe not found (the shipped recipes are in configs/)")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{p}: not valid YAML (not UTF-8 text: {e})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: a recipe must be a YAML mapping of sections")
        data = loaded
    if isinstance(data.get("controller"), dict):
        data = {**data, "controller": upgrade_legacy(data["controller"])}
    try:
        cfg = build(Config, with_preset(data))
    except ConfigError as e:
        if path is not None:
            raise ConfigError(f"{path}: {e}") from None
        raise
    # Each override is applied and type-checked on its own, so a bad value is reported against
    # the override that brought it, not against the recipe file.
    applied: list[tuple[str, str]] = []
    for text in overrides or []:
        keys, value = parse_override(text)
        if not has_field(Config, keys):
            raise ConfigError(f"override '{text}': unknown key '{'.'.join(keys)}'")
        data = merge(data, nested(keys, value))
        try:
            cfg = build(Config, with_preset(data))
        except ConfigError as e:
            raise ConfigError(f"override '{text}': {e}") from None
        applied.append((".".join(keys), text))
    try:
        validate(cfg)
    except ConfigError as e:
        culprit = _override_named_in(str(e), applied)
        if culprit is not None:
            raise ConfigError(f"override '{culprit}': {e}") from None
        raise
    return cfg


def _override_named_in(message: str, applied: list[tuple[str, str]]) -> Optional[str]:
    """The last override whose key is (part of) a key the validation message names."""
    named = [re.sub(r"\[\d+\]", "", k) for k in re.findall(r"[a-z_]+(?:\.[a-z_]+)+(?:\[\d+\])?", message)]
    for key, text in reversed(applied):
        if any(n == key or n.startswith(key + ".") or key.startswith(n + ".") for n in named):
            return text
    return None


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def validate(cfg: Config) -> None:
    """Range checks; one line each, naming the key."""
    d = cfg.data
    _check(d.task in ("mlqa", "xlsum"), f"data.task: expected mlqa or xlsum, got {d.task!r}")
    _check(d.source_lang != d.target_lang, "data.target_lang: must differ from data.source_lang")
    _check(d.split_by in ("question", "context"), f"data.split_by: expected question or context, got {d.split_by!r}")
    _check(d.max_article_tokens is None or d.max_article_tokens >= 1,
           f"data.max_article_tokens: must be >= 1 or null, got {d.max_article_tokens}")
    for name, sizes in (("data.source_sizes", d.source_sizes), ("data.target_sizes", d.target_sizes)):
        if sizes is not None:
            for split in ("train", "val", "micro_dev", "test"):
                _check(getattr(sizes, split) >= 0, f"{name}.{split}: must be >= 0")
    _check(d.max_length >= 16, "data.max_length: must be >= 16")
    _check(d.max_total_generation >= 16, "data.max_total_generation: must be >= 16")
    # Every language of the run needs a prompt (builtin, data.prompts or register_template): refused
    # here, before any data is read or model loaded. Imported here: grasp_lora.data imports this module.
    from grasp_lora.data.tasks import TaskError, missing_prompt, with_prompts

    try:
        spec = with_prompts(d.task, d.prompts)
    except TaskError as e:
        raise ConfigError(str(e)) from None
    for key, lang in (("data.source_lang", d.source_lang), ("data.target_lang", d.target_lang)):
        _check(lang in spec.templates, f"{key}: {missing_prompt(spec, lang)}")
    m = cfg.model
    _check(m.dtype in ("auto", "float32", "bfloat16", "float16"),
           f"model.dtype: expected auto, float32, bfloat16 or float16, got {m.dtype!r}")
    l = cfg.lora
    _check(l.r >= 1, "lora.r: must be >= 1")
    _check(l.alpha > 0, "lora.alpha: must be > 0")
    _check(0 <= l.dropout < 1, "lora.dropout: must be in [0, 1)")
    _check(len(l.target_modules) > 0, "lora.target_modules: must name at least one module")
    off_stream = [m for m in l.target_modules if m.split(".")[-1] in NOT_FED_BY_LAYER_INPUT]
    _check(not off_stream,
           f"lora.target_modules: {', '.join(off_stream)} do not read the decoder layer's input, whose norms the "
           "fixed-ratio runs' input-aware importance uses (METHOD.md, Pruning at a ratio p); adapt modules fed by it "
           "(q_proj, k_proj, v_proj, gate_proj, up_proj)")
    t = cfg.train
    _check(t.lr > 0, "train.lr: must be > 0")
    _check(t.weight_decay >= 0, "train.weight_decay: must be >= 0")
    _check(t.batch_size >= 1, "train.batch_size: must be >= 1")
    _check(t.grad_accum >= 1, "train.grad_accum: must be >= 1")
    _check(t.epochs >= 1, "train.epochs: must be >= 1")
    _check(0 < t.lr_gamma <= 1, "train.lr_gamma: must be in (0, 1]")
    _check(t.patience >= 1, "train.patience: must be >= 1")
    _check(t.max_steps is None or t.max_steps >= 1, "train.max_steps: must be >= 1 or null")
    _check(t.eval_batch_size >= 1, "train.eval_batch_size: must be >= 1")
    _check(cfg.merge.scaling in ("none", "lora"), f"merge.scaling: expected none or lora, got {cfg.merge.scaling!r}")
    _check(cfg.prune.importance_inputs in ("train_forward", "full_pass"),
           f"prune.importance_inputs: expected train_forward or full_pass, got {cfg.prune.importance_inputs!r}")
    c = cfg.controller
    _check(0 <= c.p_min < 1, f"controller.p_min: must be in [0, 1), got {c.p_min}")
    _check(0 <= c.p_max < 1, f"controller.p_max: must be in [0, 1), got {c.p_max}")
    _check(c.p_min < c.p_max, f"controller.p_min: must be below controller.p_max ({c.p_min} >= {c.p_max})")
    _check(c.p_min <= c.p_init <= c.p_max,
           f"controller.p_init: must lie in [p_min, p_max] = [{c.p_min}, {c.p_max}], got {c.p_init}")
    _check(c.every_k_steps >= 1, f"controller.every_k_steps: must be >= 1, got {c.every_k_steps}")
    _check(c.candidates >= 2, f"controller.candidates: must be >= 2 (advantages are relative), got {c.candidates}")
    _check(c.micro_dev_size >= 1, f"controller.micro_dev_size: must be >= 1, got {c.micro_dev_size}")
    _check(c.policy_lr > 0, "controller.policy_lr: must be > 0")
    _check(c.kl_coef >= 0, "controller.kl_coef: must be >= 0")
    _check(c.entropy_bonus >= 0, "controller.entropy_bonus: must be >= 0")
    _check(c.max_step > 0, "controller.max_step: must be > 0")
    _check(c.fidelity in ("fixed", "authors"), f"controller.fidelity: expected fixed or authors, got {c.fidelity!r}")
    _check(c.p_star_rule in ("final", "best_trial", "fit"),
           f"controller.p_star_rule: expected final, best_trial or fit, got {c.p_star_rule!r}")
    _check(c.grad_accum >= 1, "controller.grad_accum: must be >= 1")
    _check(c.score_batch_size >= 1, "controller.score_batch_size: must be >= 1")
    _check(c.sampling in ("clamp", "reflect"), f"controller.sampling: expected clamp or reflect, got {c.sampling!r}")
    _check(c.rounds_at in ("during", "end"), f"controller.rounds_at: expected during or end, got {c.rounds_at!r}")
    _check(c.rounds_at == "during" or c.budget_grid_points is not None or c.max_rounds is not None,
           "controller.rounds_at: end runs its rounds after training, so it needs a cap: set "
           "controller.budget_grid_points or controller.max_rounds")
    _check(0 < c.max_mu_step <= 1, f"controller.max_mu_step: must be in (0, 1] (1: no bound), got {c.max_mu_step}")
    _check(c.advantage in ("centered", "standardized"),
           f"controller.advantage: expected centered or standardized, got {c.advantage!r}")
    _check(c.reward in ("immediate", "lookahead"),
           f"controller.reward: expected immediate or lookahead, got {c.reward!r}")
    _check(isinstance(c.lookahead_steps, int) and c.lookahead_steps >= 1,
           f"controller.lookahead_steps: must be an integer >= 1, got {c.lookahead_steps!r}")
    _check(c.max_rounds is None or (isinstance(c.max_rounds, int) and c.max_rounds >= 1),
           f"controller.max_rounds: must be >= 1 (or null: no cap), got {c.max_rounds!r}")
    _check(c.budget_grid_points is None or c.budget_grid_points > 0,
           f"controller.budget_grid_points: must be > 0 (or null: no budget), got {c.budget_grid_points!r}")
    _check(isinstance(c.train_under_mask, bool),
           f"controller.train_under_mask: expected true or false, got {c.train_under_mask!r}")
    _check(c.variant in VARIANTS, f"controller.variant: expected one of {', '.join(VARIANTS)}, got {c.variant!r}")
    _check(c.fidelity == "fixed" or (c.advantage, c.reward, c.train_under_mask) == ("centered", "immediate", True),
           "controller.fidelity: authors reproduces the released scripts (centered advantages, immediate reward, "
           "training under the mask); for other combinations use controller.fidelity=fixed")
    g = cfg.grid
    _check(len(g.ratios) >= 1, "grid.ratios: must list at least one ratio")
    for i, r in enumerate(g.ratios):
        _check(0 <= r < 1, f"grid.ratios[{i}]: a ratio must be in [0, 1), got {r}")
    _check(g.select_by == "val_loss",
           f"grid.select_by: only val_loss is implemented (got {g.select_by!r}); "
           "selection by a generated validation metric is not available yet")
    _check(cfg.generation.batch_size >= 1, "generation.batch_size: must be >= 1")
    _check(cfg.generation.max_new_tokens is None or cfg.generation.max_new_tokens >= 1,
           "generation.max_new_tokens: must be >= 1 or null")
    e = cfg.eval
    _check(e.chinese_segmenter in ("char", "jieba"), f"eval.chinese_segmenter: expected char or jieba, got {e.chinese_segmenter!r}")
    h = cfg.lorahub
    _check(h.steps >= 1, "lorahub.steps: must be >= 1")
    _check(h.weight_min < h.weight_max, "lorahub.weight_min: must be below lorahub.weight_max")
    _check(h.l1 >= 0, "lorahub.l1: must be >= 0")
    _check(h.examples >= 1, "lorahub.examples: must be >= 1")
    _check(0 < cfg.ties.density <= 1, "ties.density: must be in (0, 1]")
    p = cfg.pipeline
    _check(len(p.seeds) >= 1, "pipeline.seeds: must list at least one seed")
    for b in p.baselines:
        _check(b in BASELINES, f"pipeline.baselines: unknown baseline {b!r} (known: {', '.join(sorted(BASELINES))})")


def save_config(cfg: Config, path: str | Path) -> None:
    from grasp_lora.io import atomic_write_text

    atomic_write_text(path, cfg.to_yaml())


def config_hash(cfg: Config) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
