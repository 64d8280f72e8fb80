"""Slow NumPy/SciPy references for every Numba kernel: the tests compare the kernels against these.

Each reference computes the same mathematical result by an independent route (vectorised NumPy, or
``scipy.ndimage``), one map at a time. Where the result depends on float rounding (the displacement
field), the reference performs the same float32 operations in the same order, so that nearest
neighbour results agree exactly; the rounding convention everywhere is half up, as in
``scipy.ndimage.map_coordinates(order=0)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from synthgen.kernels.affine import AffineParams
from synthgen.kernels.fields import _GOLDEN, _MIX1, _MIX2, FIELD_STEP, grid

_F = np.float32


def _mix64(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def control_values(seed: int, n_control: tuple[int, int], max_displacement: float) -> np.ndarray:
    """The (2, ncy, ncx) float32 control displacements of ``seed``: SplitMix64 counter hashes."""
    ncy, ncx = n_control
    key = _mix64(np.array([seed], dtype=np.uint64))
    counter = np.arange(1, 2 * ncy * ncx + 1, dtype=np.uint64)
    bits = _mix64(key + counter * _GOLDEN) >> np.uint64(40)
    u = bits.astype(_F) * _F(2.0**-24)
    return ((_F(2.0) * u - _F(1.0)) * _F(max_displacement)).reshape(2, ncy, ncx)


def midres_field(
    seed: int, shape: tuple[int, int], spacing: float, max_displacement: float, matrix: np.ndarray
) -> np.ndarray:
    """The (2, gh, gw) mid-resolution field: B-spline taps in order, then the affine displacement."""
    g = grid(shape, spacing)
    control = control_values(seed, g.n_control, max_displacement)
    cols = _F(0.0) + g.wx[None, None, :, 0] * control[:, :, g.kx0]
    for b in range(1, 4):
        cols = cols + g.wx[None, None, :, b] * control[:, :, g.kx0 + b]
    mid = _F(0.0) + g.wy[None, :, 0, None] * cols[:, g.ky0, :]
    for a in range(1, 4):
        mid = mid + g.wy[None, :, a, None] * cols[:, g.ky0 + a, :]
    y = (np.arange(len(g.ky0)) * FIELD_STEP).astype(np.float64)[:, None]
    x = (np.arange(len(g.kx0)) * FIELD_STEP).astype(np.float64)[None, :]
    src_rows = matrix[0, 0] * y + matrix[0, 1] * x + matrix[0, 2]
    src_cols = matrix[1, 0] * y + matrix[1, 1] * x + matrix[1, 2]
    return np.stack([mid[0] + (src_rows - y).astype(_F), mid[1] + (src_cols - x).astype(_F)])


def deformation_field(
    seed: int,
    shape: tuple[int, int],
    spacing: float,
    max_displacement: float,
    affine: AffineParams | None = None,
) -> np.ndarray:
    """(2, H, W) float32 field: the mid-resolution field upsampled bilinearly, rows first."""
    mid = midres_field(
        seed, shape, float(spacing), float(max_displacement), (affine or AffineParams()).matrix(shape)
    )
    y = np.arange(shape[0])
    x = np.arange(shape[1])
    i, j = y // FIELD_STEP, x // FIELD_STEP
    fy = ((y - i * FIELD_STEP).astype(_F) * _F(1.0 / FIELD_STEP))[:, None]
    fx = ((x - j * FIELD_STEP).astype(_F) * _F(1.0 / FIELD_STEP))[None, :]
    gy, gx = _F(1.0) - fy, _F(1.0) - fx
    ii, jj = i[:, None], j[None, :]
    left = gy * mid[:, ii, jj] + fy * mid[:, ii + 1, jj]
    right = gy * mid[:, ii, jj + 1] + fy * mid[:, ii + 1, jj + 1]
    return gx * left + fx * right


def _coordinates(field: np.ndarray) -> np.ndarray:
    h, w = field.shape[1:]
    rows = field[0] + np.arange(h, dtype=_F)[:, None]
    cols = field[1] + np.arange(w, dtype=_F)[None, :]
    return np.stack([rows, cols]).astype(np.float64)


def warp_labels(labels: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Nearest neighbour through ``field`` with ``map_coordinates(order=0, mode="nearest")``."""
    return ndi.map_coordinates(labels, _coordinates(field), order=0, mode="nearest", output=labels.dtype)


def warp_image(image: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Bilinear through ``field`` (``order=1``, edges clamped); integers rounded half up."""
    value = ndi.map_coordinates(image.astype(np.float64), _coordinates(field), order=1, mode="nearest")
    if image.dtype.kind in "iu":
        value = np.floor(value + 0.5)
    return value.astype(image.dtype)


def deform_labels(
    labels: np.ndarray, seed: int, spacing: float, max_displacement: float, affine: AffineParams | None = None
) -> np.ndarray:
    return warp_labels(labels, deformation_field(seed, labels.shape, spacing, max_displacement, affine))


def disk(radius: int) -> np.ndarray:
    """The structuring element {(dy, dx): dy**2 + dx**2 <= radius**2}."""
    d = np.arange(-radius, radius + 1)
    return d[:, None] ** 2 + d[None, :] ** 2 <= radius**2


def _rank(labels: np.ndarray, priority: Sequence[int]) -> np.ndarray:
    order = {int(v): r for r, v in enumerate(priority)}
    return np.vectorize(lambda v: order[int(v)], otypes=[np.int64])(labels)


def dilate_class(labels: np.ndarray, value: int, radius: int, priority: Sequence[int]) -> np.ndarray:
    """Grow ``value`` by a disk of ``radius`` into pixels of classes ranked after it in ``priority``."""
    grown = ndi.binary_dilation(labels == value, structure=disk(radius)) if radius else labels == value
    weaker = _rank(labels, priority) > list(priority).index(value)
    return np.where(grown & weaker, labels.dtype.type(value), labels)


def erode_class(labels: np.ndarray, value: int, radius: int, priority: Sequence[int]) -> np.ndarray:
    """Shrink ``value`` by a disk of ``radius``; a freed pixel takes the strongest class within reach."""
    mask = labels == value
    if radius == 0 or not mask.any() or mask.all():
        return labels.copy()
    freed = mask & ~ndi.binary_erosion(mask, structure=disk(radius), border_value=1)
    out = labels.copy()
    for k in priority:
        if k == value:
            continue
        take = freed & ndi.binary_dilation(labels == k, structure=disk(radius))
        out[take] = k
        freed &= ~take
    return out


def _structure(connectivity: int) -> np.ndarray:
    return ndi.generate_binary_structure(2, 1 if connectivity == 4 else 2)


def connected_components(mask: np.ndarray, connectivity: int = 4) -> tuple[np.ndarray, int]:
    """Components numbered 1..n in raster order of their first pixel, as ``scipy.ndimage.label``."""
    components, count = ndi.label(mask != 0, structure=_structure(connectivity))
    return components.astype(np.int32), int(count)


def largest_component(labels: np.ndarray, value: int, connectivity: int = 4) -> np.ndarray:
    """Keep the largest component of ``value`` (the first in raster order on ties); every other one
    takes the label most common on its outer (4-neighbour) boundary, the smallest on ties."""
    components, count = connected_components(labels == value, connectivity)
    if count <= 1:
        return labels.copy()
    sizes = np.bincount(components.ravel())[1:]
    keep = int(np.argmax(sizes)) + 1
    out = labels.copy()
    for k in range(1, count + 1):
        if k == keep:
            continue
        part = components == k
        boundary = ndi.binary_dilation(part, structure=_structure(4)) & ~part
        values, counts = np.unique(labels[boundary], return_counts=True)
        out[part] = values[np.argmax(counts)]
    return out


def fill_holes(labels: np.ndarray, value: int, max_area: int | None = None) -> np.ndarray:
    """Give ``value`` to every region enclosed by it (4-connected, not touching the image border) of
    at most ``max_area`` pixels (all of them when None)."""
    mask = labels == value
    holes = ndi.binary_fill_holes(mask) & ~mask
    if max_area is not None:
        parts, _ = ndi.label(holes, structure=_structure(4))
        sizes = np.bincount(parts.ravel())
        holes &= sizes[parts] <= max_area
    return np.where(holes, labels.dtype.type(value), labels)


def class_stats(index: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Areas and 4-neighbour contacts of one class-index map, outside as class 0 (vectorised NumPy)."""
    areas = np.bincount(index.ravel(), minlength=num_classes).astype(np.int64)
    padded = np.pad(index, 1)
    contacts = np.zeros((num_classes, num_classes), np.int64)
    for a, b in ((padded[:, 1:], padded[:, :-1]), (padded[1:, :], padded[:-1, :])):
        edge = a != b
        np.add.at(contacts, (a[edge], b[edge]), 1)
        np.add.at(contacts, (b[edge], a[edge]), 1)
    return areas, contacts
