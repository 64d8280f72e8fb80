"""Procedural cardiac anatomy: parametric 2D label maps of standard views, no data needed.

Each view is ``sample_params(rng, view) -> Params`` (every draw recorded in a frozen record) and a
deterministic ``render(params, shape) -> (H, W) uint8`` label map in the view's label schema:

============  ========  ======================================================================
view          schema    model
============  ========  ======================================================================
echo_a4c      camus     apical 4-chamber: LV cavity, myocardium, left atrium, in the sector
echo_a2c      camus     apical 2-chamber: the same model with 2-chamber ranges
sa_mr         acdc      short-axis MR: LV cavity, myocardial ring, RV crescent
ct_axial      mmwhs     axial CT through the four chambers with the seven MM-WHS structures
============  ========  ======================================================================

The parameter ranges and geometry are documented in :mod:`~synthgen.sources.anatomy_echo` and
:mod:`~synthgen.sources.anatomy_mr_ct`; ``bench/anatomy_stats.py`` compares the maps with the real
labels (the table is in ``notes/anatomy.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from synthgen.errors import ConfigError
from synthgen.schemas import VIEWS, LabelSchema, get_schema
from synthgen.sources.anatomy_echo import ECHO_RANGES, EchoParams, render_echo, sample_echo_params
from synthgen.sources.anatomy_mr_ct import (
    CT_RANGES,
    SA_RANGES,
    AxialCtParams,
    ShortAxisParams,
    render_ct,
    render_sa,
    sample_ct_params,
    sample_sa_params,
)
from synthgen.sources.anatomy_shapes import AnatomyParams, Range

__all__ = [
    "VIEWS",
    "AnatomyParams",
    "AxialCtParams",
    "EchoParams",
    "ShortAxisParams",
    "params_type",
    "ranges",
    "render",
    "sample_params",
    "schema_of",
]

_SCHEMAS = {"echo_a4c": "camus", "echo_a2c": "camus", "sa_mr": "acdc", "ct_axial": "mmwhs"}
if tuple(_SCHEMAS) != VIEWS:
    raise ImportError(f"Expected the views of synthgen.schemas {VIEWS}. Got {tuple(_SCHEMAS)} instead.")
_PARAMS: dict[str, type[AnatomyParams]] = {
    "echo_a4c": EchoParams,
    "echo_a2c": EchoParams,
    "sa_mr": ShortAxisParams,
    "ct_axial": AxialCtParams,
}
_SAMPLERS: dict[str, Callable[[np.random.Generator], AnatomyParams]] = {
    "echo_a4c": lambda rng: sample_echo_params(rng, "echo_a4c"),
    "echo_a2c": lambda rng: sample_echo_params(rng, "echo_a2c"),
    "sa_mr": sample_sa_params,
    "ct_axial": sample_ct_params,
}
_RENDERERS: dict[type[AnatomyParams], Callable[[Any, tuple[int, int]], np.ndarray]] = {
    EchoParams: render_echo,
    ShortAxisParams: render_sa,
    AxialCtParams: render_ct,
}


def parse_view(view: str) -> str:
    if view not in _SCHEMAS:
        raise ConfigError(f"Expected an anatomy view in {list(VIEWS)}. Got {view!r} instead.")
    return view


def schema_of(view: str) -> LabelSchema:
    """The label schema a view is drawn in."""
    return get_schema(_SCHEMAS[parse_view(view)])


def params_type(view: str) -> type[AnatomyParams]:
    return _PARAMS[parse_view(view)]


def ranges(view: str) -> Mapping[str, Range]:
    """The documented uniform ranges a view's parameters are drawn from (discrete draws excluded)."""
    view = parse_view(view)
    if view.startswith("echo"):
        return ECHO_RANGES[view]
    return SA_RANGES if view == "sa_mr" else CT_RANGES


def sample_params(rng: np.random.Generator, view: str) -> AnatomyParams:
    """Draw the parameters of one map of ``view`` from ``rng``."""
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(f"Expected a numpy.random.Generator. Got {type(rng).__name__} instead.")
    return _SAMPLERS[parse_view(view)](rng)


def render(params: AnatomyParams, shape: tuple[int, int]) -> np.ndarray:
    """The (H, W) uint8 label map of ``params``: a pure function of its arguments."""
    if len(shape) != 2 or any(not isinstance(s, int | np.integer) or s < 8 for s in shape):
        raise ConfigError(f"Expected an image shape (H, W) of at least 8 x 8. Got {shape!r} instead.")
    renderer = _RENDERERS.get(type(params))
    if renderer is None:
        raise ConfigError(
            f"Expected anatomy parameters of {list(VIEWS)}. Got {type(params).__name__} instead."
        )
    return renderer(params, (int(shape[0]), int(shape[1])))
