"""The threading layer: batched kernels called from many threads at once, in forked and spawned children."""

from __future__ import annotations

import multiprocessing
import os
import platform
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from helpers.data import disc_labels

from synthgen.kernels import connected_components, deform_labels, dilate_class, threading_layer, warm_up
from synthgen.kernels._threading import usable_cpus
from synthgen.kernels.deform import _deform_batch
from synthgen.kernels.morphology import _dilate_batch

SEEDS = np.arange(24, dtype=np.uint64) * 7919


def _work(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        deform_labels(labels, SEEDS[: len(labels)], 16, 5.0),
        dilate_class(labels, 2, 2, (2, 1, 3, 0)),
        connected_components(labels == 1)[0],
    )


def _child(conn, labels: np.ndarray) -> None:  # runs in a forked or spawned child
    deformed, dilated, parts = _work(labels)
    conn.send((deformed.tobytes(), dilated.tobytes(), parts.tobytes(), threading_layer()))
    conn.close()


@pytest.mark.skipif("NUMBA_THREADING_LAYER" in os.environ, reason="the environment chose the layer")
@pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64"), reason="the tbb dependency is declared for x86-64 only"
)
@pytest.mark.skipif(usable_cpus() < 2, reason="a process allowed one CPU uses workqueue")
def test_layer_is_tbb():
    deform_labels(disc_labels(2, 16, 16), SEEDS[:2], 8, 1.0)
    assert threading_layer() == "tbb"


@pytest.mark.skipif("NUMBA_THREADING_LAYER" in os.environ, reason="the environment chose the layer")
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_a_process_held_to_one_cpu_uses_workqueue():
    code = (
        "import numpy as np\n"
        "from synthgen.kernels import deform_labels, threading_layer\n"
        "labels = np.zeros((4, 32, 32), np.uint8); labels[:, 8:24, 8:24] = 1\n"
        "deform_labels(labels, np.arange(4, dtype=np.uint64), 8, 2.0)\n"
        "print(threading_layer())\n"
    )
    cpu = min(os.sched_getaffinity(0))
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "workqueue"


def test_batched_kernels_from_many_threads_at_once():
    labels = disc_labels(24, 48, 48)
    expected = _work(labels)
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda _: _work(labels), range(18)))
    for result in results:
        for got, want in zip(result, expected, strict=True):
            np.testing.assert_array_equal(got, want)


def _run_child(method: str, labels: np.ndarray) -> tuple:
    ctx = multiprocessing.get_context(method)
    receive, send = ctx.Pipe(duplex=False)
    with warnings.catch_warnings():  # Python >= 3.12 warns that forking a threaded process may deadlock
        warnings.simplefilter("ignore", DeprecationWarning)
        child = ctx.Process(target=_child, args=(send, labels))
        child.start()
    send.close()
    try:
        assert receive.poll(120), f"the {method} child sent nothing in 120 s"
        message = receive.recv()
    finally:
        child.join(30)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0, f"the {method} child exited with {child.exitcode}"
    return message


def test_forked_child_after_parallel_work_in_the_parent():
    labels = disc_labels(12, 40, 40)
    expected = _work(labels)  # the parent has run parallel kernels: the layer's threads exist
    message = _run_child("fork", labels)
    assert message[:3] == tuple(a.tobytes() for a in expected)


@pytest.mark.slow
def test_spawned_child():
    labels = disc_labels(12, 40, 40)
    message = _run_child("spawn", labels)
    assert message[:3] == tuple(a.tobytes() for a in _work(labels))
    if "NUMBA_THREADING_LAYER" not in os.environ:
        assert message[3] == "tbb"


@pytest.mark.slow
def test_workqueue_fallback_serialises_concurrent_calls():
    code = (
        "from concurrent.futures import ThreadPoolExecutor\n"
        "import numpy as np\n"
        "from synthgen.kernels import deform_labels, threading_layer\n"
        "labels = np.zeros((16, 64, 64), np.uint8); labels[:, 20:40, 10:50] = 1\n"
        "seeds = np.arange(16, dtype=np.uint64)\n"
        "with ThreadPoolExecutor(4) as pool:\n"
        "    out = list(pool.map(lambda _: deform_labels(labels, seeds, 16, 6.0), range(40)))\n"
        "assert all(np.array_equal(o, out[0]) for o in out)\n"
        "print(threading_layer())\n"
    )
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "workqueue"


def test_warm_up_compiles_every_kernel():
    seconds = warm_up()
    assert seconds >= 0
    assert _deform_batch.signatures and _dilate_batch.signatures
    assert warm_up() < 5.0  # everything already compiled or loaded: no compilation the second time
