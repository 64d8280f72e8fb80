"""Procedural apical 4- and 2-chamber echo label maps (schema ``camus``).

Geometry, in image-normalised coordinates (y as a fraction of the height from the probe, x as a
fraction of the width), the convention of CAMUS, whose frames are all resized to 224 x 224:

- the ultrasound sector has its apex at the top centre of the image, a half opening angle and a
  radius. The LV cavity is kept inside it and the atrium is cut by it; the apical wall may reach
  past its sides, as experts annotate it in CAMUS (86% of CAMUS maps have labels outside the fan);
- the LV cavity hangs from its apex (at ``apex_y``, ``apex_x``) along a long axis leaning by
  ``lv_angle`` (positive: the base swings to the right). Its half-width along the axis follows an
  elliptic cap up to the widest point, then an elliptic quarter into the mitral annulus (so the
  basal corners are round); the septal (left) and lateral (right) halves differ by ``asymmetry``
  and the axis bows sideways by ``bend``;
- the myocardium is the band within a wall thickness of the cavity (septal, lateral and apical
  thicknesses blend smoothly), cut just below the annulus, so it is open towards the atrium;
- the left atrium hangs below the annulus: the convex hull of an ellipse (tilted by ``la_angle``
  from the LV axis, at least ``LA_MIN_WIDENING`` times as wide as the annulus) and the inlet (the
  annulus-wide strip between the basal walls), a rounded bag cut by the sector's far edge.

Most parameters are drawn uniformly from ``ECHO_RANGES``; three are derived, so that they vary
together as in CAMUS: the apex from the top of the apical wall (``WALL_TOP_Y``) and the column of
the long axis a third of the way down (``AXIS_X``), the atrium's length from its aspect
(``LA_ASPECT``). Default ranges come from the CAMUS labels (``bench/anatomy_stats.py`` compares the
two; the table is in ``bench/results/anatomy_stats.md``). Lengths are fractions of the image side.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numba
import numpy as np

from synthgen.errors import ConfigError
from synthgen.kernels import distance_to_mask, label_class
from synthgen.sources.anatomy_shapes import (
    AnatomyParams,
    Range,
    check_ranges,
    draw_uniform,
    pixel_grid,
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
    "sector_half_angle": (31.5, 33.0),
    "sector_radius": (0.98, 1.02),
    "lv_length": (0.31, 0.63),
    "lv_angle": (-2.0, 17.0),
    "lv_width_ratio": (0.33, 0.6),
    "apex_bluntness": (0.38, 0.56),
    "widest_at": (0.6, 0.85),
    "base_width": (0.52, 0.84),
    "bend": (-0.1, 0.1),
    "asymmetry": (-0.1, 0.1),
    "wall_septal": (0.04, 0.095),
    "wall_lateral_ratio": (0.75, 1.3),
    "wall_apex_ratio": (0.85, 1.4),
    "wall_base_extension": (0.02, 0.08),
    "la_width": (0.14, 0.28),
    "la_angle": (-28.0, 0.0),
}
ECHO_RANGES: dict[str, dict[str, Range]] = {
    "echo_a4c": _COMMON,
    "echo_a2c": _COMMON
    | {
        "lv_angle": (-2.0, 23.0),
        "wall_septal": (0.055, 0.115),
        "la_width": (0.14, 0.27),
        "la_angle": (-16.0, 16.0),
    },
}
# The apex is not drawn. Its height follows from the top of the apical wall (so a thick apex sits
# lower: in CAMUS the apex height and the apical wall thickness correlate at 0.6 to 0.7), its column
# from the column of the long axis a third of the way down (so a leaning LV stays centred: in CAMUS
# the apex column and the LV's lean correlate at -0.3 to -0.4); both are drawn from these ranges.
WALL_TOP_Y: dict[str, Range] = {"echo_a4c": (0.075, 0.2), "echo_a2c": (0.06, 0.19)}
AXIS_X: dict[str, Range] = {"echo_a4c": (0.465, 0.57), "echo_a2c": (0.44, 0.55)}
# Nor is the atrium's length: its aspect (length / width) is, so size and elongation vary apart
LA_ASPECT: dict[str, Range] = {"echo_a4c": (1.15, 2.1), "echo_a2c": (1.1, 2.0)}
LA_MIN_WIDENING = 1.05  # the atrium's ellipse is at least this much wider than the annulus
BASE_MAX_Y = 0.86  # deepest mitral annulus in CAMUS (95th percentile)
APEX_MIN_Y = 0.12  # the apical cavity must fit below the probe
FIT_SHAPE, STEP = (64, 64), 0.01  # coarse render and step used to fit the LV into the sector
FIT_MARGIN_DEG = 1.0  # the fitted cavity keeps this far (degrees) inside the sector's sides
for _ranges in ECHO_RANGES.values():
    check_ranges(_ranges, EchoParams, {"two_chamber", "apex_y", "apex_x", "la_length"})


def sample_echo_params(rng: np.random.Generator, view: str = "echo_a4c") -> EchoParams:
    """Draw the parameters of ``ECHO_RANGES[view]``, then the apex (from ``WALL_TOP_Y[view]`` and
    ``AXIS_X[view]``) and the atrium's length (from ``LA_ASPECT[view]``); fit the cavity into the sector."""
    drawn = draw_uniform(rng, ECHO_RANGES[view])
    derived = draw_uniform(
        rng, {"wall_top": WALL_TOP_Y[view], "axis_x": AXIS_X[view], "la_aspect": LA_ASPECT[view]}
    )
    wall_top, axis_x, la_aspect = derived.values()
    drawn["la_length"] = drawn["la_width"] * la_aspect
    apical = drawn["wall_septal"] * drawn["wall_apex_ratio"]  # the apical wall's thickness
    apex_y = max(wall_top + apical, APEX_MIN_Y)
    # the annulus stays above BASE_MAX_Y: a long LV starts higher (the apex moves, the length is kept)
    # as long as the wall's top stays in range; beyond that the LV is shortened
    angle = np.deg2rad(drawn["lv_angle"])
    base_y = apex_y + drawn["lv_length"] * np.cos(angle)
    highest = min(apex_y, max(APEX_MIN_Y, WALL_TOP_Y[view][0] + apical))
    drawn["apex_y"] = max(apex_y - max(base_y - BASE_MAX_Y, 0.0), highest)
    drawn["lv_length"] = min(drawn["lv_length"], (BASE_MAX_Y - drawn["apex_y"]) / np.cos(angle))
    drawn["apex_x"] = axis_x - drawn["lv_length"] / 3 * np.sin(angle)
    return _fit_in_sector(EchoParams(two_chamber=float(view == "echo_a2c"), **drawn))


def _fit_in_sector(p: EchoParams) -> EchoParams:
    """Move the LV down (then shorten it at the deepest annulus) until its cavity lies in the sector.

    A sonographer keeps the LV cavity in view; this is the same adjustment, made on a coarse render.
    """
    h, w = FIT_SHAPE
    for _ in range(40):
        if not _cavity_leaves_sector(p.to_vector().astype(np.float64), h, w, FIT_MARGIN_DEG):
            break
        base_y = p.apex_y + STEP + p.lv_length * np.cos(np.deg2rad(p.lv_angle))
        if base_y <= BASE_MAX_Y:
            p = replace(p, apex_y=p.apex_y + STEP)
        else:
            p = replace(p, apex_y=p.apex_y + STEP, lv_length=p.lv_length - STEP)
    return p


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

    A Numba pass paints the closed-form shapes (cavity, inlet, atrium) over the heart's region; a
    second one gives the labels: the wall is the band within the local wall thickness of the cavity
    and its inlet (a Euclidean distance transform over their bounding box, the thickness worked out
    only where the distance is within the thickest wall), and atrium slivers apart from the main
    atrium become wall.
    """
    h, w = shape
    return _render_echo(p.to_vector(), h, w)


# -- the Numba pass ---------------------------------------------------------------------------------
# bits of the code map painted by _paint_codes
_CAVITY, _INLET, _ATRIUM, _SECTOR = 1, 2, 4, 8
# positions in EchoParams.to_vector() (the dataclass field order)
(
    _TWO_CHAMBER,
    _SECTOR_HALF_ANGLE,
    _SECTOR_RADIUS,
    _APEX_Y,
    _APEX_X,
    _LV_LENGTH,
    _LV_ANGLE,
    _LV_WIDTH_RATIO,
    _APEX_BLUNTNESS,
    _WIDEST_AT,
    _BASE_WIDTH,
    _BEND,
    _ASYMMETRY,
    _WALL_SEPTAL,
    _WALL_LATERAL_RATIO,
    _WALL_APEX_RATIO,
    _WALL_BASE_EXTENSION,
    _LA_LENGTH,
    _LA_WIDTH,
    _LA_ANGLE,
) = range(20)
if (
    EchoParams.names().index("la_angle") != _LA_ANGLE or len(EchoParams.names()) != 20
):  # import-time self check
    raise ConfigError(f"Expected the Numba renderer's parameter positions to match {EchoParams.names()}.")


@numba.njit(cache=True, nogil=True)
def _half_width(t, p):
    """Cavity half-width (before asymmetry) at fraction ``t`` of the length from the apex."""
    widest = 0.5 * p[_LV_WIDTH_RATIO] * p[_LV_LENGTH]
    tm = p[_WIDEST_AT]
    if t <= tm:
        c = 1.0 - (1.0 - max(t, 0.0) / tm) ** 2
        return widest * max(c, 0.0) ** p[_APEX_BLUNTNESS]
    x = min((t - tm) / (1.0 - tm), 1.0)  # an elliptic quarter: the sides round into the annulus
    return widest * (p[_BASE_WIDTH] + (1.0 - p[_BASE_WIDTH]) * np.sqrt(1.0 - x * x))


@numba.njit(cache=True, nogil=True)
def _smoothstep(x):
    x = min(max(x, 0.0), 1.0)
    return x * x * (3 - 2 * x)


@numba.njit(cache=True, nogil=True)
def _frame(p, yn, xn, ca, sa):
    """(u, v) of the point (yn, xn): u down the long axis from the apex, v across it."""
    dy, dx = yn - p[_APEX_Y], xn - p[_APEX_X]
    return dy * ca + dx * sa, -dy * sa + dx * ca


@numba.njit(cache=True, nogil=True)
def _side(p, u, v, sin_pi):
    """The signed distance across the bowed long axis (``sin_pi``: sin(pi) as computed here)."""
    t = u / p[_LV_LENGTH]
    bow = p[_BEND] * p[_LV_LENGTH]
    if t <= 0.0:
        return v - bow * 0.0
    if t >= 1.0:
        return v - bow * sin_pi
    return v - bow * np.sin(np.pi * t)


@numba.njit(cache=True, nogil=True)
def _in_cavity(p, u, v, sin_pi):
    """Whether (u, v) lies in the cavity. The sine of the bow and the power of the apical cap are only
    evaluated where they can change the answer (bounds first), with the same values as everywhere."""
    length = p[_LV_LENGTH]
    t = u / length
    if not 0.0 <= t <= 1.0:
        return False
    asym = p[_ASYMMETRY]
    widest = 0.5 * p[_LV_WIDTH_RATIO] * length
    bow = p[_BEND] * length
    # the bow term lies between 0 and bow, so the side lies between these two; half <= widest
    if v - max(bow, 0.0) > widest * (1 + asym) or v - min(bow, 0.0) < -widest * (1 - asym):
        return False
    tm = p[_WIDEST_AT]
    # clearly inside, whatever the bow: the side is within the narrowest the half-width can be here
    # (c below, or the annulus's width past the widest point), kept off the edge by far more than rounding
    if t <= tm:
        low = max(1.0 - (1.0 - t / tm) ** 2, 0.0) if p[_APEX_BLUNTNESS] <= 1.0 else 0.0
    else:
        low = p[_BASE_WIDTH]
    low = widest * low * 0.999999
    if v - min(bow, 0.0) < low * (1 + asym) - 1e-12 and v - max(bow, 0.0) > -low * (1 - asym) + 1e-12:
        return True
    side = _side(p, u, v, sin_pi)
    if side > widest * (1 + asym) or side < -widest * (1 - asym):
        return False
    if t <= tm and p[_APEX_BLUNTNESS] <= 1.0:  # half = widest * c**b >= widest * c (0 <= c <= 1, b <= 1)
        c = max(1.0 - (1.0 - t / tm) ** 2, 0.0) * 0.999999
        if side <= widest * c * (1 + asym) and side >= -widest * c * (1 - asym):
            return True
    half = _half_width(t, p)
    return side <= half * (1 + asym) and side >= -half * (1 - asym)


@numba.njit(cache=True, nogil=True)
def _in_sector(p, yn, xc, margin_deg):
    angle = np.degrees(np.arctan2(abs(xc), yn))
    return angle <= p[_SECTOR_HALF_ANGLE] - margin_deg and np.hypot(yn, xc) <= p[_SECTOR_RADIUS] + margin_deg


_SURE = 1e-9  # relative margin of the quick sector test: far above the rounding of either test


@numba.njit(cache=True, nogil=True)
def _sector_bounds(p, margin_deg):
    """Bounds for :func:`_in_sector_quick`: tan(half angle) and the squared radius, each shrunk and
    grown by ``_SURE`` (no bound where the half angle is outside (0, 90) degrees)."""
    half, radius = p[_SECTOR_HALF_ANGLE] - margin_deg, p[_SECTOR_RADIUS] + margin_deg
    if not 0.0 < half < 90.0 or radius <= 0.0:
        return np.array([-1.0, np.inf, -1.0, np.inf])
    t, r2 = np.tan(np.deg2rad(half)), radius * radius
    return np.array([t * (1 - _SURE), t * (1 + _SURE), r2 * (1 - _SURE), r2 * (1 + _SURE)])


@numba.njit(cache=True, nogil=True)
def _in_sector_quick(p, yn, xc, margin_deg, bounds):
    """:func:`_in_sector` (``yn`` > 0), decided by a tangent and a squared radius where the point is
    clearly inside or outside, by the exact test only near the sector's edges."""
    ax, r2 = abs(xc), yn * yn + xc * xc
    if ax <= yn * bounds[0] and r2 <= bounds[2]:
        return True
    if ax >= yn * bounds[1] or r2 >= bounds[3]:
        return False
    return _in_sector(p, yn, xc, margin_deg)


@numba.njit(cache=True, nogil=True)
def _cavity_leaves_sector(p, h, w, margin_deg):
    """Whether any cavity pixel of an (h, w) render lies outside the sector narrowed by ``margin_deg``.

    Only the pixels of the cavity's bounding rectangle (u from 0 to the length, v within the widest
    half-width and the bow), padded by two pixels, are visited: no cavity pixel lies outside it.
    """
    a = np.deg2rad(p[_LV_ANGLE])
    ca, sa = np.cos(a), np.sin(a)
    sin_pi = np.sin(np.pi * 1.0)
    bounds = _sector_bounds(p, margin_deg)
    length = p[_LV_LENGTH]
    half = 0.5 * p[_LV_WIDTH_RATIO] * length * (1.0 + abs(p[_ASYMMETRY])) + abs(p[_BEND] * length)
    y_lo, y_hi, x_lo, x_hi = np.inf, -np.inf, np.inf, -np.inf
    for u in (0.0, length):
        for v in (-half, half):
            y, x = p[_APEX_Y] + u * ca - v * sa, p[_APEX_X] + u * sa + v * ca
            y_lo, y_hi, x_lo, x_hi = min(y_lo, y), max(y_hi, y), min(x_lo, x), max(x_hi, x)
    r0, r1 = max(int(np.floor(y_lo * h)) - 2, 0), min(int(np.ceil(y_hi * h)) + 2, h)
    c0, c1 = max(int(np.floor(x_lo * w)) - 2, 0), min(int(np.ceil(x_hi * w)) + 2, w)
    for i in range(r0, r1):
        yn = (i + 0.5) / h
        for j in range(c0, c1):
            xn = (j + 0.5) / w
            u, v = _frame(p, yn, xn, ca, sa)
            if not _in_sector_quick(p, yn, xn - 0.5, margin_deg, bounds) and _in_cavity(p, u, v, sin_pi):
                return True
    return False


@numba.njit(cache=True, nogil=True)
def _in_atrium(s_unit, q_unit, hull):
    """Whether a point of the atrium's unit-circle frame lies in the circle or the polygon ``hull``."""
    if abs(s_unit) ** 2 + abs(q_unit) ** 2 <= 1.0:
        return True
    k = hull.shape[0]
    if k < 3:
        return False
    s0, q0 = hull[k - 1, 0], hull[k - 1, 1]
    for m in range(k):
        s1, q1 = hull[m, 0], hull[m, 1]
        if (s1 - s0) * (q_unit - q0) - (q1 - q0) * (s_unit - s0) < 0.0:
            return False
        s0, q0 = s1, q1
    return True


@numba.njit(cache=True, nogil=True)
def _slab_columns(y0, x0, cy, cx, lo, hi, yn, w, j0, j1):
    """Narrow columns [j0, j1) of row ``yn`` to the pixels whose coordinate ``(yn - y0) * cy + (xn - x0)
    * cx`` (xn: a column's centre, a fraction of ``w``) may lie in [lo, hi]: the exact interval padded by
    two pixels, so that no pixel that the exact test keeps is left out."""
    base = (yn - y0) * cy - x0 * cx
    if abs(cx) < 1e-12:
        if base < lo - 1e-9 or base > hi + 1e-9:
            return j0, j0
        return j0, j1
    a, b = (lo - base) / cx, (hi - base) / cx
    if a > b:
        a, b = b, a
    return max(j0, int(np.floor(a * w - 0.5)) - 2), min(j1, int(np.ceil(b * w - 0.5)) + 3)


@numba.njit(cache=True, nogil=True)
def _paint_codes(p, h, w, r0, r1, c0, c1, atrium, hull, code):
    """Per pixel of rows r0..r1, columns c0..c1, the code bits: cavity, inlet below the annulus and
    atrium (``atrium`` and ``hull`` from :func:`_atrium_outline`), and for atrium pixels inside the
    sector. Each row visits only the columns where the cavity and inlet's rectangle (u from the apex to
    the base extension, v within the widest half-width and the bow) or the atrium's bounding box cross
    it; every other pixel has no bit."""
    a = np.deg2rad(p[_LV_ANGLE])
    ca, sa = np.cos(a), np.sin(a)
    sin_pi = np.sin(np.pi * 1.0)
    bounds = _sector_bounds(p, 0.0)
    length, asym = p[_LV_LENGTH], p[_ASYMMETRY]
    ext = p[_WALL_BASE_EXTENSION]
    base_half = _half_width(1.0, p)
    widest = 0.5 * p[_LV_WIDTH_RATIO] * length
    bow = p[_BEND] * length
    v_lo, v_hi = min(bow, 0.0) - widest * (1 + abs(asym)), max(bow, 0.0) + widest * (1 + abs(asym))
    hinge_y, hinge_x, cb, sb, ru, la_half = atrium[0], atrium[1], atrium[2], atrium[3], atrium[4], atrium[5]
    s_lo, s_hi, q_lo, q_hi = atrium[6], atrium[7], atrium[8], atrium[9]  # a bounding box of the atrium
    for i in range(r0, r1):
        yn = (i + 0.5) / h
        # the cavity and inlet: u in [0, length + ext], v in [v_lo, v_hi]
        k0, k1 = _slab_columns(p[_APEX_Y], p[_APEX_X], ca, sa, 0.0, length + ext, yn, w, c0, c1)
        k0, k1 = _slab_columns(p[_APEX_Y], p[_APEX_X], -sa, ca, v_lo, v_hi, yn, w, k0, k1)
        # the atrium's box: s in ru * (1 + [s_lo, s_hi]), q in la_half * [q_lo, q_hi]
        m0, m1 = _slab_columns(hinge_y, hinge_x, cb, sb, ru * (1 + s_lo), ru * (1 + s_hi), yn, w, c0, c1)
        m0, m1 = _slab_columns(hinge_y, hinge_x, -sb, cb, la_half * q_lo, la_half * q_hi, yn, w, m0, m1)
        if k1 <= k0:
            k0, k1 = m0, m1
        elif m1 > m0:
            k0, k1 = min(k0, m0), max(k1, m1)
        for j in range(k0, k1):
            xn = (j + 0.5) / w
            u, v = _frame(p, yn, xn, ca, sa)
            bits = _CAVITY if _in_cavity(p, u, v, sin_pi) else 0
            # below the annulus the side walls run on beside the atrium (the inlet, part of the atrium)
            if u > length and u <= length + ext:
                side = _side(p, u, v, sin_pi)
                if side <= base_half * (1 + asym) and side >= -base_half * (1 - asym):
                    bits |= _INLET | _ATRIUM
            dy, dx = yn - hinge_y, xn - hinge_x
            s, q = dy * cb + dx * sb, -dy * sb + dx * cb
            s_unit, q_unit = (s - ru) / ru, q / la_half
            if s_lo <= s_unit <= s_hi and q_lo <= q_unit <= q_hi and _in_atrium(s_unit, q_unit, hull):
                bits |= _ATRIUM
            if bits & _ATRIUM and _in_sector_quick(p, yn, xn - 0.5, 0.0, bounds):  # only the atrium is cut
                bits |= _SECTOR
            code[i, j] = bits


@numba.njit(cache=True, nogil=True)
def _paint_wall(p, h, w, r0, c0, distance, reach, out):
    """Mark as wall the pixels of the crop at (r0, c0) whose ``distance`` to the cavity or inlet is
    within the wall thickness there: it blends from the apex to the septal (left) and lateral (right)
    walls and tapers below the annulus over the base extension (fractions of the image side)."""
    a = np.deg2rad(p[_LV_ANGLE])
    ca, sa = np.cos(a), np.sin(a)
    sin_pi = np.sin(np.pi * 1.0)
    length, ws, ext = p[_LV_LENGTH], p[_WALL_SEPTAL], p[_WALL_BASE_EXTENSION]
    # the thickness blends the apical, septal and lateral ones: it lies between the least and the most
    ratios = (p[_WALL_APEX_RATIO], 1.0, p[_WALL_LATERAL_RATIO])
    thinnest, thickest = ws * min(ratios) * (1 - 1e-9), ws * max(ratios) * (1 + 1e-9)
    for i in range(distance.shape[0]):
        yn = (r0 + i + 0.5) / h
        for j in range(distance.shape[1]):
            d = distance[i, j]
            if not (0.0 < d <= reach):
                continue
            xn = (c0 + j + 0.5) / w
            u, v = _frame(p, yn, xn, ca, sa)
            if u > length + ext:  # beyond the base extension: no wall
                continue
            taper = min(max(1.0 - 0.6 * (u - length) / ext, 0.0), 1.0)
            if d <= thinnest * taper:  # clearly within the wall, or clearly beyond it
                out[r0 + i, c0 + j] = WALL
                continue
            if d > thickest * taper:
                continue
            side = _side(p, u, v, sin_pi)
            t = u / length
            apical = _smoothstep(1.0 - t / 0.5)
            lateral = _smoothstep(0.5 + side / (p[_LV_WIDTH_RATIO] * length))
            sides = ws * (1 + lateral * (p[_WALL_LATERAL_RATIO] - 1))
            thick = apical * ws * p[_WALL_APEX_RATIO] + (1 - apical) * sides
            if d <= thick * taper:
                out[r0 + i, c0 + j] = WALL


@numba.njit(cache=True, nogil=True)
def _bounding_box(a, region, bits, equal, margin):
    """Rows and columns [r0, r1) x [c0, c1) of the pixels of ``a`` (inside ``region``, rows and columns
    [r0, r1) x [c0, c1), outside which there are none) equal to ``bits`` (``equal``) or with any of
    ``bits`` set, grown by ``margin`` pixels (clipped); r0 == r1 when there is none."""
    h, w = a.shape
    r0, r1, c0, c1 = h, -1, w, -1
    for i in range(region[0], region[1]):
        for j in range(region[2], region[3]):
            if (a[i, j] == bits) if equal else (a[i, j] & bits) != 0:
                r0, r1 = min(r0, i), max(r1, i)
                c0, c1 = min(c0, j), max(c1, j)
    if r1 < 0:
        return 0, 0, 0, 0
    return max(r0 - margin, 0), min(r1 + margin + 1, h), max(c0 - margin, 0), min(c1 + margin + 1, w)


@numba.njit(cache=True, nogil=True)
def _render(p, h, w, region, atrium, hull, reach, margin):
    """The label map: the code bits painted over ``region`` (r0, r1, c0, c1), then the labels."""
    r0, r1, c0, c1 = region
    code = np.zeros((h, w), dtype=np.uint8)
    _paint_codes(p, h, w, r0, r1, c0, c1, atrium, hull, code)
    out = np.zeros((h, w), dtype=np.uint8)
    _paint_labels(p, h, w, code, region, reach, margin, out)
    return out


@numba.njit(cache=True, nogil=True)
def _paint_labels(p, h, w, code, region, reach, margin, out):
    """The labels of the painted ``code`` map into ``out`` (zeros): the wall within ``reach`` of the
    cavity and inlet (their bounding box grown by ``margin`` pixels holds every such pixel), then the
    atrium and the cavity, the atrium cut by the sector and its pieces apart from the largest (the
    first in raster order of the largest) turned to wall."""
    r0, r1, c0, c1 = _bounding_box(code, region, _CAVITY | _INLET, False, margin)
    if r1 > r0:
        seed = np.empty((r1 - r0, c1 - c0), dtype=np.bool_)
        for i in range(r0, r1):
            for j in range(c0, c1):
                seed[i - r0, j - c0] = (code[i, j] & (_CAVITY | _INLET)) != 0
        distance = np.empty(seed.shape, dtype=np.float64)
        distance_to_mask(seed, 1.0 / h, 1.0 / w, distance)
        _paint_wall(p, h, w, r0, c0, distance, reach, out)
    for i in range(region[0], region[1]):
        for j in range(region[2], region[3]):
            bits = code[i, j]
            if bits & _CAVITY:
                out[i, j] = CAVITY
            elif bits & _ATRIUM:
                out[i, j] = ATRIUM if bits & _SECTOR else 0
    r0, r1, c0, c1 = _bounding_box(out, region, ATRIUM, True, 0)
    if r1 == r0:
        return
    crop = out[r0:r1, c0:c1]
    parts = np.empty(crop.shape, dtype=np.int32)
    count = label_class(crop, np.uint8(ATRIUM), False, True, parts)
    if count <= 1:
        return
    sizes = np.zeros(count + 1, dtype=np.int64)
    for i in range(crop.shape[0]):
        for j in range(crop.shape[1]):
            sizes[parts[i, j]] += 1
    sizes[0] = -1
    keep = np.argmax(sizes)
    for i in range(crop.shape[0]):
        for j in range(crop.shape[1]):
            if parts[i, j] and parts[i, j] != keep:
                crop[i, j] = WALL


@numba.njit(cache=True, nogil=True)
def _reach(p):
    """The thickest the wall can be anywhere (a fraction of the image side)."""
    return p[_WALL_SEPTAL] * max(p[_WALL_APEX_RATIO], 1.0, p[_WALL_LATERAL_RATIO])


@numba.njit(cache=True, nogil=True)
def _corners(oy, ox, angle_deg, u0, u1, v, ys, xs, at):
    """Write into ``ys[at:at + 4]``, ``xs[at:at + 4]`` the corners of the rectangle u0..u1, -v..v in the
    frame at (``oy``, ``ox``) turned by ``angle_deg`` (u down the axis, v across it)."""
    a = np.deg2rad(angle_deg)
    ca, sa = np.cos(a), np.sin(a)
    for k in range(4):
        uu = u0 if k < 2 else u1
        vv = -v if k % 2 == 0 else v
        ys[at + k] = oy + uu * ca - vv * sa
        xs[at + k] = ox + uu * sa + vv * ca


@numba.njit(cache=True, nogil=True)
def _region(p, h, w):
    """Rows and columns [r0, r1) x [c0, c1) that hold the heart and every pixel within a wall thickness
    of its cavity and inlet (outside, nothing is painted and no wall can reach)."""
    reach = _reach(p)
    length = p[_LV_LENGTH]
    widest = 0.5 * p[_LV_WIDTH_RATIO] * length
    v = widest * (1 + abs(p[_ASYMMETRY])) + abs(p[_BEND] * length) + reach
    ys, xs = np.empty(8), np.empty(8)
    _corners(
        p[_APEX_Y], p[_APEX_X], p[_LV_ANGLE], -reach, length + p[_WALL_BASE_EXTENSION] + reach, v, ys, xs, 0
    )
    a = np.deg2rad(p[_LV_ANGLE])
    hinge_y, hinge_x = p[_APEX_Y] + length * np.cos(a), p[_APEX_X] + length * np.sin(a)
    base_half = widest * p[_BASE_WIDTH]
    # the atrium's half-width, the hinge's offset included
    q = max(0.5 * p[_LA_WIDTH], LA_MIN_WIDENING * base_half) + abs(base_half * p[_ASYMMETRY])
    # the ellipse; the rest of the atrium's hull lies within the cavity's rectangle (the inlet corners)
    _corners(hinge_y, hinge_x, p[_LV_ANGLE] + p[_LA_ANGLE], -q, p[_LA_LENGTH] + q, q, ys, xs, 4)
    pad = int(np.ceil(reach * max(h, w))) + 2
    return (
        max(int(np.floor(ys.min() * h)) - pad, 0),
        min(int(np.ceil(ys.max() * h)) + pad, h),
        max(int(np.floor(xs.min() * w)) - pad, 0),
        min(int(np.ceil(xs.max() * w)) + pad, w),
    )


@numba.njit(cache=True, nogil=True)
def _convex_hull(points):
    """Counter-clockwise vertices of the convex hull of (N, 2) points (Andrew's monotone chain over the
    points sorted by s, then q); none for fewer than 3 points."""
    n = points.shape[0]
    if n < 3:
        return np.zeros((0, 2))
    order = np.arange(n)
    for i in range(1, n):  # insertion sort: a dozen points at most
        m = order[i]
        k = i - 1
        while k >= 0 and (
            points[order[k], 0] > points[m, 0]
            or (points[order[k], 0] == points[m, 0] and points[order[k], 1] > points[m, 1])
        ):
            order[k + 1] = order[k]
            k -= 1
        order[k + 1] = m
    chain = np.empty(2 * n, dtype=np.int64)  # indices into points
    size = 0
    for sweep in range(2):  # the lower chain, then the upper one (the points in reverse)
        start = size
        for step in range(n):
            c = order[step] if sweep == 0 else order[n - 1 - step]
            while size - start >= 2:
                o, a = chain[size - 2], chain[size - 1]
                turn = (points[a, 0] - points[o, 0]) * (points[c, 1] - points[o, 1]) - (
                    points[a, 1] - points[o, 1]
                ) * (points[c, 0] - points[o, 0])
                if turn > 0.0:  # counter-clockwise: keep
                    break
                size -= 1
            chain[size] = c
            size += 1
        size -= 1  # each chain's last point starts the other
    hull = np.empty((size, 2))
    for k in range(size):
        hull[k, 0], hull[k, 1] = points[chain[k], 0], points[chain[k], 1]
    return hull


@numba.njit(cache=True, nogil=True)
def _atrium_outline(p):
    """The atrium: the convex hull of an ellipse below the annulus and the four corners of the inlet.

    Works in the frame where the ellipse is the unit circle: there the hull is the circle and a convex
    polygon, whose vertices are the corners outside the circle and their tangent points on it (an
    affine map keeps convex hulls). Returns the frame (hinge y and x, the cosine and sine of the
    ellipse's axis angle, its semi-axes along and across the axis, then a bounding box s0, s1, q0, q1
    of the circle and the polygon in the frame) and the polygon's counter-clockwise vertices (K, 2),
    none when every corner lies in the circle.
    """
    a = np.deg2rad(p[_LV_ANGLE])
    ca, sa = np.cos(a), np.sin(a)
    length = p[_LV_LENGTH]
    base_half = 0.5 * p[_LV_WIDTH_RATIO] * length * p[_BASE_WIDTH]  # the cavity's half-width at the annulus
    base_centre_v = base_half * p[_ASYMMETRY]
    hinge_y = p[_APEX_Y] + length * ca - base_centre_v * sa
    hinge_x = p[_APEX_X] + length * sa + base_centre_v * ca
    b = np.deg2rad(p[_LV_ANGLE] + p[_LA_ANGLE])
    cb, sb = np.cos(b), np.sin(b)
    ru = 0.5 * p[_LA_LENGTH]
    la_half = max(0.5 * p[_LA_WIDTH], LA_MIN_WIDENING * base_half)  # wider than the annulus
    ext = p[_WALL_BASE_EXTENSION]
    points = np.empty((12, 2))  # the inlet's corners outside the circle, then their tangent points
    out = 0
    for k in range(4):
        du = 0.0 if k < 2 else ext
        dv = -base_half if k % 2 == 0 else base_half
        dy, dx = du * ca - dv * sa, du * sa + dv * ca
        s_unit = (dy * cb + dx * sb - ru) / ru
        q_unit = (-dy * sb + dx * cb) / la_half
        radius = np.hypot(s_unit, q_unit)
        if radius > 1.0:
            points[out, 0], points[out, 1] = s_unit, q_unit
            out += 1
    for side in (-1.0, 1.0):
        for k in range(out):
            heading = np.arctan2(points[k, 1], points[k, 0])
            spread = np.arccos(1.0 / np.hypot(points[k, 0], points[k, 1]))
            tangent = heading + side * spread
            points[out * (2 if side > 0 else 1) + k, 0] = np.cos(tangent)
            points[out * (2 if side > 0 else 1) + k, 1] = np.sin(tangent)
    hull = _convex_hull(points[: 3 * out])
    # a bounding box of the circle and the polygon, padded so that it never decides a point on their edge
    s_lo, s_hi, q_lo, q_hi = -1.0, 1.0, -1.0, 1.0
    for k in range(hull.shape[0]):
        s_lo, s_hi = min(s_lo, hull[k, 0]), max(s_hi, hull[k, 0])
        q_lo, q_hi = min(q_lo, hull[k, 1]), max(q_hi, hull[k, 1])
    frame = np.empty(10)
    frame[0], frame[1], frame[2], frame[3], frame[4], frame[5] = hinge_y, hinge_x, cb, sb, ru, la_half
    frame[6], frame[7], frame[8], frame[9] = s_lo - 1e-9, s_hi + 1e-9, q_lo - 1e-9, q_hi + 1e-9
    return frame, hull


@numba.njit(cache=True, nogil=True)
def _render_echo(p, h, w):
    """The (h, w) label map of the parameter vector ``p`` (:func:`render_echo`)."""
    reach = _reach(p) * (1 + 1e-9)  # never below a thickness computed in floats
    margin = int(np.ceil(reach * max(h, w))) + 1
    atrium, hull = _atrium_outline(p)
    return _render(p, h, w, _region(p, h, w), atrium, hull, reach, margin)
