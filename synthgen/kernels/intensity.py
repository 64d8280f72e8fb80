"""Store intensities <-> the [-1, 1] range that generators and GAN trainers work in.

A store's intensity convention (:class:`~synthgen.schemas.store_layout.Intensity`: ``low`` -> -1,
``high`` -> 1) holds for every dtype (uint8, uint16, float16, float32). :func:`from_unit` is the one
conversion of generator output to store values (the build's post-process and evaluation use it);
:func:`to_unit` inverts it.
"""

from __future__ import annotations

import numpy as np

from synthgen.schemas import Intensity


def to_unit(images: np.ndarray, intensity: Intensity) -> np.ndarray:
    """Store intensities -> float32 in [-1, 1] (values outside [low, high] are clipped)."""
    x = (images.astype(np.float32) - intensity.low) / (intensity.high - intensity.low)
    return np.clip(x * 2 - 1, -1, 1)


def from_unit(x: np.ndarray, intensity: Intensity, dtype: str) -> np.ndarray:
    """[-1, 1] floats -> store intensities in ``dtype`` (rounded for integer dtypes)."""
    v = (np.clip(x.astype(np.float32), -1, 1) + 1) / 2 * (intensity.high - intensity.low) + intensity.low
    if np.dtype(dtype).kind in "ui":
        info = np.iinfo(dtype)
        v = np.clip(np.rint(v), info.min, info.max)
    return v.astype(dtype)
