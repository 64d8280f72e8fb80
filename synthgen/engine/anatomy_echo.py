"""Procedural apical 4- and 2-chamber echo label maps (schema ``camus``).

Geometry, in image-normalised coordinates (y as a fraction of the height from the probe, x as a
fraction of the width), the convention of CAMUS, whose frames are all resized to 224 x 224:

- the ultrasound sector has its apex at the top centre of the image, a half opening angle and a
  radius. The LV cavity is kept inside it and the atrium is cut by it; the apical wall may reach
  past its sides, as experts annotate it in CAMUS (86% of CAMUS maps have wall outside the sector);
- the LV cavity hangs from its apex (at ``apex_y``, ``apex_x``) along a long axis leaning by
  ``lv_angle`` (positive: the base swings to the right). Its half-width along the axis follows an
  elliptic cap up to the widest point, then narrows towards the mitral annulus; the septal (left)
  and lateral (right) halves differ by ``asymmetry`` and the axis bows sideways by ``bend``;
- the myocardium is the band within a wall thickness of the cavity (septal, lateral and apical
  thicknesses blend smoothly), cut just below the annulus, so it is open towards the atrium;
- the left atrium hangs below the annulus: an ellipse joined to the annulus by a neck as wide as
  the cavity base, tilted by ``la_angle`` from the LV axis, and cut by the sector's far edge.

Default ranges come from the CAMUS labels (``bench/anatomy_stats.py`` compares the two; see
``notes/anatomy.md``). Lengths are fractions of the image side.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
from scipy import ndimage

from synthgen.engine.anatomy_shapes import (
    AnatomyParams,
    Range,
    check_ranges,
    draw_uniform,
    ellipse,
    largest_component,
    pixel_grid,
    to_frame,
)

CAVITY, WALL, ATRIUM = 1, 2, 3


@dataclass(frozen=True)
class EchoParams(AnatomyParams):
    """One apical echo heart; see the module docstring for the geometry and ``ECHO_RANGES`` for ranges."""

    view: ClassVar[str] = "echo"

    two_chamber: float  # 0: apical 4-chamber, 1: apical 2-chamber (only the ranges differ)
    sector_half_angle: float  # degrees
    sector_radius: float  # fraction of the height
    apex_y: float  # cavity apex, fraction of the height
    apex_x: float  # cavity apex, fraction of the width
    lv_length: float  # apex to mitral annulus
    lv_angle: float  # degrees from vertical; positive leans the base to the right
    lv_width_ratio: float  # widest cavity width / lv_length
    apex_bluntness: float  # exponent of the apical cap: 0.5 elliptic, lower is blunter
    widest_at: float  # where the cavity is widest, fraction of the length from the apex
    base_width: float  # width at the annulus / widest width
    bend: float  # sideways bow of the long axis at mid-cavity, fraction of the length
    asymmetry: float  # lateral half-width / mean - 1 (the septal half gets the opposite)
    wall_septal: float  # septal wall thickness
    wall_lateral_ratio: float  # lateral / septal thickness
    wall_apex_ratio: float  # apical / septal thickness
    wall_base_extension: float  # how far the myocardium tapers on below the annulus
    la_length: float
    la_width: float
    la_angle: float  # degrees, the atrial axis relative to the LV axis


_COMMON: dict[str, Range] = {
    "sector_half_angle": (31.0, 36.0),
    "sector_radius": (0.96, 1.0),
    "apex_y": (0.13, 0.3),
    "apex_x": (0.43, 0.56),
    "lv_length": (0.3, 0.64),
    "lv_angle": (-2.0, 17.0),
    "lv_width_ratio": (0.34, 0.56),
    "apex_bluntness": (0.38, 0.56),
    "widest_at": (0.6, 0.85),
    "base_width": (0.82, 0.97),
    "bend": (-0.05, 0.05),
    "asymmetry": (-0.1, 0.1),
    "wall_septal": (0.04, 0.095),
    "wall_lateral_ratio": (0.75, 1.3),
    "wall_apex_ratio": (0.85, 1.4),
    "wall_base_extension": (0.02, 0.08),
    "la_length": (0.16, 0.46),
    "la_width": (0.13, 0.28),
    "la_angle": (-18.0, 8.0),
}
ECHO_RANGES: dict[str, dict[str, Range]] = {
    "echo_a4c": _COMMON,
    "echo_a2c": _COMMON
    | {
        "apex_x": (0.4, 0.54),
        "lv_angle": (-2.0, 23.0),
        "wall_septal": (0.055, 0.115),
        "la_width": (0.12, 0.26),
    },
}
BASE_MAX_Y = 0.86  # deepest mitral annulus in CAMUS (95th percentile)
APEX_MIN_Y = 0.12  # the apical wall must fit below the probe
FIT_SHAPE, STEP = (64, 64), 0.01  # coarse render and step used to fit the LV into the sector
for _ranges in ECHO_RANGES.values():
    check_ranges(_ranges, EchoParams, {"two_chamber"})


def sample_echo_params(rng: np.random.Generator, view: str = "echo_a4c") -> EchoParams:
    """Draw every parameter uniformly from ``ECHO_RANGES[view]``."""
    drawn = draw_uniform(rng, ECHO_RANGES[view])
    # the annulus stays above BASE_MAX_Y: a long LV starts higher (the apex moves, the length is kept)
    base_y = drawn["apex_y"] + drawn["lv_length"] * np.cos(np.deg2rad(drawn["lv_angle"]))
    drawn["apex_y"] = max(drawn["apex_y"] - max(base_y - BASE_MAX_Y, 0.0), APEX_MIN_Y)
    return _fit_in_sector(EchoParams(two_chamber=float(view == "echo_a2c"), **drawn))


def _fit_in_sector(p: EchoParams) -> EchoParams:
    """Move the LV down (then shorten it at the deepest annulus) until its cavity lies in the sector.

    A sonographer keeps the LV cavity in view; this is the same adjustment, made on a coarse render.
    """
    for _ in range(40):
        cavity = _paint(p, FIT_SHAPE) == CAVITY
        if not (cavity & ~sector_mask(p, FIT_SHAPE, margin_deg=1.0)).any():
            break
        base_y = p.apex_y + STEP + p.lv_length * np.cos(np.deg2rad(p.lv_angle))
        if base_y <= BASE_MAX_Y:
            p = replace(p, apex_y=p.apex_y + STEP)
        else:
            p = replace(p, apex_y=p.apex_y + STEP, lv_length=p.lv_length - STEP)
    return p


def _half_width(t: np.ndarray, p: EchoParams) -> np.ndarray:
    """Cavity half-width (before asymmetry) at fractions ``t`` of the length from the apex."""
    widest = 0.5 * p.lv_width_ratio * p.lv_length
    tm = p.widest_at
    cap = np.clip(1.0 - (1.0 - np.clip(t, 0.0, None) / tm) ** 2, 0.0, None) ** p.apex_bluntness
    taper = 1.0 - (1.0 - p.base_width) * ((t - tm) / (1.0 - tm)) ** 2
    return widest * np.where(t <= tm, cap, taper)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def sector_mask(p: EchoParams, shape: tuple[int, int], margin_deg: float = 0.0) -> np.ndarray:
    """The ultrasound sector of these parameters, True inside (narrowed by ``margin_deg``)."""
    y, x = pixel_grid(shape)
    yn, xn = (y + 0.5) / shape[0], (x + 0.5) / shape[1] - 0.5
    angle = np.degrees(np.arctan2(np.abs(xn), yn))
    return (angle <= p.sector_half_angle - margin_deg) & (np.hypot(yn, xn) <= p.sector_radius + margin_deg)


def render_echo(p: EchoParams, shape: tuple[int, int]) -> np.ndarray:
    """The (H, W) uint8 label map of ``p`` (deterministic).

    As in the CAMUS annotations, the atrium is cut by the sector while the apical wall may reach
    past the sector's sides (experts draw the whole wall); the cavity lies inside the sector.
    """
    out = _paint(p, shape)
    atrium = out == ATRIUM
    out[atrium & ~sector_mask(p, shape)] = 0
    # slivers of atrium left beside the annulus corners (or cut off by the sector) become wall
    atrium = out == ATRIUM
    out[atrium & ~largest_component(atrium)] = WALL
    return out


def _paint(p: EchoParams, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    y, x = pixel_grid(shape)
    yn, xn = (y + 0.5) / h, (x + 0.5) / w
    u, v = to_frame(yn, xn, (p.apex_y, p.apex_x), p.lv_angle)
    t = u / p.lv_length
    centre = p.bend * p.lv_length * np.sin(np.pi * np.clip(t, 0.0, 1.0))
    half = _half_width(t, p)
    side = v - centre
    cavity = (t >= 0) & (t <= 1) & (side <= half * (1 + p.asymmetry)) & (side >= -half * (1 - p.asymmetry))

    # wall thickness blends from the apex to the septal (left) and lateral (right) walls
    apical = _smoothstep(1.0 - t / 0.5)
    lateral = _smoothstep(0.5 + side / (p.lv_width_ratio * p.lv_length))
    sides = p.wall_septal * (1 + lateral * (p.wall_lateral_ratio - 1))
    thickness = apical * p.wall_septal * p.wall_apex_ratio + (1 - apical) * sides
    # below the annulus the side walls run on beside the atrium, tapering over wall_base_extension
    below = (u > p.lv_length) & (u <= p.lv_length + p.wall_base_extension)
    base = float(_half_width(np.float64(1.0), p))
    inlet = below & (side <= base * (1 + p.asymmetry)) & (side >= -base * (1 - p.asymmetry))
    thickness *= np.clip(1.0 - 0.6 * (u - p.lv_length) / p.wall_base_extension, 0.0, 1.0)
    distance = ndimage.distance_transform_edt(~(cavity | inlet), sampling=(1.0 / h, 1.0 / w))
    wall = (distance > 0) & (distance <= thickness) & (u <= p.lv_length + p.wall_base_extension)

    # the atrium: an ellipse below the annulus, joined to it by a neck as wide as the cavity base
    base_half = float(_half_width(np.float64(1.0), p))
    base_centre_v = base_half * p.asymmetry
    a = np.deg2rad(p.lv_angle)
    hinge = (
        p.apex_y + p.lv_length * np.cos(a) - base_centre_v * np.sin(a),
        p.apex_x + p.lv_length * np.sin(a) + base_centre_v * np.cos(a),
    )
    s, q = to_frame(yn, xn, hinge, p.lv_angle + p.la_angle)
    tuck = base_half * abs(np.tan(np.deg2rad(p.la_angle))) + 0.01
    neck_len = 0.35 * p.la_length
    la_half = max(0.5 * p.la_width, 1.05 * base_half)  # never narrower than the annulus
    neck_half = 1.05 * base_half + (la_half - 1.05 * base_half) * np.clip(s / neck_len, 0.0, 1.0)
    atrium = ellipse(s - 0.5 * p.la_length, q, 0.5 * p.la_length, la_half)
    atrium |= (s >= -tuck) & (s <= neck_len) & (np.abs(q) <= neck_half)

    out = np.zeros(shape, np.uint8)
    out[wall] = WALL
    out[atrium] = ATRIUM
    out[cavity] = CAVITY
    return out
