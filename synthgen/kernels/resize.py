"""The one label resize and the one image resize of synthgen (ingest, label sources, loader, GAN data,
evaluation and the CycleGAN check all call these).

- :func:`resize_labels`: nearest neighbour by pixel centres (output pixel ``i`` takes input pixel
  ``floor((i + 0.5) * n_in / n_out)``, torch's ``nearest-exact``), so every output value is an input
  value and no label is ever blended.
- :func:`resize_images`: separable linear interpolation with pixel centres aligned
  (``align_corners=False``) whose triangle filter widens by the scale factor when shrinking (the
  antialiased bilinear filter of Pillow and of torch's ``interpolate(..., antialias=True)``). Weights
  are non-negative and sum to one, so outputs stay within the inputs' range.

Both take one map or image (H, W) or any stack (..., H, W) and resize the last two axes. Pure NumPy:
the weights of each axis form a small (n_out, n_in) matrix, applied as two matrix products.
"""

from __future__ import annotations

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
    if images.dtype.kind in "uib":
        info = np.iinfo(images.dtype) if images.dtype.kind != "b" else np.iinfo(np.uint8)
        x = np.clip(np.rint(x), info.min, info.max)
    return x.astype(images.dtype, copy=False)
