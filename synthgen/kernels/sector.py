"""The fixed ultrasound sector of apical echo images (the build's post-process and the
pseudo-image renderer use it)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# The apical echo sector of CAMUS-like images, in image-relative units (rows / H, columns / W), measured
# on the CAMUS frames in ../shared/data (224 x 224, bench/results/sector_geometry.json, medians): apex at
# the top centre, the edges widen by 0.625 columns per row (a half angle of 32 degrees in pixel space),
# and the far boundary is an ellipse about the apex (the frames were cropped to the fan and stretched to a
# square): semi-axes 0.998 of the height down and 0.826 of the width across.
SECTOR_APEX_COL = 0.5
SECTOR_SLOPE = 0.625
SECTOR_DEPTH = 0.998
SECTOR_WIDTH = 0.826


@lru_cache(maxsize=8)
def sector_mask(shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool mask of the ultrasound sector for an image of ``shape`` (read-only, cached)."""
    h, w = shape
    rows = (np.arange(h, dtype=np.float64) + 0.5)[:, None] / h
    cols = (np.arange(w, dtype=np.float64) + 0.5)[None, :] / w - SECTOR_APEX_COL
    inside = (np.abs(cols) <= SECTOR_SLOPE * rows) & (
        (rows / SECTOR_DEPTH) ** 2 + (cols / SECTOR_WIDTH) ** 2 <= 1
    )
    inside.setflags(write=False)
    return inside
