"""Child processes for the tests: free loopback ports, a real Dask cluster on loopback, kill -9 at a moment."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from synthgen.storage.integrity import LEASE_SUFFIX


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def loopback_cluster(
    env: Mapping[str, str], workers: int = 2
) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """A real ``dask scheduler`` and ``workers`` one-thread ``dask worker`` processes on loopback, started
    with ``env``: yields the scheduler address and the processes (scheduler first), all killed after."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    env = dict(env) | {"DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--no-dashboard"], env=env, **quiet,
        )
    ]  # fmt: skip
    try:
        for _ in range(workers):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--no-nanny",
                     "--no-dashboard", "--host", "127.0.0.1"], env=env, **quiet,
                )
            )  # fmt: skip
        from distributed import Client

        with Client(address, timeout="60s") as client:
            client.wait_for_workers(workers, timeout=60)
        yield address, procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


def kill_after_lease(argv: list[str], out: str | Path, delay: float, **popen) -> subprocess.Popen:
    """Start ``argv``, wait until it holds the lease of ``out``, then ``delay`` seconds, then kill -9 it
    (unless it ended first); returns the ended process."""
    proc = subprocess.Popen(argv, **({"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL} | popen))
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None and not Path(str(out) + LEASE_SUFFIX).exists():
        time.sleep(0.01)
    time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc
