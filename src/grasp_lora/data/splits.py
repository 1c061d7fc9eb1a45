"""Split sizes (METHOD.md, "Data") and the seeded, disjoint split of a pool.

The pool is shuffled with `random.Random(seed)` and cut into consecutive slices in the order
train, val, micro_dev, test, so the splits are disjoint by construction and the same seed on the
same pool always gives the same splits. Rows beyond the requested sizes are simply unused.

`split_by="context"` shuffles whole passages instead (rows grouped by `group_key`, in the order
their first row appears in the pool) and fills the splits with them in the same order; a passage
that would overflow a split gives it only the rows it still needs, and its other rows are left
unused, so no passage is in two splits. With one row per passage this is the row split exactly
(the same shuffle of the same order).
"""

from __future__ import annotations

import random
from typing import Any, Callable, Hashable, Sequence, TypeVar

from grasp_lora.config import SplitSizes
from grasp_lora.data.tasks import get_task

SPLITS = ("train", "val", "micro_dev", "test")

T = TypeVar("T")

# METHOD.md, "Data": the high-resource source language uses large splits and no micro-dev set; every other
# language is the few-shot target (50 / 50 / 16 / 100).
_SOURCE_SIZES = {
    "mlqa": SplitSizes(train=3030, val=315, micro_dev=0, test=315),
    "xlsum": SplitSizes(train=10000, val=1000, micro_dev=0, test=1000),
}


class SplitError(ValueError):
    """The pool cannot provide the requested split sizes."""


def default_sizes(task: str, lang: str) -> SplitSizes:
    """The sizes of METHOD.md's "Data" table for `task` in `lang` (English: the source sizes)."""
    spec = get_task(task)
    if lang == "en" and spec.name in _SOURCE_SIZES:
        s = _SOURCE_SIZES[spec.name]
        return SplitSizes(train=s.train, val=s.val, micro_dev=s.micro_dev, test=s.test)
    return SplitSizes(train=50, val=50, micro_dev=16, test=100)


def sizes_dict(sizes: SplitSizes) -> dict[str, int]:
    return {name: int(getattr(sizes, name)) for name in SPLITS}


SPLIT_BY = ("question", "context")


def passage_key(task: str) -> Callable[[dict[str, Any]], Hashable]:
    """What `split_by="context"` keeps in one split: a QA row's paragraph, a summary's article."""
    field = "context" if get_task(task).name == "mlqa" else "article"
    return lambda row: row[field]


def make_splits(
    pool: Sequence[T], sizes: SplitSizes, seed: int, *, config_key: str = "the split sizes",
    group_key: Callable[[T], Hashable] | None = None,
) -> dict[str, list[T]]:
    """{"train", "val", "micro_dev", "test"} drawn from a seeded shuffle of `pool`: of its rows, or
    with `group_key` of its passages (module docstring).

    `config_key` names the setting to lower in the error (e.g. "data.target_sizes").
    """
    wanted = sizes_dict(sizes)
    for name, n in wanted.items():
        if n < 0:
            raise SplitError(f"{config_key}.{name}: must be >= 0, got {n}")
    if group_key is not None:
        return _split_by_passage(pool, wanted, seed, config_key, group_key)
    need = sum(wanted.values())
    if need > len(pool):
        detail = " + ".join(f"{name} {n}" for name, n in wanted.items())
        raise SplitError(
            f"the pool has {len(pool)} examples but the splits need {need} ({detail}); lower "
            f"{config_key}.train / .val / .micro_dev / .test by {need - len(pool)} in total, or "
            f"use a larger data source"
        )
    order = list(range(len(pool)))
    random.Random(seed).shuffle(order)
    out: dict[str, list[Any]] = {}
    start = 0
    for name in SPLITS:
        out[name] = [pool[i] for i in order[start:start + wanted[name]]]
        start += wanted[name]
    return out


def _split_by_passage(pool: Sequence[T], wanted: dict[str, int], seed: int, config_key: str,
                      group_key: Callable[[T], Hashable]) -> dict[str, list[T]]:
    groups: dict[Hashable, list[int]] = {}
    for i, row in enumerate(pool):
        groups.setdefault(group_key(row), []).append(i)
    passages = list(groups.values())
    order = list(range(len(passages)))
    random.Random(seed).shuffle(order)
    out: dict[str, list[Any]] = {}
    at = 0  # next passage of the shuffled order
    for name in SPLITS:
        rows: list[Any] = []
        while len(rows) < wanted[name] and at < len(order):
            rows += [pool[i] for i in passages[order[at]][: wanted[name] - len(rows)]]
            at += 1
        if len(rows) < wanted[name]:
            detail = " + ".join(f"{n} {k}" for n, k in wanted.items())
            raise SplitError(
                f"the pool has {len(pool)} examples in {len(passages)} passages, too few for the splits "
                f"({detail}) when no passage may be in two splits (data.split_by=context); lower {config_key}, "
                f"use a larger data source, or set data.split_by=question"
            )
        out[name] = rows
    return out
