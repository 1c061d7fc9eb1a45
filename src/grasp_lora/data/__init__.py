"""The MLQA / XL-Sum data layer: task prompts, loaders, splits, the prepare stage, tokenization."""

from grasp_lora.data.prepare import load_split, prepare_data
from grasp_lora.data.records import DataSourceError, LoadReport
from grasp_lora.data.sources import load_pool
from grasp_lora.data.splits import SPLITS, SplitError, default_sizes, make_splits
from grasp_lora.data.tasks import (
    TaskError,
    TaskSpec,
    answer_cue,
    build_prompt,
    get_task,
    max_new_tokens,
    register_template,
    target_text,
)
from grasp_lora.data.tokenize import IGNORE_INDEX, TokenizeError, encode_for_training, encode_prompt

__all__ = [
    "DataSourceError", "IGNORE_INDEX", "LoadReport", "SPLITS", "SplitError", "TaskError", "TaskSpec",
    "TokenizeError", "answer_cue", "build_prompt", "default_sizes", "encode_for_training",
    "encode_prompt", "get_task", "load_pool", "load_split", "make_splits", "max_new_tokens",
    "prepare_data", "register_template", "target_text",
]
