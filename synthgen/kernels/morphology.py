"""Class-aware morphology on label maps: grow or shrink ONE class, a priority order deciding contacts.

``priority`` lists label values from strongest to weakest and must list every value present in the
map (a value it does not list is an error, never guessed). Dilation lets the class take over pixels
of weaker classes within a disk of ``radius`` (``dy**2 + dx**2 <= radius**2``) and never touches
stronger ones, unlike OpenCV's ``dilate`` on a multi-class map, where the largest value always wins.
Erosion frees the class's pixels that have another class within the disk (the image border does not
erode) and gives each freed pixel the strongest class within its disk. Both accept one map (H, W) or
a batch (N, H, W), which runs in parallel over samples. :func:`distance_to_mask` is the Euclidean
distance transform (SciPy's ``distance_transform_edt``) as a Numba function, for other kernels to call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numba
import numpy as np

from synthgen.errors import LabelValueError
from synthgen.kernels import _validate
from synthgen.kernels._threading import parallel_section


@numba.njit(cache=True, nogil=True)
def reach(labels, value, invert, radius, half, out):
    """``out[y, x] = 1`` where a pixel whose ``(label == value) != invert`` lies within the disk of
    ``radius`` around (y, x); ``half[d]`` is the half-width of the disk ``d`` rows off its centre.

    Rows first: the distance along the row to the nearest such pixel (capped at radius + 1), then a
    check over the rows of the disk.
    """
    h, w = labels.shape
    far = radius + 1
    along = np.empty((h, w), dtype=np.int32)
    hit = np.empty(w, dtype=np.bool_)
    for y in range(h):
        row = along[y]
        for x in range(w):
            hit[x] = (labels[y, x] == value) != invert
            row[x] = 0 if hit[x] else far
        for dx in range(1, min(radius, w - 1) + 1):
            for x in range(w - dx):
                row[x] = min(row[x], dx if hit[x + dx] else far)
            for x in range(dx, w):
                row[x] = min(row[x], dx if hit[x - dx] else far)
    for y in range(h):
        o = out[y]
        for x in range(w):
            o[x] = 0
        for yy in range(max(y - radius, 0), min(y + radius + 1, h)):
            limit = half[abs(yy - y)]
            row = along[yy]
            for x in range(w):
                o[x] |= row[x] <= limit


@numba.njit(cache=True, nogil=True)
def _rank(labels, y, x, table, offset):
    return table[np.int64(labels[y, x]) - offset]


@numba.njit(cache=True, nogil=True)
def _dilate_one(labels, value, radius, half, table, offset, out):
    h, w = labels.shape
    grown = np.empty((h, w), dtype=np.uint8)
    reach(labels, value, False, radius, half, grown)
    own = table[np.int64(value) - offset]
    unlisted = False
    for y in range(h):
        for x in range(w):
            rank = _rank(labels, y, x, table, offset)
            unlisted |= rank < 0
            out[y, x] = value if grown[y, x] and rank > own else labels[y, x]
    return unlisted


@numba.njit(cache=True, nogil=True)
def _erode_one(labels, value, radius, half, table, offset, order, out):
    h, w = labels.shape
    freed = np.empty((h, w), dtype=np.uint8)
    reach(labels, value, True, radius, half, freed)  # near another class
    unlisted = False
    left = 0
    for y in range(h):
        for x in range(w):
            unlisted |= _rank(labels, y, x, table, offset) < 0
            freed[y, x] &= labels[y, x] == value
            left += freed[y, x]
            out[y, x] = labels[y, x]
    near = np.empty((h, w), dtype=np.uint8)
    for k in order:  # strongest first: a freed pixel goes to the first class that reaches it
        if k == value or left == 0:
            continue
        reach(labels, k, False, radius, half, near)
        for y in range(h):
            for x in range(w):
                if freed[y, x] and near[y, x]:
                    out[y, x] = k
                    freed[y, x] = 0
                    left -= 1
    return unlisted


@numba.njit(cache=True, nogil=True, parallel=True)
def _dilate_batch(labels, value, radius, half, table, offset, out, unlisted):
    for n in numba.prange(labels.shape[0]):
        unlisted[n] = _dilate_one(labels[n], value, radius, half, table, offset, out[n])


@numba.njit(cache=True, nogil=True, parallel=True)
def _erode_batch(labels, value, radius, half, table, offset, order, out, unlisted):
    for n in numba.prange(labels.shape[0]):
        unlisted[n] = _erode_one(labels[n], value, radius, half, table, offset, order, out[n])


def disk_half_widths(radius: int) -> np.ndarray:
    """``half[d] = floor(sqrt(radius**2 - d**2))``: the disk's half-width ``d`` rows from its centre."""
    return np.array([math.isqrt(radius * radius - d * d) for d in range(radius + 1)], dtype=np.int64)


def _apply(one, batched, labels, value, radius, priority, out, *, with_order: bool = False):
    """Check the arguments, then run the one-map kernel ``one`` on a map or ``batched`` on a batch."""
    batch, single = _validate.label_batch(labels)
    radius = _validate.parse_radius(radius)
    table, offset = _validate.rank_table(priority, batch, value)
    info = np.iinfo(batch.dtype) if batch.dtype.kind in "iu" else None
    if info is not None and not info.min <= int(value) <= info.max:
        raise LabelValueError(f"Expected a class value that fits {batch.dtype}. Got {value} instead.")
    args = (batch.dtype.type(value), radius, disk_half_widths(radius), table, offset)
    if with_order:  # erosion hands freed pixels to the strongest class in reach
        args += (np.array([int(v) for v in priority], dtype=np.int64),)
    result = _validate.out_array(out, batch, single)
    unlisted = np.zeros(len(batch), dtype=np.bool_)
    if single:
        unlisted[0] = one(batch[0], *args, result[0])
    elif len(batch):
        with parallel_section():
            batched(batch, *args, result, unlisted)
    if unlisted.any():
        raise _validate.unlisted_error(priority, batch)
    return result[0] if single else result


def dilate_class(
    labels: np.ndarray, value: int, radius: int, priority: Sequence[int], *, out: np.ndarray | None = None
) -> np.ndarray:
    """Grow class ``value`` by ``radius`` pixels into classes ranked after it in ``priority``."""
    return _apply(_dilate_one, _dilate_batch, labels, value, radius, priority, out)


def erode_class(
    labels: np.ndarray, value: int, radius: int, priority: Sequence[int], *, out: np.ndarray | None = None
) -> np.ndarray:
    """Shrink class ``value`` by ``radius`` pixels; each freed pixel takes the strongest class in reach."""
    return _apply(_erode_one, _erode_batch, labels, value, radius, priority, out, with_order=True)


@numba.njit(cache=True, nogil=True)
def distance_to_mask(mask, sy, sx, out):
    """``out[y, x]``: the Euclidean distance from (y, x) to the nearest True pixel of ``mask``, rows
    scaled by ``sy`` and columns by ``sx`` (inf where ``mask`` is empty); ``mask`` pixels get 0.

    Equal to ``scipy.ndimage.distance_transform_edt(~mask, sampling=(sy, sx))``: the nearest pixel is
    exact, found in integers (columns first, then a lower envelope of parabolas along each row,
    Felzenszwalb and Huttenlocher), and its distance is formed as SciPy forms it,
    ``sqrt((dy * sy) ** 2 + (dx * sx) ** 2)``. Where two pixels are equally near, either may be used;
    their distances agree exactly when ``sy`` and ``sx`` are equal powers of two.
    """
    h, w = mask.shape
    far = np.int64(h + w + 1)
    dy = np.empty((h, w), dtype=np.int64)  # rows to the nearest mask pixel of the same column
    for x in range(w):
        last = -far
        for y in range(h):
            if mask[y, x]:
                last = y
            dy[y, x] = y - last
        last = far + h
        for y in range(h - 1, -1, -1):
            if mask[y, x]:
                last = y
            dy[y, x] = min(dy[y, x], last - y)
    # the order of (dy * sy) ** 2 + (dx * sx) ** 2, scaled by 1 / (sy * sx) ** 2 (whole numbers where
    # 1 / sy and 1 / sx are): a lower envelope of the parabolas f[p] + along * (x - p) ** 2
    inv_y, inv_x = 1.0 / sy, 1.0 / sx
    across, along = inv_x * inv_x, inv_y * inv_y
    v = np.empty(w, dtype=np.int64)  # the columns of the envelope's parabolas
    z = np.empty(w + 1, dtype=np.float64)  # where each takes over
    f = np.empty(w, dtype=np.float64)
    for y in range(h):
        k = -1
        for x in range(w):
            if dy[y, x] >= far:
                continue
            f[x] = across * np.float64(dy[y, x] * dy[y, x])
            if k >= 0:
                s = 0.0
                while k >= 0:
                    p = v[k]
                    s = ((f[x] + along * x * x) - (f[p] + along * p * p)) / (2.0 * along * (x - p))
                    if s > z[k]:
                        break
                    k -= 1
                if k < 0:
                    s = -np.inf
            else:
                s = -np.inf
            k += 1
            v[k] = x
            z[k] = s
            z[k + 1] = np.inf
        if k < 0:
            for x in range(w):
                out[y, x] = np.inf
            continue
        j = 0
        for x in range(w):
            while z[j + 1] < x:
                j += 1
            p = v[j]
            ry = np.float64(dy[y, p]) * sy
            rx = np.float64(x - p) * sx
            out[y, x] = np.sqrt(ry * ry + rx * rx)
