"""Generate + evaluate one system (a base model with an optional PEFT adapter) on a split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grasp_lora.config import Config


def with_adapter(model, adapter_dir: str | Path | None):
    """The base model with a PEFT adapter folded into its weights (plain forward, fastest decoding)."""
    if adapter_dir is None:
        return model
    from peft import PeftModel

    from grasp_lora.io import check_safetensors, read_json

    folder = Path(adapter_dir)
    config = folder / "adapter_config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{folder}: not a PEFT adapter folder (no adapter_config.json)")
    read_json(config)  # a damaged file is named here, not deep inside PEFT
    weights = folder / "adapter_model.safetensors"
    if weights.is_file():
        check_safetensors(weights)
    peft_model = PeftModel.from_pretrained(model, str(adapter_dir))
    return peft_model.merge_and_unload()


def load_bertscore_encoder(cfg: Config, base_model, tokenizer) -> tuple[Any, Any, str]:
    """(model, tokenizer, name) of the BERTScore encoder: the run's base model or a named encoder."""
    name = cfg.eval.bertscore_model
    if name == "embedded":
        # The plain model name: BERTScore itself reports the encoder as "<name>@layer<L>" with the
        # layer it actually used (adding the layer here too gave "gemma-3-270m@layer9@layer9").
        return base_model, tokenizer, cfg.model.name
    from transformers import AutoModel, AutoTokenizer

    try:
        enc_tok = AutoTokenizer.from_pretrained(name)
        enc = AutoModel.from_pretrained(name).eval()
    except OSError as e:
        raise ValueError(
            f"eval.bertscore_model={name!r}: cannot load the encoder ({str(e).splitlines()[0]}); "
            "use a local folder, go online, or set eval.bertscore_model=embedded"
        ) from None
    return enc, enc_tok, name


def evaluate_system(cfg: Config, base_model, tokenizer, adapter_dir, rows: list[dict], out_dir: str | Path, *,
                    encoder=None, progress: bool = True) -> dict[str, Any]:
    from grasp_lora.data.tasks import task_spec
    from grasp_lora.evaluation.evaluate import evaluate_predictions, write_metrics
    from grasp_lora.evaluation.generate import generate_predictions

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = with_adapter(base_model, adapter_dir)
    predictions = generate_predictions(
        model, tokenizer, task_spec(cfg.data), cfg.data.target_lang, rows, out / "predictions.jsonl",
        batch_size=cfg.generation.batch_size, max_new_tokens=cfg.generation.max_new_tokens,
        max_total=cfg.data.max_total_generation, max_article_tokens=cfg.data.max_article_tokens, progress=progress,
    )
    metrics = evaluate_predictions(cfg.data.task, cfg.data.target_lang, predictions, rows, cfg.eval, encoder=encoder)
    write_metrics(out / "metrics.json", metrics)
    return metrics
