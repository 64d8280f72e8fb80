"""Shared pieces of the procedural anatomy: the parameter record and a few plane-geometry helpers.

Every anatomy model is ``sample_params(rng) -> Params`` then a deterministic ``render(params, shape)``
(STYLE rule 5). A Params record holds floats only, so it is also a flat vector for ``meta/`` arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any, ClassVar, Self

import numpy as np

from synthgen.errors import ConfigError
from synthgen.kernels import connected_components
from synthgen.schemas import parse_float, parse_mapping, reject_unknown_keys

Range = tuple[float, float]
_NAMES: dict[type, tuple[str, ...]] = {}  # field names per record type (asked for once per draw)
_GETTERS: dict[type, attrgetter] = {}  # all the fields of a record type at once


@dataclass(frozen=True)
class AnatomyParams:
    """Base of the frozen parameter records: all fields are floats, recorded in declaration order."""

    view: ClassVar[str] = ""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        names = _NAMES.get(cls)
        if names is None:
            names = _NAMES[cls] = tuple(f.name for f in fields(cls))
        return names

    def to_dict(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in self.names()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        data = parse_mapping(data, f"the {cls.view} anatomy parameters")
        reject_unknown_keys(data, set(cls.names()), f"the {cls.view} anatomy parameters")
        missing = [n for n in cls.names() if n not in data]
        if missing:
            raise ConfigError(f"Expected every {cls.view} anatomy parameter. Missing {missing}.")
        return cls(**{n: parse_float(data[n], f"parameter {n!r}") for n in cls.names()})

    def to_vector(self) -> np.ndarray:
        getter = _GETTERS.get(type(self))
        if getter is None:
            getter = _GETTERS[type(self)] = attrgetter(*self.names())
        return np.array(getter(self), np.float64)

    @classmethod
    def from_vector(cls, vector: Any) -> Self:
        vector = np.asarray(vector, np.float64)
        if vector.shape != (len(cls.names()),):
            raise ConfigError(
                f"Expected a vector of {len(cls.names())} {cls.view} parameters. Got shape {vector.shape} instead."
            )
        return cls(*(float(v) for v in vector))


def draw_uniform(rng: np.random.Generator, ranges: Mapping[str, Range]) -> dict[str, float]:
    """One uniform draw per range, in the mapping's order (so the draws are reproducible): the values
    of ``rng.uniform(lows, highs)``, formed as it forms them (low + (high - low) * ``rng.random()``)
    without its broadcasting, which costs more than the draw."""
    spans = tuple(map(tuple, ranges.values()))
    bounds = _BOUNDS.get(spans)
    if bounds is None:
        if len(_BOUNDS) > 64:
            _BOUNDS.clear()
        lo, hi = np.array(spans, np.float64).reshape(-1, 2).T
        bounds = _BOUNDS[spans] = (lo.copy(), hi - lo)
    lo, width = bounds
    return dict(zip(ranges, (lo + width * rng.random(len(lo))).tolist(), strict=True))


_BOUNDS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}  # low ends and widths of the tables met so far


def check_ranges(ranges: Mapping[str, Range], params: type[AnatomyParams], drawn_elsewhere: set[str]) -> None:
    """A model's range table must cover exactly its parameters (import-time self check)."""
    expected = set(params.names()) - drawn_elsewhere
    if set(ranges) != expected or any(lo > hi for lo, hi in ranges.values()):
        raise ConfigError(f"Expected ordered ranges for {sorted(expected)}. Got {dict(ranges)} instead.")


def pixel_grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) pixel-centre coordinates of an (H, W) image, float64, broadcastable (H, 1) and (1, W)."""
    h, w = shape
    return np.arange(h, dtype=np.float64)[:, None], np.arange(w, dtype=np.float64)[None, :]


def to_frame(
    y: np.ndarray, x: np.ndarray, origin: tuple[float, float], angle_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (u, v) in a frame at ``origin`` (y, x) whose u axis points down, turned by ``angle_deg``.

    At angle 0, u grows downwards and v to the right; a positive angle swings the u axis towards +x
    (so a long axis drawn from an apex at the top leans its base to the right).
    """
    a = np.deg2rad(angle_deg)
    dy, dx = y - origin[0], x - origin[1]
    return dy * np.cos(a) + dx * np.sin(a), -dy * np.sin(a) + dx * np.cos(a)


def ellipse(u: np.ndarray, v: np.ndarray, ru: float, rv: float, power: float = 2.0) -> np.ndarray:
    """Inside of the (super)ellipse |u/ru|^p + |v/rv|^p <= 1."""
    return np.abs(u / ru) ** power + np.abs(v / rv) ** power <= 1.0


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of ``mask`` (all False if it is empty)."""
    labelled, n = connected_components(mask.view(np.uint8), connectivity=8)
    if n <= 1:
        return mask
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return labelled == int(np.argmax(sizes))


def wobble(angle: np.ndarray, amplitudes: tuple[float, ...], phases: tuple[float, ...]) -> np.ndarray:
    """1 + a smooth periodic perturbation of a radius: harmonics 2, 3, ... with the given amplitudes."""
    out = np.ones_like(angle)
    for k, (amp, phase) in enumerate(zip(amplitudes, phases, strict=True), start=2):
        out += amp * np.cos(k * angle + phase)
    return out
