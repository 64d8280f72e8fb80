"""Which Numba threading layer the batched kernels run on, chosen once when synthgen.kernels is imported.

The choice is deliberate (see DESIGN.md, traps): GNU OpenMP, Numba's default from pip, kills a child
forked after a parallel kernel ran; ``workqueue`` survives fork but aborts when two Python threads
launch parallel kernels at once (Dask's threaded scheduler does exactly that); TBB is both fork- and
thread-safe. So synthgen uses TBB (pip package ``tbb``, a dependency). A pip-installed ``libtbb``
lands in ``<prefix>/lib``, which the dynamic loader does not search, so it is preloaded here by path.

Where TBB cannot be loaded, the layer falls back to ``workqueue`` and every batched kernel call takes
one process-wide lock, which keeps concurrent callers safe at the price of running them one at a
time. So it does in a process allowed a single CPU (a one-core container or a pinned worker): there a
parallel layer has nothing to gain, and TBB has been seen to wait forever inside a garbage collection
that unloads it (``unload_tbb``) in a spawned Dask worker held to one core. A ``NUMBA_THREADING_LAYER``
set in the environment always wins over this choice.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numba

_TBB_NAMES = {"linux": "libtbb.so.12", "darwin": "libtbb.12.dylib", "win32": "tbb12.dll"}


def _tbb_candidates() -> list[Path]:
    name = _TBB_NAMES.get(sys.platform, "libtbb.so.12")
    found: list[Path] = []
    try:
        dist = importlib.metadata.distribution("tbb")
        found += [Path(str(dist.locate_file(f))) for f in dist.files or () if f.name == name]
    except importlib.metadata.PackageNotFoundError:
        pass
    found += [Path(sys.prefix) / "lib" / name, Path(sys.prefix) / "Library" / "bin" / name]
    return [p for p in found if p.is_file()]


def _load_tbb() -> bool:
    """Preload libtbb so Numba's ``tbbpool`` extension can find it; True when the layer is usable."""
    for path in _tbb_candidates():
        with contextlib.suppress(OSError):
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            break
    try:
        from numba.np.ufunc import parallel

        parallel._check_tbb_version_compatible()
        from numba.np.ufunc import tbbpool  # noqa: F401
    except ImportError:
        return False
    return True


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _choose_layer() -> str:
    from_env = os.environ.get("NUMBA_THREADING_LAYER")
    if from_env:
        return from_env.lower()
    layer = "tbb" if usable_cpus() > 1 and _load_tbb() else "workqueue"
    numba.config.THREADING_LAYER = layer
    return layer


CONFIGURED_LAYER = _choose_layer()
_SERIALISE = CONFIGURED_LAYER not in ("tbb", "safe")
CHUNK = 4  # samples per chunk of a batched kernel's prange
_lock = threading.Lock()


def _reset_lock_in_child() -> None:  # a lock held by a parent thread at fork time stays held forever
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_lock_in_child)


@contextlib.contextmanager
def parallel_section() -> Iterator[None]:
    """Wrap every call of a ``parallel=True`` kernel: maps are dealt out to threads in chunks of
    ``CHUNK`` as threads free up (maps differ in cost, and Numba's even static split left a thread idle
    near the end of each call: 1.49x on two cores for deform_labels, 1.72x with chunks); on TBB calls
    run concurrently, on other layers one at a time."""
    with numba.parallel_chunksize(CHUNK):
        if not _SERIALISE:
            yield
            return
        with _lock:
            yield


def threading_layer() -> str:
    """The layer parallel kernels run on: the one Numba launched, or the configured one before that."""
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run in this process yet
        return CONFIGURED_LAYER
