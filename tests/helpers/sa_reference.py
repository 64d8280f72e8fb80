"""The NumPy reference of the procedural short-axis renderer (``synthgen.sources.anatomy_mr_ct``).

Whole-image vectorised NumPy over every pixel, no box: the Numba renderer must give the same maps,
pixel for pixel (tests/test_anatomy.py).
"""

from __future__ import annotations

import numpy as np

from synthgen.sources.anatomy_mr_ct import ShortAxisParams
from synthgen.sources.anatomy_shapes import ellipse, pixel_grid, to_frame, wobble


def render_sa(p: ShortAxisParams, shape: tuple[int, int]) -> np.ndarray:
    """The (H, W) uint8 ACDC-schema map (RV 1, myocardium 2, LV cavity 3) of ``p``."""
    h, w = shape
    side = np.sqrt(h * w)
    y, x = pixel_grid(shape)
    cy, cx = p.lv_y * h - 0.5, p.lv_x * w - 0.5
    dy, dx = (y - cy) / side, (x - cx) / side
    theta = np.arctan2(-dy, dx)
    u, v = to_frame(dy, dx, (0.0, 0.0), p.cavity_angle)
    # radius of the cavity boundary in the direction of each pixel (an ellipse, wobbled)
    phi = np.arctan2(v, u)
    ellipse_r = p.cavity_radius / np.sqrt(np.cos(phi) ** 2 + (np.sin(phi) / p.cavity_ratio) ** 2)
    r_cavity = ellipse_r * wobble(
        theta, (p.wobble_2, p.wobble_3, p.wobble_4), (p.phase_2, p.phase_3, p.phase_4)
    )
    r_wall = r_cavity + p.wall * (1 + p.wall_variation * np.cos(theta - p.wall_phase))
    radius = np.hypot(dy, dx)
    cavity = radius <= r_cavity
    epicardium = radius <= r_wall

    out = np.zeros(shape, np.uint8)
    if p.has_rv >= 0.5:
        # an ellipse along the LV-RV line from rv_reach behind the LV centre to rv_depth beyond
        # the epicardium, minus the LV: a crescent whose horns end on the wall
        epi_r = p.cavity_radius * (1 + p.cavity_ratio) / 2 + p.wall
        front, back = 1.0 + p.rv_depth, -p.rv_reach
        a = np.deg2rad(p.rv_angle)
        d = 0.5 * (front + back) * epi_r
        e = p.rv_shift * epi_r  # along the septum: perpendicular to the LV-RV line
        centre = (-np.sin(a) * d - np.cos(a) * e, np.cos(a) * d - np.sin(a) * e)
        ru, rv = to_frame(dy, dx, centre, p.rv_angle + 90.0 + p.rv_tilt)
        out[ellipse(ru, rv, 0.5 * (front - back) * epi_r, p.rv_width * epi_r) & ~epicardium] = 1
    out[epicardium] = 2
    out[cavity] = 3
    return out
