"""Greedy generation of test predictions: batched, KV cache, left padding, resumable (METHOD.md, "Evaluation").

Prompts are cut as METHOD.md, "Data" says (at most `max_total - max_new_tokens` prompt tokens, long field cut,
answer cue kept; see data.tokenize.encode_prompt). Batches are formed from prompts sorted by
length, so a batch pads to little, and left-padded, so every sequence's next token sits at the
same last position. Each finished batch is appended to the predictions JSONL as it completes: a
killed run resumes where it stopped (done ids are skipped; a torn last line is dropped).

The prediction is the text generated after the prompt, up to EOS, with anything up to and
including a repeated answer cue removed (a model that echoes "Answer:" still scores), newlines
turned into spaces, stripped.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import torch

from grasp_lora import distributed as dist
from grasp_lora.io import append_jsonl, read_jsonl, write_jsonl

if TYPE_CHECKING:
    from grasp_lora.data.tasks import TaskSpec


def clean_prediction(text: str, cue: str) -> str:
    """Text after the last occurrence of the answer cue (if the model repeated it), newlines
    turned into spaces, stripped."""
    cue = cue.strip()
    if cue and cue in text:
        text = text.rsplit(cue, 1)[1]
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").strip()


def read_predictions(path: str | Path) -> dict[Any, str]:
    """`{id: prediction}` from a predictions JSONL (missing file: empty)."""
    path = Path(path)
    if not path.is_file():
        return {}
    return {row["id"]: row["prediction"] for row in read_jsonl(path)}


def _resume(path: Path) -> dict[Any, str]:
    """Done predictions; a torn last line (a crash mid-append) is cut off the file, so the next
    append starts on a fresh line instead of gluing onto the fragment."""
    if not path.is_file():
        return {}
    rows = read_jsonl(path)
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        write_jsonl(path, rows)
    return {row["id"]: row["prediction"] for row in rows}


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    for source in (getattr(tokenizer, "eos_token_id", None), getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if source is None:
            continue
        for i in source if isinstance(source, (list, tuple)) else [source]:
            if int(i) not in ids:
                ids.append(int(i))
    if not ids:
        raise ValueError("generation needs an EOS token: the tokenizer and the model's generation config have none")
    return ids


def _device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if len(p):
            ids[i, width - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
            mask[i, width - len(p):] = 1
    return ids, mask


@torch.no_grad()
def generate_batch(
    model: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    pad_id: int,
    eos_ids: Sequence[int],
    use_cache: bool = True,
) -> list[list[int]]:
    """Greedy continuations (new token ids, cut before the first EOS) of left-padded prompts."""
    from transformers import GenerationConfig

    ids, mask = _left_pad(prompts, pad_id)
    device = _device(model)
    # Pure greedy whatever the checkpoint's generation_config suggests (Gemma ships sampling
    # defaults): one beam, no sampling, no repetition penalty, no minimum length.
    gen_cfg = GenerationConfig(
        do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, min_new_tokens=0,
        repetition_penalty=1.0, no_repeat_ngram_size=0, use_cache=use_cache,
        pad_token_id=pad_id, eos_token_id=list(eos_ids), temperature=1.0, top_k=None, top_p=None,
    )
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=gen_cfg)
    new = out[:, ids.shape[1]:].tolist()
    eos = set(eos_ids)
    result = []
    for seq in new:
        cut = next((k for k, t in enumerate(seq) if t in eos), len(seq))
        result.append(seq[:cut])
    return result


def _decode_batch(
    model: Any, tokenizer: Any, batch: Sequence[Mapping[str, Any]], prompts: Mapping[Any, Sequence[int]],
    *, max_new: int, pad_id: int, eos_ids: Sequence[int], use_cache: bool, cue: str,
) -> list[tuple[Any, str, int, int]]:
    """(id, prediction, new tokens incl. EOS, prompt tokens) for each example of one batch."""
    batch_prompts = [prompts[ex["id"]] for ex in batch]
    outputs = generate_batch(model, batch_prompts, max_new_tokens=max_new, pad_id=pad_id, eos_ids=eos_ids, use_cache=use_cache)
    rows = []
    for ex, prompt, new_ids in zip(batch, batch_prompts, outputs):
        text = clean_prediction(tokenizer.decode(new_ids, skip_special_tokens=True), cue)
        # Tokens produced, counting the EOS when the model stopped before the limit.
        rows.append((ex["id"], text, min(len(new_ids) + 1, max_new), len(prompt)))
    return rows


def _record(rows: Sequence[tuple[Any, str, int, int]], done: dict[Any, str], counts: dict[str, Any], out_path: Optional[Path]) -> None:
    for ex_id, text, new_tokens, prompt_tokens in rows:
        done[ex_id] = text
        if out_path is not None:
            append_jsonl(out_path, {"id": ex_id, "prediction": text})
        counts["new_tokens"] += new_tokens
        counts["prompt_tokens"] += prompt_tokens
        counts["sequences"] += 1


def _sharded_rounds(todo: Sequence[Mapping[str, Any]], batch_size: int) -> list[list[Mapping[str, Any]]]:
    """This rank's batches, padded with empty ones to the same number of rounds on every rank.
    Examples are dealt round-robin from the length-sorted list, so shares cost about the same."""
    rank, world = dist.rank(), dist.world_size()
    mine = list(todo[rank::world])
    rounds = math.ceil(math.ceil(len(todo) / world) / batch_size)
    return [mine[i * batch_size : (i + 1) * batch_size] for i in range(rounds)]


def generate_predictions(
    model: Any,
    tokenizer: Any,
    task: str | TaskSpec,
    lang: str,
    examples: Sequence[Mapping[str, Any]],
    out_path: str | Path,
    *,
    batch_size: int = 8,
    max_new_tokens: Optional[int] = None,
    max_total: int = 2200,
    max_article_tokens: Optional[int] = None,
    progress: bool = True,
    use_cache: bool = True,
    stats: Optional[dict[str, Any]] = None,
    shard: bool = False,
) -> dict[Any, str]:
    """Predictions `{id: text}` for every example (in the order given), appended to `out_path`.

    Works with a plain Hugging Face model, a PEFT model, or any module with `.generate`.
    `use_cache=False, batch_size=1` is the authors' setting (for the benchmark). If `stats` is a
    dict it receives counts and time of this call's generation (`new_tokens`, `prompt_tokens`,
    `sequences`, `seconds`).

    `shard=True` with several processes (every process calls it with the same arguments): each
    process generates its share of the examples; after every round of batches the predictions are
    gathered, rank 0 appends them all (it alone writes), and every process returns all of them.
    """
    from grasp_lora.data.tasks import answer_cue, get_task
    from grasp_lora.data.tasks import max_new_tokens as task_max_new_tokens
    from grasp_lora.data.tokenize import encode_prompt

    if batch_size < 1:
        raise ValueError("generate_predictions: batch_size must be >= 1")
    task = get_task(task)  # a name (registered templates) or a run's spec (tasks.task_spec(cfg.data))
    ids = [ex["id"] for ex in examples]
    if len(set(ids)) != len(ids):
        raise ValueError("generate_predictions: example ids must be unique")
    max_new = max_new_tokens if max_new_tokens is not None else task_max_new_tokens(task, lang)
    prompt_budget = max_total - max_new
    if prompt_budget < 1:
        raise ValueError(f"generate_predictions: max_total ({max_total}) leaves no room for a prompt next to {max_new} new tokens")
    cue = answer_cue(task, lang)
    out_path = Path(out_path)
    sharded = shard and dist.world_size() > 1
    writer = dist.is_main() or not sharded

    def resume() -> dict[Any, str]:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        return _resume(out_path)

    # Rank 0 reads (and repairs) the file; every process then works from its copy of the result.
    done = dist.from_main(dist.run_on_main(resume, f"resume {out_path}")) if sharded else resume()
    todo = [ex for ex in examples if ex["id"] not in done]
    prompts = {ex["id"]: encode_prompt(tokenizer, task, lang, ex, prompt_budget, max_article_tokens) for ex in todo}
    # Longest first: the biggest batch runs (and fails, if memory is short) at the start.
    todo.sort(key=lambda ex: -len(prompts[ex["id"]]))

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_ids = _eos_ids(model, tokenizer)
    counts = {"new_tokens": 0, "prompt_tokens": 0, "sequences": 0, "seconds": 0.0}
    decode = lambda batch: _decode_batch(  # noqa: E731
        model, tokenizer, batch, prompts, max_new=max_new, pad_id=pad_id, eos_ids=eos_ids, use_cache=use_cache, cue=cue
    )

    bar = None
    if progress and todo and writer:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"generate {task.name}/{lang}", unit="ex", dynamic_ncols=True)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        if sharded:
            for batch in _sharded_rounds(todo, batch_size):
                t0 = time.perf_counter()
                rows, error = [], None
                try:
                    rows = decode(batch) if batch else []
                except Exception as e:  # noqa: BLE001 - re-raised on every rank by gather_or_fail
                    error = e
                counts["seconds"] += time.perf_counter() - t0
                gathered = [r for part in dist.gather_or_fail(rows, error, "generation") for r in part]
                _record(gathered, done, counts, out_path if writer else None)
                if bar is not None:
                    bar.update(len(gathered))
        else:
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                t0 = time.perf_counter()
                rows = decode(batch)
                counts["seconds"] += time.perf_counter() - t0
                _record(rows, done, counts, out_path)
                if bar is not None:
                    bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
        if was_training and hasattr(model, "train"):
            model.train()
    if stats is not None:
        stats.update(counts)
    return {i: done[i] for i in ids}
