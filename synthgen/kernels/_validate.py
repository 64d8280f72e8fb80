"""Argument checks shared by the kernel wrappers: arrays in, contiguous batches out, clear errors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from synthgen.errors import ConfigError, KernelInputError, LabelValueError


def _array(value: Any, what: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise KernelInputError(f"Expected {what} to be a numpy array. Got {type(value).__name__} instead.")
    return value


def label_batch(labels: Any) -> tuple[np.ndarray, bool]:
    """(H, W) or (N, H, W) integer labels as a C-contiguous (N, H, W) batch, and whether it was one map."""
    labels = _array(labels, "the label map")
    if labels.dtype.kind not in "biu":
        raise KernelInputError(
            f"Expected an integer label map. Got dtype {labels.dtype} instead; "
            "label maps are never float (resample images with warp_image)."
        )
    if labels.ndim not in (2, 3):
        raise KernelInputError(f"Expected labels of shape (H, W) or (N, H, W). Got {labels.shape} instead.")
    single = labels.ndim == 2
    batch = labels[None] if single else labels
    return np.ascontiguousarray(batch), single


def image_batch(image: Any) -> tuple[np.ndarray, bool]:
    """(H, W) or (N, H, W) numeric images as a C-contiguous (N, H, W) batch, and whether it was one image."""
    image = _array(image, "the image")
    if image.dtype.kind not in "iuf" or image.dtype == np.float16 or image.dtype.itemsize > 8:
        raise KernelInputError(
            f"Expected an integer, float32 or float64 image. Got dtype {image.dtype} instead."
        )
    if image.ndim not in (2, 3):
        raise KernelInputError(f"Expected an image of shape (H, W) or (N, H, W). Got {image.shape} instead.")
    single = image.ndim == 2
    batch = image[None] if single else image
    return np.ascontiguousarray(batch), single


def field_batch(field: Any, batch: np.ndarray, single: bool) -> np.ndarray:
    """A displacement field matching ``batch`` as a C-contiguous (N, 2, H, W) float32/float64 array."""
    field = _array(field, "the displacement field")
    n, h, w = batch.shape
    expected = (2, h, w) if single else (n, 2, h, w)
    if field.shape != expected:
        raise KernelInputError(
            f"Expected a displacement field of shape {expected}. Got {field.shape} instead."
        )
    if field.dtype not in (np.float32, np.float64):
        raise KernelInputError(f"Expected a float32 or float64 field. Got dtype {field.dtype} instead.")
    if not np.isfinite(field).all():
        raise KernelInputError("Expected a finite displacement field. Got NaN or infinite values instead.")
    return np.ascontiguousarray(field[None] if single else field)


def seed_array(seeds: Any, n: int) -> np.ndarray:
    """One non-negative 64-bit seed per sample, as a uint64 array of length ``n``."""
    if isinstance(seeds, np.ndarray) and seeds.dtype.kind in "iu" and seeds.shape == (n,):
        if seeds.dtype.kind == "i" and n and seeds.min() < 0:
            raise ConfigError("Expected seeds in [0, 2**64). Got a negative seed instead.")
        return seeds.astype(np.uint64)
    try:
        values = [int(s) for s in np.asarray(seeds, dtype=object).ravel()]
    except (TypeError, ValueError) as e:
        raise ConfigError(f"Expected integer seeds. Got {seeds!r} instead.") from e
    if np.ndim(seeds) != 1 or len(values) != n:
        raise ConfigError(
            f"Expected one seed per sample ({n}). Got an array of shape {np.shape(seeds)} instead."
        )
    if any(not 0 <= v < 2**64 for v in values):
        raise ConfigError("Expected seeds in [0, 2**64). Got a value outside that range instead.")
    return np.array(values, dtype=np.uint64)


def out_array(out: np.ndarray | None, like: np.ndarray, single: bool) -> np.ndarray:
    """The array results are written to: a new one, or ``out`` checked to be a C-contiguous match."""
    if out is None:
        return np.empty_like(like)
    out = _array(out, "out")
    expected = like.shape[1:] if single else like.shape
    if out.shape != expected or out.dtype != like.dtype or not out.flags.c_contiguous:
        raise KernelInputError(
            f"Expected out to be a C-contiguous {like.dtype} array of shape {expected}. "
            f"Got {out.dtype} {out.shape} instead."
        )
    if np.shares_memory(out, like):
        raise KernelInputError("Expected out not to overlap the input. Got overlapping arrays instead.")
    return out[None] if single else out


def rank_table(priority: Sequence[int], labels: np.ndarray, value: int) -> tuple[np.ndarray, int]:
    """Rank of each label value (0 = strongest, -1 = not listed) as a table indexed by ``value - offset``.

    The table spans every listed value and the range of ``labels``; kernels report pixels whose rank
    is -1 so that the caller can raise :class:`LabelValueError` (see :func:`unlisted_error`).
    """
    listed = [int(v) for v in priority]
    if len(set(listed)) != len(listed):
        raise ConfigError(f"Expected each class at most once in priority. Got {listed} instead.")
    if int(value) not in listed:
        raise LabelValueError(f"Expected class {value} in priority {listed}. Add it where it should rank.")
    spread = listed + ([int(labels.min()), int(labels.max())] if labels.size else [])
    offset = min(spread)
    table = np.full(max(spread) - offset + 1, -1, dtype=np.int32)
    for rank, v in enumerate(listed):
        table[v - offset] = rank
    return table, offset


def unlisted_error(priority: Sequence[int], labels: np.ndarray) -> LabelValueError:
    listed = {int(v) for v in priority}
    missing = sorted(int(v) for v in np.unique(labels) if int(v) not in listed)
    return LabelValueError(
        f"Expected every label value in priority {sorted(listed)}. Got unlisted value(s) {missing} instead."
    )


def parse_count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ConfigError(f"Expected {what} to be an integer >= 0. Got {value!r} instead.")
    return int(value)


def parse_radius(radius: Any) -> int:
    radius = parse_count(radius, "the radius")
    if radius > 1000:
        raise ConfigError(f"Expected a radius of at most 1000 pixels. Got {radius} instead.")
    return radius


def parse_connectivity(connectivity: Any) -> int:
    if connectivity not in (4, 8) or isinstance(connectivity, bool):
        raise ConfigError(f"Expected connectivity 4 or 8. Got {connectivity!r} instead.")
    return int(connectivity)
