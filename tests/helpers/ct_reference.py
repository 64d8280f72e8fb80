"""The NumPy reference of the procedural axial CT renderer (``synthgen.sources.anatomy_mr_ct``).

Whole-image vectorised NumPy: the Numba renderer must give the same maps, pixel for pixel
(tests/test_anatomy.py).
"""

from __future__ import annotations

import numpy as np

from synthgen.schemas import MMWHS
from synthgen.sources.anatomy_mr_ct import AxialCtParams
from synthgen.sources.anatomy_shapes import ellipse, pixel_grid, to_frame


def render_ct(p: AxialCtParams, shape: tuple[int, int]) -> np.ndarray:
    """The (H, W) uint8 MM-WHS-schema map of ``p``, painted back to front."""
    h, w = shape
    side = np.sqrt(h * w)
    y, x = pixel_grid(shape)
    # heart frame: hx towards the patient's left (image right), hy posterior (image down)
    hy, hx = to_frame(
        (y - (p.heart_y * h - 0.5)) / side, (x - (p.heart_x * w - 0.5)) / side, (0, 0), p.heart_angle
    )
    hy, hx = hy / p.heart_scale, hx / p.heart_scale

    def at(cy: float, cx: float, angle: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        return to_frame(hy, hx, (cy, cx), angle)

    # ventricles in a septal frame at the crux: u towards the apex (left-anterior), v towards the RV
    su, sv = at(0.15, -0.05, 90.0 + p.lv_axis)
    lu, lv_ = su - (p.lv_length + 0.08), sv + (p.lv_width + 0.05)
    lv_cavity = ellipse(lu, lv_, p.lv_length, p.lv_width)
    lv_epi = ellipse(lu + 0.3 * p.lv_wall, lv_, p.lv_length + 0.7 * p.lv_wall, p.lv_width + p.lv_wall)
    rv = ellipse(su - 0.85 * p.rv_length, sv - 0.5 * p.rv_width, p.rv_length, p.rv_width) & ~lv_epi
    # atria behind the ventricles, the descending aorta behind the left atrium, the pulmonary trunk
    # in front of the RV outflow
    la = ellipse(*at(0.5 + p.shift_atria, 0.22), p.la_depth, p.la_width)
    ra = ellipse(*at(0.26 + p.shift_atria, -0.3), p.ra_depth, p.ra_width)
    aorta_y = 0.5 + p.shift_atria + p.la_depth + 0.9 * p.aorta_radius
    aorta = ellipse(*at(aorta_y, 0.38 + p.shift_vessels), p.aorta_radius, p.aorta_radius)
    pa = ellipse(*at(-0.36, 0.05 + p.shift_vessels, -25.0), p.pa_depth, p.pa_width)

    out = np.zeros(shape, np.uint8)
    for name, mask in (
        ("aorta", aorta),
        ("right_atrium", ra),
        ("left_atrium", la),
        ("pulmonary_artery", pa),
        ("rv_cavity", rv),
        ("lv_myocardium", lv_epi),
        ("lv_cavity", lv_cavity),
    ):
        out[mask] = MMWHS.value_of(name)
    return out
