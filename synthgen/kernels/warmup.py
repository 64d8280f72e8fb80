"""Compile (or load from Numba's on-disk cache) every kernel once, before real work starts.

The engine calls :func:`ensure_warm` once per worker at start: the first call of each kernel in a
fresh process otherwise costs its compilation (about a second each, cold), and concurrent first calls
that build the cache at once have crashed Numba (numba #4807). Once :func:`warm_up` has filled the
cache, a marker beside it (keyed by the kernels' source, Numba, Python and the CPU) says so, and later
processes skip the warm-up: each kernel then loads from the cache on its first call, and only the
kernels a job uses are loaded.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

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
_MARKER_PREFIX = "synthgen-kernels-warm-"


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


def ensure_warm() -> bool:
    """Warm the kernels unless this installation's cache is known warm; return whether it warmed."""
    marker = warm_marker()
    if marker is not None and marker.exists():
        return False
    warm_up()
    if marker is not None:
        _write_marker(marker)
    return True


def warm_marker() -> Path | None:
    """The marker file that says the cache is warm, in Numba's cache folder of these kernels; None
    where that folder is unknown (then every process warms up)."""
    from synthgen.kernels.warp import nearest_index  # a Numba dispatcher; all cache in one folder

    folder = getattr(getattr(nearest_index, "_cache", None), "_cache_path", None)
    if folder is None:
        return None
    return Path(folder) / f"{_MARKER_PREFIX}{_cache_key()}"


def _cache_key() -> str:
    """What Numba's cached code depends on: the kernels' source, Numba, Python and the CPU."""
    import llvmlite.binding
    import numba

    digest = hashlib.sha256()
    for part in (numba.__version__, sys.version, platform.machine(), llvmlite.binding.get_host_cpu_name()):
        digest.update(part.encode() + b"\0")
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def _write_marker(marker: Path) -> None:
    """Write the marker whole (a temporary file renamed over it); an unwritable folder is no error."""
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        for stale in marker.parent.glob(f"{_MARKER_PREFIX}*"):
            if stale != marker:
                stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(dir=marker.parent, prefix=".warm-")
        os.close(fd)
        os.replace(tmp, marker)
    except OSError:
        pass
