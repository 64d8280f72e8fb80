"""The one label resize and the one image resize of synthgen (ingest, label sources, loader, GAN data,
evaluation and the CycleGAN check all call these), each in two geometries, and the centre pad or crop.

- :func:`resize_labels`: nearest neighbour by pixel centres (output pixel ``i`` takes input pixel
  ``floor((i + 0.5) * n_in / n_out)``, torch's ``nearest-exact``), so every output value is an input
  value and no label is ever blended.
- :func:`resize_images`: separable linear interpolation with pixel centres aligned
  (``align_corners=False``) whose triangle filter widens by the scale factor when shrinking (the
  antialiased bilinear filter of Pillow and of torch's ``interpolate(..., antialias=True)``). Weights
  are non-negative and sum to one, so outputs stay within the inputs' range.
- :func:`spacing_labels` and :func:`spacing_images`: the same two resizes to a physical pixel size, as
  MONAI's ``Spacing`` does (ingest's ``--spacing``): output size :func:`spacing_shape`
  (``round((n - 1) * old / new) + 1``), the first pixel centres kept in place, labels nearest, images
  linear without antialiasing, samples beyond the last pixel taking its value.
- :func:`pad_or_crop`: 0-padding or cropping about the centre, as MONAI's ``ResizeWithPadOrCrop``;
  nothing is stretched.

All take one map or image (H, W) or any stack (..., H, W) and work on the last two axes. Pure NumPy:
the weights of each axis form a small (n_out, n_in) matrix, applied as two matrix products; integer
images are rounded and clipped to their dtype's range, the dtype is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from synthgen.errors import KernelInputError


def _check_shape(array: np.ndarray, shape: tuple[int, int], what: str) -> tuple[int, int]:
    if array.ndim < 2:
        raise KernelInputError(
            f"Expected {what} of at least 2 dimensions (..., H, W). Got {array.shape} instead."
        )
    out = (int(shape[0]), int(shape[1]))
    if min(out) < 1 or min(array.shape[-2:]) < 1:
        raise KernelInputError(f"Expected non-empty sizes. Got {array.shape[-2:]} -> {out} instead.")
    return out


@lru_cache(maxsize=64)
def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Input index of each output pixel: ``floor((i + 0.5) * n_in / n_out)`` (read-only)."""
    index = np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.intp), n_in - 1)
    index.setflags(write=False)
    return index


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of label maps (..., H, W) to (..., *shape); dtype kept."""
    labels = np.asarray(labels)
    shape = _check_shape(labels, shape, "label maps")
    if labels.shape[-2:] == shape:
        return labels
    rows, cols = nearest_indices(labels.shape[-2], shape[0]), nearest_indices(labels.shape[-1], shape[1])
    return labels[..., rows[:, None], cols[None, :]]


@lru_cache(maxsize=64)
def linear_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 weights of the antialiased linear filter (rows sum to one; read-only)."""
    scale = n_in / n_out
    support = scale if scale >= 1.0 else 1.0
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    weights = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        centre = scale * (i + 0.5)
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), n_in)
        j = np.arange(lo, hi)
        w = np.maximum(0.0, 1.0 - np.abs((j - centre + 0.5) * inv))
        weights[i, lo:hi] = w / w.sum()
    out = weights.astype(np.float32)
    out.setflags(write=False)
    return out


def resize_images(images: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Antialiased linear resize of images (..., H, W) to (..., *shape).

    The dtype is kept: integer images are rounded and clipped to their dtype's range, float images are
    computed in float32 and cast back.
    """
    images = np.asarray(images)
    shape = _check_shape(images, shape, "images")
    if images.shape[-2:] == shape:
        return images
    x = images.astype(np.float32, copy=False)
    if images.shape[-2] != shape[0]:
        x = np.matmul(linear_weights(images.shape[-2], shape[0]), x)
    if images.shape[-1] != shape[1]:
        x = np.matmul(x, linear_weights(images.shape[-1], shape[1]).T)
    return _cast_back(x, images.dtype)


def _cast_back(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float32 ``x`` in ``dtype``: integers rounded and clipped to the dtype's range."""
    if dtype.kind in "uib":
        info = np.iinfo(dtype) if dtype.kind != "b" else np.iinfo(np.uint8)
        x = np.clip(np.rint(x), info.min, info.max)
    return x.astype(dtype, copy=False)


# -- to a pixel spacing (MONAI Spacing) --------------------------------------------------------------
def spacing_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, int]:
    """(rows, cols) after resampling from ``spacing`` to ``target`` mm: MONAI ``Spacing``'s size, whose
    first and last pixel centres span the same distance as before, ``round((n - 1) * old / new) + 1``."""
    return tuple(  # type: ignore[return-value]
        max(1, int(np.round((n - 1) * s / t + 1.0))) for n, s, t in zip(shape, spacing, target, strict=True)
    )


def _spacing_positions(n_in: int, spacing: float, target: float) -> np.ndarray:
    """Input position of each output pixel centre (first centres aligned), held at the last pixel beyond it."""
    n_out = spacing_shape((n_in,), (spacing,), (target,))[0]
    return np.minimum(np.arange(n_out, dtype=np.float64) * (target / spacing), n_in - 1)


@lru_cache(maxsize=64)
def _spacing_weights(n_in: int, spacing: float, target: float) -> np.ndarray:
    """(n_out, n_in) linear interpolation weights at :func:`_spacing_positions` (non-negative, rows sum to
    1; read-only)."""
    x = _spacing_positions(n_in, spacing, target)
    lo = np.floor(x).astype(np.intp)
    frac = x - lo
    weights = np.zeros((len(x), n_in), np.float64)
    np.add.at(weights, (np.arange(len(x)), lo), 1.0 - frac)
    np.add.at(weights, (np.arange(len(x)), np.minimum(lo + 1, n_in - 1)), frac)
    out = weights.astype(np.float32)
    out.setflags(write=False)
    return out


def spacing_images(images: np.ndarray, spacing: Sequence[float], target: Sequence[float]) -> np.ndarray:
    """Images (..., H, W) resampled from ``spacing`` to ``target`` (row, col) mm as MONAI's ``Spacing``
    does with ``bilinear`` and ``border`` padding; integer images are rounded, the dtype is kept."""
    x = np.matmul(_spacing_weights(images.shape[-2], spacing[0], target[0]), images.astype(np.float32))
    x = np.matmul(x, _spacing_weights(images.shape[-1], spacing[1], target[1]).T)
    return _cast_back(x, images.dtype)


def spacing_labels(labels: np.ndarray, spacing: Sequence[float], target: Sequence[float]) -> np.ndarray:
    """Label maps (..., H, W) resampled as :func:`spacing_images`, by nearest neighbour: every value is an
    input value. A position halfway between two pixels takes the later one (MONAI's ties fall either
    way, by the float rounding of its normalised grid)."""
    rows, cols = (
        np.floor(_spacing_positions(n, s, t) + 0.5).astype(np.intp)
        for n, s, t in zip(labels.shape[-2:], spacing, target, strict=True)
    )
    return labels[..., rows[:, None], cols[None, :]]


# -- pad or crop about the centre (MONAI ResizeWithPadOrCrop) ------------------------------------------
def _centre_window(n: int, target: int) -> tuple[slice, slice]:
    """(source, destination) slices of MONAI's symmetric pad (``target`` > ``n``: the extra split with
    the odd one after) or centre crop (start ``n // 2 - target // 2``)."""
    if target >= n:
        before = (target - n) // 2
        return slice(0, n), slice(before, before + n)
    start = n // 2 - target // 2
    return slice(start, start + target), slice(0, target)


def pad_or_crop(array: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """``array`` (..., H, W) padded with 0 or cropped about the centre to (..., *size), as MONAI's
    ``ResizeWithPadOrCrop`` does; nothing is stretched."""
    (rows_in, rows_out), (cols_in, cols_out) = (
        _centre_window(array.shape[-2], size[0]),
        _centre_window(array.shape[-1], size[1]),
    )
    out = np.zeros((*array.shape[:-2], *size), array.dtype)
    out[..., rows_out, cols_out] = array[..., rows_in, cols_in]
    return out
