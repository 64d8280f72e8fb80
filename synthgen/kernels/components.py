"""Connected components of label maps: labelling, counting, keeping the largest, filling holes.

Stable API (the plausibility gate uses it): :func:`connected_components`, :func:`count_components`,
:func:`largest_component` and :func:`fill_holes`. Each takes one map (H, W) or a batch (N, H, W); a
batch runs in parallel over samples. Components are numbered 1..n in raster order of their first
pixel, as ``scipy.ndimage.label`` numbers them. Connectivity is 4 (edges) or 8 (edges and corners).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from synthgen.errors import KernelInputError
from synthgen.kernels import _validate
from synthgen.kernels._threading import parallel_section


@numba.njit(cache=True, nogil=True)
def _root(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@numba.njit(cache=True, nogil=True)
def _join(parent, best, other):
    """Union two provisional labels (given ``best`` is a root); the smaller root survives."""
    r = _root(parent, other)
    if best == 0:
        return r
    if r < best:
        parent[best] = r
        return r
    if r > best:
        parent[r] = best
    return best


@numba.njit(cache=True, nogil=True)
def label_class(labels, value, invert, eight, out):
    """Label the pixels whose ``(label == value) != invert`` into ``out`` (int32); return their count
    of components. ``invert=True`` with ``value=0`` labels the non-zero pixels of a mask."""
    h, w = labels.shape
    parent = np.empty(h * w + 1, dtype=np.int32)
    count = 0
    for y in range(h):
        for x in range(w):
            if (labels[y, x] == value) == invert:
                out[y, x] = 0
                continue
            # the earlier neighbours in the set, read from ``out`` (0: not in it). A pixel takes one's
            # provisional label and joins the others that may not be joined yet: with 8-connectivity
            # the one above is joined with every other (they are its neighbours too) and the left one
            # with the upper left, so at most two remain; with 4-connectivity, left and above.
            left = out[y, x - 1] if x > 0 else 0
            up = out[y - 1, x] if y > 0 else 0
            if eight:
                if up:
                    out[y, x] = up
                    continue
                first = left if left else (out[y - 1, x - 1] if y > 0 and x > 0 else 0)
                other = out[y - 1, x + 1] if y > 0 and x + 1 < w else 0
            else:
                first, other = (up, left) if up else (left, 0)
            if first == 0:
                first, other = other, 0
            if first == 0:
                count += 1
                parent[count] = count
                out[y, x] = count
            elif other == 0:
                out[y, x] = first
            else:
                out[y, x] = _join(parent, _root(parent, first), other)
    final = np.zeros(count + 1, dtype=np.int32)
    n = 0
    for k in range(1, count + 1):  # roots are each component's smallest provisional label
        r = _root(parent, k)
        if r == k:
            n += 1
            final[k] = n
        else:
            final[k] = final[r]
    for y in range(h):
        for x in range(w):
            out[y, x] = final[out[y, x]]
    return n


@numba.njit(cache=True, nogil=True)
def _sizes(parts, count):
    sizes = np.zeros(count + 1, dtype=np.int64)
    for y in range(parts.shape[0]):
        for x in range(parts.shape[1]):
            sizes[parts[y, x]] += 1
    return sizes


@numba.njit(cache=True, nogil=True, parallel=True)
def _label_batch(masks, zero, eight, out, counts):
    for n in numba.prange(masks.shape[0]):
        counts[n] = label_class(masks[n], zero, True, eight, out[n])


@numba.njit(cache=True, nogil=True)
def _count_one(labels, value, eight):
    return label_class(labels, value, False, eight, np.empty(labels.shape, dtype=np.int32))


@numba.njit(cache=True, nogil=True, parallel=True)
def _count_batch(labels, value, eight, counts):
    for n in numba.prange(labels.shape[0]):
        counts[n] = _count_one(labels[n], value, eight)


@numba.njit(cache=True, nogil=True)
def _largest_one(labels, value, eight, offset, n_values, out):
    h, w = labels.shape
    parts = np.empty((h, w), dtype=np.int32)
    count = label_class(labels, value, False, eight, parts)
    out[:] = labels
    if count <= 1:
        return
    sizes = _sizes(parts, count)
    sizes[0] = -1
    keep = np.argmax(sizes)  # the first of the largest
    votes = np.zeros((count + 1, n_values), dtype=np.int64)
    near = np.empty(4, dtype=np.int32)
    for y in range(h):  # each boundary pixel votes once for every removed part it touches
        for x in range(w):
            if parts[y, x]:
                continue
            near[0] = parts[y - 1, x] if y > 0 else 0
            near[1] = parts[y + 1, x] if y + 1 < h else 0
            near[2] = parts[y, x - 1] if x > 0 else 0
            near[3] = parts[y, x + 1] if x + 1 < w else 0
            v = np.int64(labels[y, x]) - offset
            for a in range(4):
                p = near[a]
                seen = p == 0 or p == keep
                for b in range(a):
                    seen |= near[b] == p
                if not seen:
                    votes[p, v] += 1
    fill = np.empty(count + 1, dtype=labels.dtype)
    for p in range(1, count + 1):
        fill[p] = np.argmax(votes[p]) + offset  # the smallest of the most common values
    for y in range(h):
        for x in range(w):
            p = parts[y, x]
            if p and p != keep:
                out[y, x] = fill[p]


@numba.njit(cache=True, nogil=True, parallel=True)
def _largest_batch(labels, value, eight, offset, n_values, out):
    for n in numba.prange(labels.shape[0]):
        _largest_one(labels[n], value, eight, offset, n_values, out[n])


@numba.njit(cache=True, nogil=True)
def _fill_one(labels, value, max_area, out):
    h, w = labels.shape
    parts = np.empty((h, w), dtype=np.int32)
    count = label_class(labels, value, True, False, parts)
    sizes = _sizes(parts, count)
    for y in range(h):  # regions that reach the border are not holes
        sizes[parts[y, 0]] = -1
        sizes[parts[y, w - 1]] = -1
    for x in range(w):
        sizes[parts[0, x]] = -1
        sizes[parts[h - 1, x]] = -1
    for y in range(h):
        for x in range(w):
            s = sizes[parts[y, x]]
            out[y, x] = value if parts[y, x] and s >= 0 and (max_area < 0 or s <= max_area) else labels[y, x]


@numba.njit(cache=True, nogil=True, parallel=True)
def _fill_batch(labels, value, max_area, out):
    for n in numba.prange(labels.shape[0]):
        _fill_one(labels[n], value, max_area, out[n])


def _class_value(batch: np.ndarray, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise KernelInputError(f"Expected an integer class value. Got {value!r} instead.")
    if batch.dtype.kind in "iu" and not np.iinfo(batch.dtype).min <= int(value) <= np.iinfo(batch.dtype).max:
        raise KernelInputError(f"Expected a class value that fits {batch.dtype}. Got {value} instead.")
    return batch.dtype.type(value)


def connected_components(mask: np.ndarray, connectivity: int = 4) -> tuple[np.ndarray, Any]:
    """Label the non-zero pixels of ``mask``: (int32 components, count) or, for a batch, counts (N,)."""
    batch, single = _validate.label_batch(mask)
    eight = _validate.parse_connectivity(connectivity) == 8
    out = np.empty(batch.shape, dtype=np.int32)
    counts = np.zeros(len(batch), dtype=np.int64)
    if single:
        counts[0] = label_class(batch[0], batch.dtype.type(0), True, eight, out[0])
        return out[0], int(counts[0])
    if len(batch):
        with parallel_section():
            _label_batch(batch, batch.dtype.type(0), eight, out, counts)
    return out, counts


def count_components(labels: np.ndarray, value: int, connectivity: int = 4) -> Any:
    """How many connected components class ``value`` has: an int, or (N,) int64 for a batch."""
    batch, single = _validate.label_batch(labels)
    eight = _validate.parse_connectivity(connectivity) == 8
    value = _class_value(batch, value)
    if single:
        return int(_count_one(batch[0], value, eight))
    counts = np.zeros(len(batch), dtype=np.int64)
    if len(batch):
        with parallel_section():
            _count_batch(batch, value, eight, counts)
    return counts


def largest_component(
    labels: np.ndarray, value: int, connectivity: int = 4, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Keep only the largest connected component of class ``value`` (the first in raster order on ties).

    Every other component of the class takes the label most common on its outer 4-neighbour boundary
    (the smallest on ties): a stray island becomes what surrounds it, never a new value.
    """
    batch, single = _validate.label_batch(labels)
    eight = _validate.parse_connectivity(connectivity) == 8
    result = _validate.out_array(out, batch, single)
    if len(batch):
        offset = int(batch.min())
        n_values = int(batch.max()) - offset + 1
        if n_values > 65536:
            raise KernelInputError(f"Expected label values spanning at most 65536. Got a span of {n_values}.")
        value = _class_value(batch, value)
        if single:
            _largest_one(batch[0], value, eight, offset, n_values, result[0])
        else:
            with parallel_section():
                _largest_batch(batch, value, eight, offset, n_values, result)
    return result[0] if single else result


def fill_holes(
    labels: np.ndarray, value: int, max_area: int | None = None, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Give class ``value`` to every region it encloses (at most ``max_area`` pixels, if given).

    A hole is a 4-connected region of other labels that does not reach the image border, as in
    ``scipy.ndimage.binary_fill_holes``. Note that a cavity inside a wall is a hole of the wall.
    """
    batch, single = _validate.label_batch(labels)
    limit = -1 if max_area is None else _validate.parse_count(max_area, "max_area")
    result = _validate.out_array(out, batch, single)
    if len(batch):
        value = _class_value(batch, value)
        if single:
            _fill_one(batch[0], value, limit, result[0])
        else:
            with parallel_section():
                _fill_batch(batch, value, limit, result)
    return result[0] if single else result
