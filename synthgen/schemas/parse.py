"""Tiny validators used where configs enter (from dicts, TOML, JSON, CLI flags, checkpoints).

The one parse module of synthgen: every config dataclass passes its fields through these functions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from synthgen.errors import ConfigError

T = TypeVar("T")
# nested tables whose kind is named by one key: a new kind replaces the table instead of merging into it
TABLE_KINDS = {"source": "kind", "model": "arch"}


def check_range(value: float, what: str, lo: float | None = None, hi: float | None = None) -> None:
    """Raise :class:`ConfigError` unless ``lo <= value <= hi`` (a bound of ``None`` is open)."""
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ConfigError(f"Expected {what} {bounds}. Got {value} instead.")


def parse_str(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"Expected {what} to be a non-empty string. Got {value!r} instead.")
    return value


def parse_int(value: Any, what: str, *, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"Expected {what} to be an integer. Got {value!r} instead.")
    check_range(value, what, lo, hi)
    return value


def parse_float(value: Any, what: str, *, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"Expected {what} to be a number. Got {value!r} instead.")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"Expected {what} to be a finite number. Got {value} instead.")
    check_range(value, what, lo, hi)
    return value


def parse_bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"Expected {what} to be true or false. Got {value!r} instead.")
    return value


def parse_str_tuple(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(f"Expected {what} to be a list of strings. Got {value!r} instead.")
    return tuple(parse_str(v, f"each item of {what}") for v in value)


def parse_mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"Expected {what} to be a table/object. Got {type(value).__name__} instead.")
    return value


def reject_unknown_keys(data: Mapping[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"Unknown key(s) {unknown} in {what}. Expected only {sorted(allowed)}.")


_PARSERS = {"int": parse_int, "float": parse_float, "str": parse_str, "bool": parse_bool}


def fields_from_dict(cls: type[T], data: Any, what: str, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Parse the scalar fields of dataclass ``cls`` from ``data``: unknown keys and wrong types are errors.

    Missing keys keep the dataclass default. Range checks belong in ``cls.__post_init__``.
    """
    data = parse_mapping(data, what)
    names = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}  # type: ignore[arg-type]
    reject_unknown_keys(data, set(names) | set(skip), what)
    out = {}
    for name, f in names.items():
        if name in data:
            out[name] = _PARSERS[str(f.type)](data[name], f"'{name}' in {what}")
    return out


def merge_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The one merge of configs, from preset to file to checkpoint to flags: ``base`` with ``overrides``
    applied. ``None`` means "not given"; a nested table merges key by key, except that a table whose
    kind changes (``source.kind``, ``model.arch``: :data:`TABLE_KINDS`) is replaced, since the keys of
    one kind mean nothing to another."""
    out = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue
        old = out.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            given = {k: v for k, v in value.items() if v is not None}
            tag = TABLE_KINDS.get(key)
            if tag is not None and old.get(tag) is not None and given.get(tag, old[tag]) != old[tag]:
                out[key] = given
            else:
                out[key] = merge_overrides(old, given)
        elif isinstance(value, Mapping):
            out[key] = {k: v for k, v in value.items() if v is not None}
        else:
            out[key] = value
    return out
