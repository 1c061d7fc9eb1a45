"""Dataclasses from plain data (a parsed YAML mapping) and dotted KEY=VALUE overrides, with every
error naming the key: the machinery under grasp_lora.config, generic over its dataclasses."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import fields
from typing import Any

import yaml


class ConfigError(ValueError):
    """A recipe or override is wrong; the message names the key and what is expected."""


def coerce(value: Any, tp: Any, key: str) -> Any:
    """`value` as type `tp` (dataclasses built recursively); `key` names it in errors."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if value is None:
            return None
        return coerce(value, non_none[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return build(tp, value, key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {k: coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Dataclass `cls` from a mapping; unknown keys and wrong types are errors naming the key."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    for key in data:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"unknown key '{where}' (known: {', '.join(sorted(names))})")
    kwargs = {}
    for f in fields(cls):
        if f.name in data:
            where = f"{prefix}.{f.name}" if prefix else f.name
            kwargs[f.name] = coerce(data[f.name], hints[f.name], where)
    return cls(**kwargs)


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`base` updated by `update`, nested mappings merged key by key."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=3e-4` -> (["train", "lr"], 3e-4). Values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected KEY=VALUE, for example train.lr=3e-4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}': empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def nested(path: list[str], value: Any) -> dict[str, Any]:
    """(["train", "lr"], 3e-4) -> {"train": {"lr": 3e-4}}."""
    out: Any = value
    for part in reversed(path):
        out = {part: out}
    return out


def has_field(cls: type, path: list[str]) -> bool:
    """Whether the dotted key `path` names a field of dataclass `cls` (or of a nested one)."""
    hints = typing.get_type_hints(cls)
    tp = hints.get(path[0])
    if tp is None:
        return False
    if len(path) == 1:
        return True
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    inner = args[0]
    return dataclasses.is_dataclass(inner) and has_field(inner, path[1:])
