"""Per-map class statistics: pixel areas and 4-neighbour contacts (for the plausibility gate), and
the per-class Dice of a batch of predictions (:func:`batch_dice`, for training logs).

:func:`class_stats` takes class indices 0..K-1 (one map (H, W) or a batch (N, H, W)) and returns the
area of each class and the (K, K) counts of pixel edges between classes, each edge counted once in
each direction; pixels outside the map count as class 0 (background), so a map's border is an edge
to background. A batch runs in parallel over maps.
"""

from __future__ import annotations

import numba
import numpy as np

from synthgen.errors import KernelInputError
from synthgen.kernels import _validate
from synthgen.kernels._threading import parallel_section


@numba.njit(cache=True, nogil=True)
def _touch(contacts, a, b):
    if a != b:
        contacts[a, b] += 1
        contacts[b, a] += 1


@numba.njit(cache=True, nogil=True)
def _stats_one(index, areas, contacts):
    h, w = index.shape
    for i in range(h):
        for j in range(w):
            a = index[i, j]
            areas[a] += 1
            if i == 0:
                _touch(contacts, a, 0)
            if j == 0:
                _touch(contacts, a, 0)
            _touch(contacts, a, index[i, j + 1] if j + 1 < w else 0)
            _touch(contacts, a, index[i + 1, j] if i + 1 < h else 0)


@numba.njit(cache=True, nogil=True, parallel=True)
def _stats_batch(index, areas, contacts):
    for n in numba.prange(index.shape[0]):
        _stats_one(index[n], areas[n], contacts[n])


def class_stats(index: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Areas (K,) and contacts (K, K), int64, of class-index map(s); (N, K) and (N, K, K) for a batch."""
    batch, single = _validate.label_batch(index)
    if batch.dtype != np.uint8:
        raise KernelInputError(f"Expected uint8 class indices. Got {batch.dtype} instead.")
    if not 1 <= num_classes <= 256:
        raise KernelInputError(f"Expected 1 to 256 classes. Got {num_classes} instead.")
    if batch.size and int(batch.max()) >= num_classes:
        raise KernelInputError(f"Expected class indices below {num_classes}. Got {int(batch.max())}.")
    areas = np.zeros((len(batch), num_classes), np.int64)
    contacts = np.zeros((len(batch), num_classes, num_classes), np.int64)
    if single:
        _stats_one(batch[0], areas[0], contacts[0])
        return areas[0], contacts[0]
    if len(batch):
        with parallel_section():
            _stats_batch(batch, areas, contacts)
    return areas, contacts


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
