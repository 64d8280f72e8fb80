"""Resampling through a displacement field: nearest neighbour for labels, bilinear for images.

A field holds, for every output pixel (row, col), the displacement (d_row, d_col) in pixels to the
source position it samples: ``out[r, c] = in[r + d_row, c + d_col]``. The sum is formed in the field's
float type (float32 for synthgen's own fields). Positions outside the image are clamped to the edge
(``scipy.ndimage.map_coordinates`` mode ``"nearest"``), so a label map never gets a value it did not
have. Nearest neighbour rounds halves up (``floor(p + 0.5)``), the convention of ``map_coordinates``
with ``order=0``; integer images are rounded the same way after bilinear interpolation.
"""

from __future__ import annotations

import numba
import numpy as np

from synthgen.kernels import _validate
from synthgen.kernels._threading import parallel_section


@numba.njit(cache=True, nogil=True)
def nearest_index(p, n):
    """Index of position ``p`` rounded half up (``floor(p + 0.5)``), clamped to [0, n - 1].

    Exact in the type of ``p``: for p > 0, ``p - floor(p)`` is exact (Sterbenz), whereas ``p + 0.5``
    may round. Below zero the result is clamped to 0 either way. ``p`` is first clamped to [-1, n],
    which changes no result and keeps the integer conversion in range for any finite ``p``.
    """
    q = min(max(p, -1.0), n)
    whole = np.floor(q)
    k = int(whole) + (q - whole >= 0.5)
    return min(max(k, 0), n - 1)


@numba.njit(cache=True, nogil=True)
def nearest_position32(p, n):
    """:func:`nearest_index` of a float32 position as a float32 (a whole number), for ``n <= 2**24``.

    All in float32, so that loops run in SIMD lanes: float -> int64 conversions and int64 compares do
    not vectorise on CPUs without AVX-512. Convert once, or form a flat index in float32 while it stays
    below 2**24.
    """
    q = min(max(p, np.float32(-1.0)), np.float32(n))
    whole = np.floor(q)
    k = whole + (np.float32(1.0) if q - whole >= np.float32(0.5) else np.float32(0.0))
    return min(max(k, np.float32(0.0)), np.float32(n - 1))


@numba.njit(cache=True, nogil=True)
def nearest_index32(p, n):
    """:func:`nearest_position32` as an int32."""
    return np.int32(nearest_position32(p, n))


@numba.njit(cache=True, nogil=True)
def _warp_labels_one(labels, field, out):
    h, w = labels.shape
    for y in range(h):
        for x in range(w):
            r = nearest_index(field[0, y, x] + np.float32(y), h)
            c = nearest_index(field[1, y, x] + np.float32(x), w)
            out[y, x] = labels[r, c]


@numba.njit(cache=True, nogil=True, parallel=True)
def _warp_labels_batch(labels, field, out):
    for n in numba.prange(labels.shape[0]):
        _warp_labels_one(labels[n], field[n], out[n])


@numba.njit(cache=True, nogil=True)
def _warp_image_one(image, field, out, round_result):
    h, w = image.shape
    for y in range(h):
        for x in range(w):
            sy = min(max(np.float64(field[0, y, x] + np.float32(y)), 0.0), h - 1.0)
            sx = min(max(np.float64(field[1, y, x] + np.float32(x)), 0.0), w - 1.0)
            r0 = int(sy)
            c0 = int(sx)
            wy = sy - r0
            wx = sx - c0
            r1 = min(r0 + 1, h - 1)
            c1 = min(c0 + 1, w - 1)
            top = (1.0 - wx) * np.float64(image[r0, c0]) + wx * np.float64(image[r0, c1])
            bottom = (1.0 - wx) * np.float64(image[r1, c0]) + wx * np.float64(image[r1, c1])
            value = (1.0 - wy) * top + wy * bottom
            out[y, x] = np.floor(value + 0.5) if round_result else value


@numba.njit(cache=True, nogil=True, parallel=True)
def _warp_image_batch(image, field, out, round_result):
    for n in numba.prange(image.shape[0]):
        _warp_image_one(image[n], field[n], out[n], round_result)


def warp_labels(labels: np.ndarray, field: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """Resample integer ``labels`` (H, W) or (N, H, W) through ``field`` (2, H, W) or (N, 2, H, W).

    Nearest neighbour: the result has the input's dtype and only values the input has. A batch runs
    in parallel over samples.
    """
    batch, single = _validate.label_batch(labels)
    fields = _validate.field_batch(field, batch, single)
    result = _validate.out_array(out, batch, single)
    if single:
        _warp_labels_one(batch[0], fields[0], result[0])
    elif len(batch):
        with parallel_section():
            _warp_labels_batch(batch, fields, result)
    return result[0] if single else result


def warp_image(image: np.ndarray, field: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """Resample ``image`` (H, W) or (N, H, W) through ``field`` with bilinear interpolation.

    Float images keep their dtype (float32 or float64, computed in float64); integer images are
    rounded half up and keep their dtype, and never leave the range of their four source pixels.
    """
    batch, single = _validate.image_batch(image)
    fields = _validate.field_batch(field, batch, single)
    result = _validate.out_array(out, batch, single)
    round_result = batch.dtype.kind in "iu"
    if single:
        _warp_image_one(batch[0], fields[0], result[0], round_result)
    elif len(batch):
        with parallel_section():
            _warp_image_batch(batch, fields, result, round_result)
    return result[0] if single else result
