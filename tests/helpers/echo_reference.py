"""The NumPy reference of the procedural echo renderer (``synthgen.sources.anatomy_echo``).

Whole-image vectorised NumPy and ``scipy.ndimage`` over every pixel, no cropping: the Numba renderer
must give the same maps, pixel for pixel (tests/test_anatomy.py).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

from synthgen.sources.anatomy_echo import (
    ATRIUM,
    BASE_MAX_Y,
    CAVITY,
    FIT_MARGIN_DEG,
    FIT_SHAPE,
    LA_MIN_WIDENING,
    STEP,
    WALL,
    EchoParams,
    sector_mask,
)
from synthgen.sources.anatomy_shapes import ellipse, largest_component, pixel_grid, to_frame


def fit_in_sector(p: EchoParams) -> EchoParams:
    """Move the LV down (then shorten it at the deepest annulus) until its cavity lies in the sector.

    A sonographer keeps the LV cavity in view; this is the same adjustment, made on a coarse render.
    """
    for _ in range(40):
        cavity = _paint(p, FIT_SHAPE) == CAVITY
        if not (cavity & ~sector_mask(p, FIT_SHAPE, margin_deg=FIT_MARGIN_DEG)).any():
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
    x = np.clip((t - tm) / (1.0 - tm), 0.0, 1.0)  # an elliptic quarter down to the annulus
    taper = p.base_width + (1.0 - p.base_width) * np.sqrt(1.0 - x * x)
    return widest * np.where(t <= tm, cap, taper)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


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

    # the atrium: the convex hull of an ellipse below the annulus and the inlet's four corners, made
    # with scipy's ConvexHull in the frame where the ellipse is the unit circle; the inlet is atrium
    a = np.deg2rad(p.lv_angle)
    ca, sa = np.cos(a), np.sin(a)
    base_half = 0.5 * p.lv_width_ratio * p.lv_length * p.base_width
    base_centre_v = base_half * p.asymmetry
    hinge = (
        p.apex_y + p.lv_length * ca - base_centre_v * sa,
        p.apex_x + p.lv_length * sa + base_centre_v * ca,
    )
    ru, la_half = 0.5 * p.la_length, max(0.5 * p.la_width, LA_MIN_WIDENING * base_half)
    s, q = to_frame(yn, xn, hinge, p.lv_angle + p.la_angle)
    s_unit, q_unit = (s - ru) / ru, q / la_half
    atrium = ellipse(s_unit, q_unit, 1.0, 1.0) | inlet
    # the inlet's corners from the hinge, (du, dv) in the LV's frame, then in the unit-circle frame
    du = np.array([0.0, 0.0, p.wall_base_extension, p.wall_base_extension])
    dv = np.array([-base_half, base_half, -base_half, base_half])
    b = np.deg2rad(p.lv_angle + p.la_angle)
    cb, sb = np.cos(b), np.sin(b)
    dy, dx = du * ca - dv * sa, du * sa + dv * ca
    cs, cq = (dy * cb + dx * sb - ru) / ru, (-dy * sb + dx * cb) / la_half
    radius = np.hypot(cs, cq)
    out = radius > 1.0  # corners outside the circle, and their tangent points on it
    heading, spread = np.arctan2(cq[out], cs[out]), np.arccos(1.0 / radius[out])
    tangent = np.concatenate([heading - spread, heading + spread])
    points = np.concatenate(
        [np.stack([cs[out], cq[out]], 1), np.stack([np.cos(tangent), np.sin(tangent)], 1)]
    )
    if len(points) >= 3:
        hull = ConvexHull(points)
        vertices = hull.points[hull.vertices]  # counter-clockwise
        inside = np.ones(shape, bool)
        for (s0, q0), (s1, q1) in zip(vertices, np.roll(vertices, -1, axis=0), strict=True):
            inside &= (s1 - s0) * (q_unit - q0) - (q1 - q0) * (s_unit - s0) >= 0.0
        atrium |= inside

    out = np.zeros(shape, np.uint8)
    out[wall] = WALL
    out[atrium] = ATRIUM
    out[cavity] = CAVITY
    return out
