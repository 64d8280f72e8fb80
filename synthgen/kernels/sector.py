"""The fixed ultrasound sector of apical echo images (the build's post-process and the
pseudo-image renderer use it)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

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
