"""Smooth random displacement fields: a cubic B-spline over a coarse random control grid.

The field of a sample is defined exactly, so that the fast kernels, the public full-resolution field
and the NumPy reference agree bit for bit:

1. Control values. Control points sit every ``spacing`` pixels, starting one spacing before pixel 0.
   Component ``c`` of point ``(ky, kx)`` is ``(2u - 1) * max_displacement`` in float32, where ``u`` is
   a 24-bit uniform from a SplitMix64 counter hash of (seed, c, ky, kx). A pure function of the seed:
   no generator state, the same values on any thread, batch size or machine.
2. Mid-resolution grid. The cubic B-spline is evaluated every ``FIELD_STEP`` (8) pixels, separably:
   along columns first, then rows, accumulating the four taps in order in float32. The affine part,
   if any, is added there as its float64 displacement rounded to float32.
3. Full resolution. Inside each 8 x 8 cell the field is the bilinear interpolation of the four cell
   corners, first along rows then columns (:func:`upsample_field`).

B-spline weights are non-negative and sum to one, and so are bilinear ones, so each component of the
elastic part stays within ``[-max_displacement, max_displacement]``. A bilinear patch reaches its
extremes at its corners, which is what lets :mod:`synthgen.kernels.deform` fill cells that map into a
region of one label without visiting their pixels.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numba
import numpy as np

from synthgen.errors import ConfigError
from synthgen.kernels.affine import AffineParams
from synthgen.schemas import parse_float

FIELD_STEP = 8  # pixels between mid-resolution field samples; powers of two keep a/STEP exact in float32

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


class Grid(NamedTuple):
    """Where the control points and mid-resolution samples of a field of one shape and spacing lie."""

    ky0: np.ndarray  # (gh,) int64: first of the four control rows used by each mid-resolution row
    wy: np.ndarray  # (gh, 4) float32: their cubic B-spline weights
    kx0: np.ndarray  # (gw,) int64
    wx: np.ndarray  # (gw, 4) float32
    n_control: tuple[int, int]  # control points per axis


def _axis(n_pixels: int, spacing: float) -> tuple[np.ndarray, np.ndarray, int]:
    n_mid = (n_pixels - 1) // FIELD_STEP + 2  # the last pixel lies inside the last cell, not on its edge
    t = np.arange(n_mid, dtype=np.float64) * FIELD_STEP / spacing
    k0 = np.floor(t)
    u = t - k0
    w = np.stack(
        [(1 - u) ** 3 / 6, (3 * u**3 - 6 * u**2 + 4) / 6, (-3 * u**3 + 3 * u**2 + 3 * u + 1) / 6, u**3 / 6],
        axis=1,
    )
    return k0.astype(np.int64), w.astype(np.float32), int(k0[-1]) + 4


@functools.lru_cache(maxsize=64)
def grid(shape: tuple[int, int], spacing: float) -> Grid:
    """The (cached, read-only) sampling geometry of fields of ``shape`` with control ``spacing``."""
    ky0, wy, ncy = _axis(shape[0], spacing)
    kx0, wx, ncx = _axis(shape[1], spacing)
    for a in (ky0, wy, kx0, wx):
        a.setflags(write=False)
    return Grid(ky0, wy, kx0, wx, (ncy, ncx))


def parse_field_args(shape: Any, spacing: Any, max_displacement: Any) -> tuple[tuple[int, int], float, float]:
    if (
        not isinstance(shape, tuple | list)
        or len(shape) != 2
        or any(isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 1 for s in shape)
    ):
        raise ConfigError(f"Expected shape to be (H, W) with positive integers. Got {shape!r} instead.")
    spacing = parse_float(spacing, "the control-point spacing in pixels", lo=FIELD_STEP, hi=1e6)
    max_displacement = parse_float(max_displacement, "the maximum displacement in pixels", lo=0.0, hi=1e6)
    return (int(shape[0]), int(shape[1])), spacing, max_displacement


@numba.njit(cache=True, nogil=True)
def _mix64(z):
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, nogil=True)
def midres_field(seed, max_disp, ky0, wy, kx0, wx, ncy, ncx, affine, out):
    """Write the mid-resolution field (2, gh, gw) of one sample into ``out`` (float32).

    ``affine`` is the (2, 3) float64 sampling matrix whose displacement is added; identity adds zero.
    """
    gh = ky0.shape[0]
    gw = kx0.shape[0]
    key = _mix64(seed)
    m = np.float32(max_disp)
    control = np.empty((ncy, ncx), dtype=np.float32)
    cols = np.empty((ncy, gw), dtype=np.float32)
    for c in range(2):
        for ky in range(ncy):
            for kx in range(ncx):
                k = np.uint64(c * ncy * ncx + ky * ncx + kx + 1)
                bits = _mix64(key + k * _GOLDEN) >> np.uint64(40)
                u = np.float32(bits) * np.float32(2.0**-24)
                control[ky, kx] = (np.float32(2.0) * u - np.float32(1.0)) * m
        zero = np.float32(0.0)
        for ky in range(ncy):  # taps accumulated in order 0..3 from zero, as the reference does
            for j in range(gw):
                k = kx0[j]
                acc = zero + wx[j, 0] * control[ky, k]
                acc = acc + wx[j, 1] * control[ky, k + 1]
                acc = acc + wx[j, 2] * control[ky, k + 2]
                cols[ky, j] = acc + wx[j, 3] * control[ky, k + 3]
        for i in range(gh):
            k = ky0[i]
            w0, w1, w2, w3 = wy[i, 0], wy[i, 1], wy[i, 2], wy[i, 3]
            y = np.float64(i * FIELD_STEP)
            for j in range(gw):
                acc = zero + w0 * cols[k, j]
                acc = acc + w1 * cols[k + 1, j]
                acc = acc + w2 * cols[k + 2, j]
                acc = acc + w3 * cols[k + 3, j]
                x = np.float64(j * FIELD_STEP)
                src = affine[c, 0] * y + affine[c, 1] * x + affine[c, 2]
                out[c, i, j] = acc + np.float32(src - (y if c == 0 else x))


@numba.njit(cache=True, nogil=True)
def upsample_field(mid, out):
    """Bilinear upsampling of a mid-resolution field (2, gh, gw) to the full field ``out`` (2, H, W)."""
    h = out.shape[1]
    w = out.shape[2]
    step = np.float32(1.0 / FIELD_STEP)
    for c in range(2):
        for y in range(h):
            i = y // FIELD_STEP
            fy = np.float32(y - i * FIELD_STEP) * step
            gy = np.float32(1.0) - fy
            for x in range(w):
                j = x // FIELD_STEP
                fx = np.float32(x - j * FIELD_STEP) * step
                gx = np.float32(1.0) - fx
                left = gy * mid[c, i, j] + fy * mid[c, i + 1, j]
                right = gy * mid[c, i, j + 1] + fy * mid[c, i + 1, j + 1]
                out[c, y, x] = gx * left + fx * right


def midres_of(
    seed: int, shape: tuple[int, int], spacing: float, max_disp: float, matrix: np.ndarray
) -> np.ndarray:
    g = grid(shape, spacing)
    mid = np.empty((2, len(g.ky0), len(g.kx0)), dtype=np.float32)
    midres_field(np.uint64(seed), max_disp, g.ky0, g.wy, g.kx0, g.wx, *g.n_control, matrix, mid)
    return mid


def deformation_field(
    seed: int,
    shape: tuple[int, int],
    spacing: float,
    max_displacement: float,
    affine: AffineParams | None = None,
) -> np.ndarray:
    """The (2, H, W) float32 displacement (rows, then columns, in pixels) of one deformed sample.

    Elastic part from ``seed`` plus, where given, the displacement of the affine map: one sampling map,
    so a sample is resampled once. :func:`warp_labels` with this field gives exactly what
    :func:`deform_labels` gives for the same seed and parameters.
    """
    shape, spacing, max_displacement = parse_field_args(shape, spacing, max_displacement)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= int(seed) < 2**64:
        raise ConfigError(f"Expected an integer seed in [0, 2**64). Got {seed!r} instead.")
    if affine is not None and not isinstance(affine, AffineParams):
        raise ConfigError(f"Expected affine to be AffineParams or None. Got {type(affine).__name__} instead.")
    matrix = (affine or AffineParams()).matrix(shape)
    out = np.empty((2, *shape), dtype=np.float32)
    upsample_field(midres_of(int(seed), shape, spacing, max_displacement, matrix), out)
    return out


def elastic_field(seed: int, shape: tuple[int, int], spacing: float, max_displacement: float) -> np.ndarray:
    """A smooth random (2, H, W) float32 displacement in pixels, each component in [-max, max]."""
    return deformation_field(seed, shape, spacing, max_displacement)
