"""Per-map class statistics: pixel areas and 4-neighbour contacts (for the plausibility gate), and
the per-class Dice of a batch of predictions (:func:`batch_dice`, for training logs).

:func:`class_stats` takes class indices 0..K-1 (one map (H, W) or a batch (N, H, W)) and returns the
area of each class and the (K, K) counts of pixel edges between classes, each edge counted once in
each direction; pixels outside the map count as class 0 (background), so a map's border is an edge
to background. Given ``components`` (class indices), it also counts the 8-connected components of
each of those classes in the same call (what ``count_components(index, k, connectivity=8)`` gives for
class k). A batch runs in parallel over maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from synthgen.errors import KernelInputError
from synthgen.kernels import _validate
from synthgen.kernels._threading import parallel_section
from synthgen.kernels.components import _join, _root


@numba.njit(cache=True, nogil=True)
def _touch(contacts, a, b):
    if a != b:
        contacts[a, b] += 1
        contacts[b, a] += 1


@numba.njit(cache=True, nogil=True)
def _foreground_box(index):
    """Rows and columns [r0, r1) x [c0, c1) of the non-zero pixels of ``index`` (r0 == r1 when none)."""
    h, w = index.shape
    r0, r1, c0, c1 = h, 0, w, 0
    for i in range(h):
        first = -1
        for j in range(w):
            if index[i, j] != 0:
                first = j
                break
        if first < 0:
            continue
        last = w - 1
        while index[i, last] == 0:
            last -= 1
        r0, r1 = min(r0, i), i + 1
        c0, c1 = min(c0, first), max(c1, last + 1)
    if r1 == 0:
        return 0, 0, 0, 0
    return r0, r1, c0, c1


@numba.njit(cache=True, nogil=True)
def _stats_one(index, areas, contacts):
    """Areas and contacts, counted over the box of the foreground: outside it every pixel is background,
    whose edges with background count nothing (an edge of the box is one to background, as the map's
    border is)."""
    h, w = index.shape
    r0, r1, c0, c1 = _foreground_box(index)
    areas[0] += h * w - (r1 - r0) * (c1 - c0)
    crop = index[r0:r1, c0:c1]
    h, w = crop.shape
    for i in range(h):
        for j in range(w):
            a = crop[i, j]
            areas[a] += 1
            if i == 0:
                _touch(contacts, a, 0)
            if j == 0:
                _touch(contacts, a, 0)
            _touch(contacts, a, crop[i, j + 1] if j + 1 < w else 0)
            _touch(contacts, a, crop[i + 1, j] if i + 1 < h else 0)


@numba.njit(cache=True, nogil=True)
def _components_one(index, counted, components):
    """``components[k]``: the 8-connected components of class k for each class with ``counted[k]``,
    all of them labelled in one raster pass (union-find over provisional labels; a pixel joins its
    earlier neighbours of its class)."""
    if counted[0]:  # background's components need the whole map
        r0, r1, c0, c1 = 0, index.shape[0], 0, index.shape[1]
    else:  # the others lie in the foreground's box
        r0, r1, c0, c1 = _foreground_box(index)
    _components_crop(index[r0:r1, c0:c1], counted, components)


@numba.njit(cache=True, nogil=True)
def _components_crop(index, counted, components):
    """:func:`_components_one` over a whole (cropped) map. Each pixel takes the provisional label of one
    earlier neighbour of its class and joins at most two: the neighbour above is already joined with
    the other earlier ones (they are its neighbours too), and the left one with the upper left."""
    h, w = index.shape
    parts = np.empty((h, w), dtype=np.int32)  # read only where a neighbour of the same class is
    parent = np.empty(h * w + 1, dtype=np.int32)
    owner = np.empty(h * w + 1, dtype=np.uint8)  # the class of each provisional label
    count = 0
    for y in range(h):
        for x in range(w):
            a = index[y, x]
            if not counted[a]:
                continue
            up_right = y > 0 and x + 1 < w and index[y - 1, x + 1] == a
            if y > 0 and index[y - 1, x] == a:
                parts[y, x] = parts[y - 1, x]
                continue
            if x > 0 and index[y, x - 1] == a:
                best = parts[y, x - 1]
            elif y > 0 and x > 0 and index[y - 1, x - 1] == a:
                best = parts[y - 1, x - 1]
            elif up_right:
                parts[y, x] = parts[y - 1, x + 1]
                continue
            else:
                count += 1
                parent[count] = count
                owner[count] = a
                parts[y, x] = count
                continue
            if up_right:
                best = _join(parent, _root(parent, best), parts[y - 1, x + 1])
            parts[y, x] = best
    for k in range(1, count + 1):
        if _root(parent, k) == k:
            components[owner[k]] += 1


@numba.njit(cache=True, nogil=True, parallel=True)
def _stats_batch(index, areas, contacts, counted, components):
    for n in numba.prange(index.shape[0]):
        _stats_one(index[n], areas[n], contacts[n])
        if components.shape[0]:
            _components_one(index[n], counted, components[n])


def class_stats(
    index: np.ndarray, num_classes: int, *, components: Sequence[int] | None = None
) -> tuple[np.ndarray, ...]:
    """Areas (K,) and contacts (K, K), int64, of class-index map(s); (N, K) and (N, K, K) for a batch.
    With ``components`` (class indices), also the 8-connected component counts of those classes, (K,)
    or (N, K) (zero for the classes not listed)."""
    batch, single = _validate.label_batch(index)
    if batch.dtype != np.uint8:
        raise KernelInputError(f"Expected uint8 class indices. Got {batch.dtype} instead.")
    if not 1 <= num_classes <= 256:
        raise KernelInputError(f"Expected 1 to 256 classes. Got {num_classes} instead.")
    if batch.size and int(batch.max()) >= num_classes:
        raise KernelInputError(f"Expected class indices below {num_classes}. Got {int(batch.max())}.")
    areas = np.zeros((len(batch), num_classes), np.int64)
    contacts = np.zeros((len(batch), num_classes, num_classes), np.int64)
    counted = np.zeros(num_classes, np.bool_)
    if components is not None:
        listed = np.asarray(components, np.int64).reshape(-1)
        if listed.size and not (0 <= listed.min() and listed.max() < num_classes):
            raise KernelInputError(f"Expected component classes below {num_classes}. Got {listed.tolist()}.")
        counted[listed] = True
    counts = np.zeros((len(batch) if components is not None else 0, num_classes), np.int64)
    if single:
        _stats_one(batch[0], areas[0], contacts[0])
        if components is not None:
            _components_one(batch[0], counted, counts[0])
    elif len(batch):
        with parallel_section():
            _stats_batch(batch, areas, contacts, counted, counts)
    result = (areas, contacts) if components is None else (areas, contacts, counts)
    return tuple(r[0] for r in result) if single else result


def batch_dice(pred: np.ndarray, ref: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, K-1) Dice of classes 1..K-1 for (N, H, W) class-index maps (both empty: 1). Vectorised."""
    n = pred.shape[0]
    out = np.empty((n, num_classes - 1))
    for k in range(1, num_classes):
        p, r = (pred == k).reshape(n, -1), (ref == k).reshape(n, -1)
        inter = np.count_nonzero(p & r, axis=1)
        total = np.count_nonzero(p, axis=1) + np.count_nonzero(r, axis=1)
        out[:, k - 1] = np.where(total > 0, 2.0 * inter / np.maximum(total, 1), 1.0)
    return out


def psnr(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB of ``a`` against ``b`` over values spanning ``data_range``
    (inf where they are equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(data_range**2 / mse)
