"""Compile (or load from Numba's on-disk cache) every kernel once, before real work starts.

The engine calls :func:`warm_up` once per worker at start: the first call of each kernel in a fresh
process otherwise costs its compilation (about a second each, cold) or a cache load (milliseconds),
and concurrent first calls that build the cache at once have crashed Numba (numba #4807).
"""

from __future__ import annotations

import time

import numpy as np

from synthgen.kernels.components import connected_components, count_components, fill_holes, largest_component
from synthgen.kernels.deform import deform_labels
from synthgen.kernels.fields import deformation_field
from synthgen.kernels.morphology import dilate_class, erode_class
from synthgen.kernels.randomise import N_RANGED, appearance
from synthgen.kernels.stats import class_stats
from synthgen.kernels.warp import warp_image, warp_labels

WARM_LABEL_DTYPES = (np.uint8,)
WARM_IMAGE_DTYPES = (np.float32, np.uint8)


def warm_up() -> float:
    """Run every kernel, single map and batch, on tiny inputs; return the seconds it took."""
    start = time.perf_counter()
    field = deformation_field(0, (16, 16), 8, 1.0)
    fields = np.stack([field, field])
    for dtype in WARM_LABEL_DTYPES:
        labels = np.zeros((2, 16, 16), dtype=dtype)
        labels[:, 4:12, 4:12] = 1
        deform_labels(labels, [0, 1], 8, 1.0)
        for batch in (labels[0], labels):
            dilate_class(batch, 1, 1, (1, 0))
            erode_class(batch, 1, 1, (1, 0))
            largest_component(batch, 1)
            fill_holes(batch, 1)
            count_components(batch, 1)
            connected_components(batch)
            connected_components(batch == 1)  # boolean masks are a type of their own
            count_components(batch, 1, connectivity=8)
            class_stats(batch, 2)
        warp_labels(labels[0], field)
        warp_labels(labels, fields)
    for dtype in WARM_IMAGE_DTYPES:
        image = np.zeros((2, 16, 16), dtype=dtype)
        warp_image(image[0], field)
        warp_image(image, fields)
    ranges = np.tile([0.5, 1.0], (N_RANGED + 2, 1))
    indices = np.zeros((2, 16, 16), np.uint8)
    base = np.zeros((2, 16, 16), np.float32)
    for batch in (indices[:1], indices):  # one sample, then the parallel batch path
        appearance(batch, np.arange(len(batch)), ranges, num_classes=2, modality="echo", texture=False,
                   sector=True, base=base[: len(batch)])  # fmt: skip
    return time.perf_counter() - start
