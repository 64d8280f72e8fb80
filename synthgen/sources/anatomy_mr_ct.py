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

import numpy as np

from synthgen.schemas import MMWHS
from synthgen.sources.anatomy_shapes import (
    AnatomyParams,
    Range,
    check_ranges,
    draw_uniform,
    ellipse,
    pixel_grid,
    to_frame,
    wobble,
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
