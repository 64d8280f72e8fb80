"""Post-processing of generated images: the ultrasound sector mask and the conversion to the store dtype."""

from __future__ import annotations

import numpy as np

from synthgen.kernels import from_unit, sector_mask
from synthgen.schemas import Intensity


def postprocess(images: np.ndarray, intensity: Intensity, dtype: str, sector: bool) -> np.ndarray:
    """(N, C, H, W) float32 in [-1, 1] -> (N, H, W) or (N, C, H, W) in ``dtype``, sector applied."""
    out = from_unit(images, intensity, dtype)
    if sector:
        out[..., ~sector_mask(tuple(out.shape[-2:]))] = np.asarray(intensity.low).astype(dtype)
    return out[:, 0] if out.shape[1] == 1 else out
