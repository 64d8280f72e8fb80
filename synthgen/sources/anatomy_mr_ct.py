"""Procedural short-axis MR (schema ``acdc``) and axial CT (schema ``mmwhs``) label maps.

Both models work in pixel units scaled by the image side ``sqrt(H * W)`` (MR and CT pixels are
square), with positions as fractions of the height and width.

Short axis: the LV cavity is a slightly elliptic disc whose radius wobbles with a few smooth
harmonics; the myocardium is a ring around it whose thickness varies around the circumference; the
RV cavity is a crescent hugging the septum: an ellipse laid along the line from the LV centre
towards ``rv_angle``, minus the LV epicardium, so it touches the wall but never the LV cavity. ``rv_angle`` is measured
counter-clockwise from the image's +x axis (ACDC volumes as stored put the RV between 30 and 150
degrees). Apical and basal slices without RV are modelled by ``has_rv`` = 0.

Axial CT: a schematic slice at the level of the four chambers, in radiological display (patient's
left on the image right, anterior at the top): LV (cavity and wall) to the left-anterior, RV
anterior and to the right of the septum, the atria behind the ventricles (left atrium posterior
and central, right atrium on the patient's right), the descending aorta behind the left atrium
beside the spine, and the pulmonary trunk anterior above the RV outflow. All seven MM-WHS
structures appear, positioned in a heart frame that is scaled, turned and moved as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numba
import numpy as np

from synthgen.errors import ConfigError
from synthgen.schemas import MMWHS
from synthgen.sources.anatomy_shapes import (
    AnatomyParams,
    Range,
    check_ranges,
    draw_uniform,
)


@dataclass(frozen=True)
class ShortAxisParams(AnatomyParams):
    """One short-axis MR slice; ranges in ``SA_RANGES``."""

    view: ClassVar[str] = "sa_mr"

    lv_y: float  # LV centre, fraction of the height
    lv_x: float  # LV centre, fraction of the width
    cavity_radius: float  # fraction of sqrt(H * W)
    cavity_ratio: float  # minor / major axis of the cavity
    cavity_angle: float  # degrees, orientation of the major axis
    wobble_2: float  # relative amplitudes of radius harmonics 2..4
    wobble_3: float
    wobble_4: float
    phase_2: float  # radians
    phase_3: float
    phase_4: float
    wall: float  # mean wall thickness, fraction of sqrt(H * W)
    wall_variation: float  # relative thickness variation around the ring
    wall_phase: float  # radians, where the wall is thickest
    has_rv: float  # 1 or 0 (apical or basal slice without RV)
    rv_angle: float  # degrees counter-clockwise from +x, direction of the RV from the LV centre
    rv_depth: float  # greatest RV thickness beyond the epicardium / epicardial radius
    rv_reach: float  # how far behind the LV centre the RV outline's ellipse starts / epicardial radius
    rv_width: float  # half-length of that ellipse along the septum / epicardial radius
    rv_tilt: float  # degrees the ellipse turns about its centre (uneven horns)
    rv_shift: float  # sideways shift of the ellipse along the septum / epicardial radius


SA_RANGES: dict[str, Range] = {
    "lv_y": (0.4, 0.55),
    "lv_x": (0.41, 0.57),
    "cavity_radius": (0.015, 0.11),
    "cavity_ratio": (0.72, 1.0),
    "cavity_angle": (0.0, 180.0),
    "wobble_2": (0.0, 0.06),
    "wobble_3": (0.0, 0.04),
    "wobble_4": (0.0, 0.03),
    "phase_2": (0.0, 2 * np.pi),
    "phase_3": (0.0, 2 * np.pi),
    "phase_4": (0.0, 2 * np.pi),
    "wall": (0.015, 0.042),
    "wall_variation": (0.0, 0.35),
    "wall_phase": (0.0, 2 * np.pi),
    "rv_angle": (28.0, 125.0),
    "rv_depth": (0.2, 0.9),
    "rv_reach": (-0.6, 0.1),
    "rv_width": (0.8, 1.8),
    "rv_tilt": (-15.0, 15.0),
    "rv_shift": (-0.5, 0.5),
}
RV_PRESENCE = 0.85  # fraction of ACDC slices with myocardium that also show the RV
check_ranges(SA_RANGES, ShortAxisParams, {"has_rv"})


def sample_sa_params(rng: np.random.Generator) -> ShortAxisParams:
    """Draw ``has_rv`` (probability ``RV_PRESENCE``), then every range of ``SA_RANGES`` uniformly."""
    has_rv = float(rng.random() < RV_PRESENCE)
    return ShortAxisParams(has_rv=has_rv, **draw_uniform(rng, SA_RANGES))


def render_sa(p: ShortAxisParams, shape: tuple[int, int]) -> np.ndarray:
    """The (H, W) uint8 ACDC-schema map (RV 1, myocardium 2, LV cavity 3) of ``p``.

    Per pixel (a Numba pass over the box of the LV's outer reach and the RV's ellipse): the LV
    cavity's boundary lies at a wobbled ellipse's radius in the pixel's direction, the epicardium a
    varying wall thickness further out, and the RV is its ellipse outside the epicardium.
    """
    h, w = shape
    return _render_sa(p.to_vector(), h, w)


# positions in ShortAxisParams.to_vector() (the dataclass field order)
(
    _LV_Y,
    _LV_X,
    _CAVITY_RADIUS,
    _CAVITY_RATIO,
    _CAVITY_ANGLE,
    _WOBBLE_2,
    _WOBBLE_3,
    _WOBBLE_4,
    _PHASE_2,
    _PHASE_3,
    _PHASE_4,
    _WALL,
    _WALL_VARIATION,
    _WALL_PHASE,
    _HAS_RV,
    _RV_ANGLE,
    _RV_DEPTH,
    _RV_REACH,
    _RV_WIDTH,
    _RV_TILT,
    _RV_SHIFT,
) = range(21)
if ShortAxisParams.names().index("rv_shift") != _RV_SHIFT or len(ShortAxisParams.names()) != 21:
    raise ConfigError(
        f"Expected the Numba renderer's parameter positions to match {ShortAxisParams.names()}."
    )


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _box(cy, cx, reach, h, w, box):
    """Grow ``box`` (r0, r1, c0, c1, pixels) to hold the disc of ``reach`` pixels around (cy, cx), padded
    by two pixels and clipped to the image."""
    box[0] = max(min(box[0], int(np.floor(cy - reach)) - 2), 0)
    box[1] = min(max(box[1], int(np.ceil(cy + reach)) + 3), h)
    box[2] = max(min(box[2], int(np.floor(cx - reach)) - 2), 0)
    box[3] = min(max(box[3], int(np.ceil(cx + reach)) + 3), w)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _render_sa(p, h, w):
    """:func:`render_sa` of the parameter vector ``p``: the same expressions, per pixel, as the NumPy
    version (tests/helpers/sa_reference.py), evaluated only where a shape can reach."""
    side = np.sqrt(h * w)
    cy, cx = p[_LV_Y] * h - 0.5, p[_LV_X] * w - 0.5
    a = np.deg2rad(p[_CAVITY_ANGLE])
    ca, sa = np.cos(a), np.sin(a)
    ratio, radius0 = p[_CAVITY_RATIO], p[_CAVITY_RADIUS]
    # the farthest the epicardium reaches: the ellipse's radius is at most radius0 * max(1, ratio)
    wobble_most = 1.0 + abs(p[_WOBBLE_2]) + abs(p[_WOBBLE_3]) + abs(p[_WOBBLE_4])
    lv_reach = abs(radius0) * max(1.0, abs(ratio)) * wobble_most + abs(p[_WALL]) * (
        1 + abs(p[_WALL_VARIATION])
    )
    lv_reach = lv_reach * (1 + 1e-9) + 1e-12
    box = np.array([h, 0, w, 0])
    _box(cy, cx, lv_reach * side, h, w, box)
    has_rv = p[_HAS_RV] >= 0.5
    epi_r = radius0 * (1 + ratio) / 2 + p[_WALL]
    front, back = 1.0 + p[_RV_DEPTH], -p[_RV_REACH]
    b = np.deg2rad(p[_RV_ANGLE])
    d = 0.5 * (front + back) * epi_r
    e = p[_RV_SHIFT] * epi_r  # along the septum: perpendicular to the LV-RV line
    rv_y, rv_x = -np.sin(b) * d - np.cos(b) * e, np.cos(b) * d - np.sin(b) * e
    t = np.deg2rad(p[_RV_ANGLE] + 90.0 + p[_RV_TILT])
    ct, st = np.cos(t), np.sin(t)
    rv_u, rv_v = 0.5 * (front - back) * epi_r, p[_RV_WIDTH] * epi_r
    if has_rv:
        _box(cy + rv_y * side, cx + rv_x * side, max(abs(rv_u), abs(rv_v)) * side * (1 + 1e-9), h, w, box)
    out = np.zeros((h, w), dtype=np.uint8)
    for i in range(box[0], box[1]):
        dy = (i - cy) / side
        for j in range(box[2], box[3]):
            dx = (j - cx) / side
            in_rv = False
            if has_rv:
                ry, rx = dy - rv_y, dx - rv_x
                qu, qv = abs((ry * ct + rx * st) / rv_u), abs((-ry * st + rx * ct) / rv_v)
                in_rv = qu * qu + qv * qv <= 1.0
            radius = np.hypot(dy, dx)
            if radius > lv_reach:  # beyond the epicardium's farthest reach
                if in_rv:
                    out[i, j] = 1
                continue
            theta = np.arctan2(-dy, dx)
            phi = np.arctan2(-dy * sa + dx * ca, dy * ca + dx * sa)
            s = np.sin(phi) / ratio
            c = np.cos(phi)
            ellipse_r = radius0 / np.sqrt(c * c + s * s)
            wobble = 1.0
            wobble += p[_WOBBLE_2] * np.cos(2 * theta + p[_PHASE_2])
            wobble += p[_WOBBLE_3] * np.cos(3 * theta + p[_PHASE_3])
            wobble += p[_WOBBLE_4] * np.cos(4 * theta + p[_PHASE_4])
            r_cavity = ellipse_r * wobble
            r_wall = r_cavity + p[_WALL] * (1 + p[_WALL_VARIATION] * np.cos(theta - p[_WALL_PHASE]))
            if radius <= r_cavity:
                out[i, j] = 3
            elif radius <= r_wall:
                out[i, j] = 2
            elif in_rv:
                out[i, j] = 1
    return out


@dataclass(frozen=True)
class AxialCtParams(AnatomyParams):
    """One axial CT slice through the four chambers; ranges in ``CT_RANGES``. Sizes in heart units."""

    view: ClassVar[str] = "ct_axial"

    heart_y: float  # heart-frame origin, fraction of the height
    heart_x: float  # fraction of the width
    heart_scale: float  # one heart unit as a fraction of sqrt(H * W)
    heart_angle: float  # degrees, turns the whole heart
    lv_length: float  # cavity half-length along the LV axis (pointing left-anterior)
    lv_width: float  # cavity half-width
    lv_axis: float  # degrees of the LV axis above the patient's left-right line
    lv_wall: float
    rv_length: float
    rv_width: float
    la_width: float
    la_depth: float
    ra_width: float
    ra_depth: float
    aorta_radius: float
    pa_width: float
    pa_depth: float
    shift_atria: float  # moves both atria along the anterior-posterior axis
    shift_vessels: float  # moves aorta and pulmonary trunk sideways


CT_RANGES: dict[str, Range] = {
    "heart_y": (0.44, 0.54),
    "heart_x": (0.46, 0.56),
    "heart_scale": (0.3, 0.4),
    "heart_angle": (-12.0, 12.0),
    "lv_length": (0.36, 0.48),
    "lv_width": (0.17, 0.25),
    "lv_axis": (25.0, 50.0),
    "lv_wall": (0.06, 0.1),
    "rv_length": (0.34, 0.46),
    "rv_width": (0.14, 0.22),
    "la_width": (0.24, 0.34),
    "la_depth": (0.14, 0.2),
    "ra_width": (0.2, 0.28),
    "ra_depth": (0.2, 0.28),
    "aorta_radius": (0.1, 0.14),
    "pa_width": (0.12, 0.18),
    "pa_depth": (0.07, 0.11),
    "shift_atria": (-0.05, 0.05),
    "shift_vessels": (-0.05, 0.05),
}
check_ranges(CT_RANGES, AxialCtParams, set())


def sample_ct_params(rng: np.random.Generator) -> AxialCtParams:
    return AxialCtParams(**draw_uniform(rng, CT_RANGES))


def render_ct(p: AxialCtParams, shape: tuple[int, int]) -> np.ndarray:
    """The (H, W) uint8 MM-WHS-schema map of ``p``, painted back to front (a Numba pass per pixel:
    the heart frame, then each structure's ellipse in its own frame)."""
    h, w = shape
    return _render_ct(p.to_vector(), h, w, _CT_VALUES)


# MM-WHS values in painting order (back to front: the later wins)
_CT_ORDER = (
    "aorta",
    "right_atrium",
    "left_atrium",
    "pulmonary_artery",
    "rv_cavity",
    "lv_myocardium",
    "lv_cavity",
)
_CT_VALUES = np.array([MMWHS.value_of(name) for name in _CT_ORDER], np.uint8)
(
    _HEART_Y,
    _HEART_X,
    _HEART_SCALE,
    _HEART_ANGLE,
    _CT_LV_LENGTH,
    _CT_LV_WIDTH,
    _CT_LV_AXIS,
    _CT_LV_WALL,
    _CT_RV_LENGTH,
    _CT_RV_WIDTH,
    _LA_WIDTH,
    _LA_DEPTH,
    _RA_WIDTH,
    _RA_DEPTH,
    _AORTA_RADIUS,
    _PA_WIDTH,
    _PA_DEPTH,
    _SHIFT_ATRIA,
    _SHIFT_VESSELS,
) = range(19)
if AxialCtParams.names().index("shift_vessels") != _SHIFT_VESSELS or len(AxialCtParams.names()) != 19:
    raise ConfigError(f"Expected the Numba renderer's parameter positions to match {AxialCtParams.names()}.")


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _in_ellipse(u, v, ru, rv):
    """``ellipse(u, v, ru, rv)`` of :mod:`anatomy_shapes` for one point (its squares as NumPy's)."""
    a, b = abs(u / ru), abs(v / rv)
    return a * a + b * b <= 1.0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _render_ct(p, h, w, values):
    """:func:`render_ct` of the parameter vector ``p``: the same expressions, per pixel, as the NumPy
    version (tests/helpers/ct_reference.py). Frames are (origin y, origin x, cos, sin) rows."""
    side = np.sqrt(h * w)
    cy, cx = p[_HEART_Y] * h - 0.5, p[_HEART_X] * w - 0.5
    a = np.deg2rad(p[_HEART_ANGLE])
    ca, sa = np.cos(a), np.sin(a)
    scale = p[_HEART_SCALE]
    # the structures' frames in the heart frame: septal (the ventricles), the atria, aorta, trunk
    aorta_y = 0.5 + p[_SHIFT_ATRIA] + p[_LA_DEPTH] + 0.9 * p[_AORTA_RADIUS]
    origins = (
        (0.15, -0.05, 90.0 + p[_CT_LV_AXIS]),
        (0.5 + p[_SHIFT_ATRIA], 0.22, 0.0),
        (0.26 + p[_SHIFT_ATRIA], -0.3, 0.0),
        (aorta_y, 0.38 + p[_SHIFT_VESSELS], 0.0),
        (-0.36, 0.05 + p[_SHIFT_VESSELS], -25.0),
    )
    frames = np.empty((5, 4))
    for k in range(5):
        b = np.deg2rad(origins[k][2])
        frames[k, 0], frames[k, 1], frames[k, 2], frames[k, 3] = (
            origins[k][0],
            origins[k][1],
            np.cos(b),
            np.sin(b),
        )
    lv_length, lv_width, lv_wall = p[_CT_LV_LENGTH], p[_CT_LV_WIDTH], p[_CT_LV_WALL]
    rv_length, rv_width = p[_CT_RV_LENGTH], p[_CT_RV_WIDTH]
    out = np.zeros((h, w), dtype=np.uint8)
    uv = np.empty((5, 2))
    for i in range(h):
        dy = (i - cy) / side
        for j in range(w):
            dx = (j - cx) / side
            hy, hx = (dy * ca + dx * sa) / scale, (-dy * sa + dx * ca) / scale
            for k in range(5):
                fy, fx = hy - frames[k, 0], hx - frames[k, 1]
                uv[k, 0], uv[k, 1] = (
                    fy * frames[k, 2] + fx * frames[k, 3],
                    -fy * frames[k, 3] + fx * frames[k, 2],
                )
            su, sv = uv[0, 0], uv[0, 1]
            lu, lv_ = su - (lv_length + 0.08), sv + (lv_width + 0.05)
            if _in_ellipse(lu, lv_, lv_length, lv_width):
                out[i, j] = values[6]
            elif _in_ellipse(lu + 0.3 * lv_wall, lv_, lv_length + 0.7 * lv_wall, lv_width + lv_wall):
                out[i, j] = values[5]
            elif _in_ellipse(su - 0.85 * rv_length, sv - 0.5 * rv_width, rv_length, rv_width):
                out[i, j] = values[4]
            elif _in_ellipse(uv[4, 0], uv[4, 1], p[_PA_DEPTH], p[_PA_WIDTH]):
                out[i, j] = values[3]
            elif _in_ellipse(uv[1, 0], uv[1, 1], p[_LA_DEPTH], p[_LA_WIDTH]):
                out[i, j] = values[2]
            elif _in_ellipse(uv[2, 0], uv[2, 1], p[_RA_DEPTH], p[_RA_WIDTH]):
                out[i, j] = values[1]
            elif _in_ellipse(uv[3, 0], uv[3, 1], p[_AORTA_RADIUS], p[_AORTA_RADIUS]):
                out[i, j] = values[0]
    return out
