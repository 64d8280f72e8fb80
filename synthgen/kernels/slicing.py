"""Nearest-neighbour slicing of a 3D label volume along arbitrary planes.

A plane is given in voxel index coordinates of a (Z, Y, X) volume: ``center`` is the position the
middle of the output image samples, ``row_step`` and ``col_step`` are the voxel-space steps of one
output row and one output column. Output pixel (r, c) of an (H, W) slice samples

    p = center + (r - (H - 1) / 2) * row_step + (c - (W - 1) / 2) * col_step

rounded half up to the nearest voxel (``floor(p + 0.5)`` per axis). A voxel covers
[k - 0.5, k + 0.5), so positions whose rounded index lies outside the volume take ``fill``: the
convention of ``scipy.ndimage.map_coordinates(order=0, mode="grid-constant")``, which
:func:`slice_plane_reference` uses and the tests compare against. Steps carry the geometry: for
voxel spacing ``s`` (mm per voxel) and a unit direction ``d`` in millimetres, a pixel of ``p`` mm
steps ``d * p / s`` voxels. Single-threaded and ``nogil``: callers parallelise over samples.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from synthgen.errors import KernelInputError


@numba.njit(cache=True, nogil=True)
def _slice_one(volume, center, row_step, col_step, fill, out):
    nz, ny, nx = volume.shape
    h, w = out.shape
    rc = (h - 1) / 2.0
    cc = (w - 1) / 2.0
    for r in range(h):
        dr = r - rc
        for c in range(w):
            dc = c - cc
            z = np.floor(center[0] + dr * row_step[0] + dc * col_step[0] + 0.5)
            y = np.floor(center[1] + dr * row_step[1] + dc * col_step[1] + 0.5)
            x = np.floor(center[2] + dr * row_step[2] + dc * col_step[2] + 0.5)
            if 0.0 <= z < nz and 0.0 <= y < ny and 0.0 <= x < nx:
                out[r, c] = volume[int(z), int(y), int(x)]
            else:
                out[r, c] = fill


@numba.njit(cache=True, nogil=True)
def _slice_many(volume, centers, row_steps, col_steps, fill, out):
    for n in range(out.shape[0]):
        _slice_one(volume, centers[n], row_steps[n], col_steps[n], fill, out[n])


def _volume(volume: Any) -> np.ndarray:
    if not isinstance(volume, np.ndarray):
        raise KernelInputError(
            f"Expected the volume to be a numpy array. Got {type(volume).__name__} instead."
        )
    if volume.ndim != 3 or volume.dtype.kind not in "biu":
        raise KernelInputError(
            f"Expected an integer label volume of shape (Z, Y, X). Got {volume.shape} {volume.dtype} instead."
        )
    return np.ascontiguousarray(volume)


def _vectors(value: Any, n: int, what: str) -> np.ndarray:
    arr = np.asarray(value, np.float64)
    if arr.shape != (n, 3) or not np.all(np.isfinite(arr)):
        raise KernelInputError(
            f"Expected {what} as {n} finite (z, y, x) vectors. Got shape {arr.shape} instead."
        )
    return np.ascontiguousarray(arr)


def _shape(shape: Any) -> tuple[int, int]:
    if len(shape) != 2 or any(int(s) < 1 for s in shape):
        raise KernelInputError(f"Expected an output shape (H, W) of positive sizes. Got {shape!r} instead.")
    return int(shape[0]), int(shape[1])


def slice_planes(
    volume: np.ndarray,
    centers: Any,
    row_steps: Any,
    col_steps: Any,
    shape: tuple[int, int],
    *,
    fill: int = 0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """N slices (N, H, W) of one volume; ``centers``, ``row_steps``, ``col_steps`` are (N, 3)."""
    volume = _volume(volume)
    n = np.asarray(centers).shape[0] if np.ndim(centers) == 2 else -1
    centers = _vectors(centers, n, "the plane centres")
    row_steps = _vectors(row_steps, n, "the row steps")
    col_steps = _vectors(col_steps, n, "the column steps")
    h, w = _shape(shape)
    if out is None:
        out = np.empty((n, h, w), volume.dtype)
    elif out.shape != (n, h, w) or out.dtype != volume.dtype or not out.flags.c_contiguous:
        raise KernelInputError(
            f"Expected out as a C-contiguous {(n, h, w)} {volume.dtype} array. Got {out.shape} {out.dtype} instead."
        )
    if n:
        _slice_many(volume, centers, row_steps, col_steps, volume.dtype.type(fill), out)
    return out


def slice_plane(
    volume: np.ndarray,
    center: Any,
    row_step: Any,
    col_step: Any,
    shape: tuple[int, int],
    *,
    fill: int = 0,
) -> np.ndarray:
    """One (H, W) slice of a (Z, Y, X) label volume through the plane described in the module doc."""
    return slice_planes(volume, [center], [row_step], [col_step], shape, fill=fill)[0]


def slice_plane_reference(
    volume: np.ndarray,
    center: Any,
    row_step: Any,
    col_step: Any,
    shape: tuple[int, int],
    *,
    fill: int = 0,
) -> np.ndarray:
    """The same slice with ``scipy.ndimage.map_coordinates`` (slow; for tests)."""
    from scipy import ndimage

    h, w = _shape(shape)
    center, row_step, col_step = (np.asarray(v, np.float64) for v in (center, row_step, col_step))
    dr = np.arange(h, dtype=np.float64)[:, None] - (h - 1) / 2.0
    dc = np.arange(w, dtype=np.float64)[None, :] - (w - 1) / 2.0
    coords = np.stack([center[a] + dr * row_step[a] + dc * col_step[a] for a in range(3)])
    return ndimage.map_coordinates(volume, coords, order=0, mode="grid-constant", cval=fill)
