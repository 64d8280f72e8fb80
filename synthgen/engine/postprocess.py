"""Post-processing of generated images: the ultrasound sector mask and the conversion to the store dtype."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from synthgen.schemas.store_layout import Intensity

# The apical echo sector of CAMUS-like images, in image-relative units (rows / H, columns / W), measured
# on the CAMUS frames in ../shared/data (224 x 224): apex at the top centre, the edges widen by 0.625
# columns per row, and the far edge is an arc at 0.965 of the image height from the apex.
SECTOR_APEX_COL = 0.5
SECTOR_SLOPE = 0.625
SECTOR_RADIUS = 0.965


@lru_cache(maxsize=8)
def sector_mask(shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool mask of the ultrasound sector for an image of ``shape`` (read-only, cached)."""
    h, w = shape
    rows = (np.arange(h, dtype=np.float64) + 0.5)[:, None] / h
    cols = (np.arange(w, dtype=np.float64) + 0.5)[None, :] / w - SECTOR_APEX_COL
    inside = (np.abs(cols) <= SECTOR_SLOPE * rows) & (rows**2 + cols**2 <= SECTOR_RADIUS**2)
    inside.setflags(write=False)
    return inside


def to_store_dtype(unit: np.ndarray, intensity: Intensity, dtype: str) -> np.ndarray:
    """Map generator output in [-1, 1] to the store's intensity range and dtype (rounded, clipped)."""
    x = (np.clip(unit, -1.0, 1.0) + 1.0) * 0.5 * (intensity.high - intensity.low) + intensity.low
    if np.dtype(dtype).kind == "u":
        return np.rint(x).astype(dtype)
    return x.astype(dtype)


def postprocess(images: np.ndarray, intensity: Intensity, dtype: str, sector: bool) -> np.ndarray:
    """(N, C, H, W) float32 in [-1, 1] -> (N, H, W) or (N, C, H, W) in ``dtype``, sector applied."""
    out = to_store_dtype(images, intensity, dtype)
    if sector:
        out[..., ~sector_mask(tuple(out.shape[-2:]))] = np.asarray(intensity.low).astype(dtype)
    return out[:, 0] if out.shape[1] == 1 else out
