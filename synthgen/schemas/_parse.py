"""Tiny validators used where configs enter (from dicts, TOML, JSON, CLI flags)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from synthgen.errors import ConfigError


def parse_str(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"Expected {what} to be a non-empty string. Got {value!r} instead.")
    return value


def parse_int(value: Any, what: str, *, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"Expected {what} to be an integer. Got {value!r} instead.")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ConfigError(f"Expected {what} {bounds}. Got {value} instead.")
    return value


def parse_float(value: Any, what: str, *, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"Expected {what} to be a number. Got {value!r} instead.")
    value = float(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"Expected {what} in [{lo}, {hi}]. Got {value} instead.")
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
