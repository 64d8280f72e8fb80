"""Running one task per shard on a Dask scheduler, with the coordinator recording each finished shard.

The task function is pure up to its edge (it writes its own whole shard and returns a small dict of
statistics); this module only decides where it runs. Schedulers:

- ``sync``: in this process, one shard after another (debugging, tests);
- ``threads``: Dask's threaded scheduler, ``workers`` threads in this process;
- ``processes``: Dask's multiprocessing scheduler, ``workers`` processes started with ``spawn``;
- ``tcp://host:port``: an existing Dask distributed cluster. A worker that dies mid-shard has its task
  rerun elsewhere; the rerun rewrites the whole shard, so nothing is lost or duplicated.

Task keys are deterministic (``synthgen-shard-<build token>-<k>``), so a resubmitted build reuses them.
``on_done(k, stats)`` always runs in the calling (coordinating) thread, which alone updates the store's
attributes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from synthgen.errors import ConfigError

LOCAL_SCHEDULERS = ("sync", "threads", "processes")

ShardFn = Callable[[Mapping[str, Any], int], dict[str, Any]]
OnDone = Callable[[int, dict[str, Any]], None]


def parse_scheduler(value: str) -> str:
    if value in LOCAL_SCHEDULERS or value.startswith("tcp://") or value.startswith("tls://"):
        return value
    raise ConfigError(
        f"Expected a scheduler in {list(LOCAL_SCHEDULERS)} or a Dask address like tcp://host:8786. "
        f"Got {value!r} instead."
    )


def task_key(token: str, k: int) -> str:
    return f"synthgen-shard-{token}-{k}"


def run_shards(
    fn: ShardFn,
    payload: Mapping[str, Any],
    shards: Sequence[int],
    *,
    scheduler: str,
    workers: int,
    token: str,
    on_done: OnDone,
) -> None:
    """Run ``fn(payload, k)`` for every shard ``k``, calling ``on_done`` as each one finishes."""
    scheduler = parse_scheduler(scheduler)
    if workers < 1:
        raise ConfigError(f"Expected at least 1 worker. Got {workers} instead.")
    if not shards:
        return
    if scheduler == "sync":
        for k in shards:
            on_done(k, fn(payload, k))
    elif scheduler in ("threads", "processes"):
        _run_local(fn, payload, shards, scheduler, workers, token, on_done)
    else:
        _run_distributed(fn, payload, shards, scheduler, token, on_done)


def _run_local(fn, payload, shards, scheduler, workers, token, on_done) -> None:
    import dask
    import dask.multiprocessing
    import dask.threaded
    from dask.callbacks import Callback

    keys = {task_key(token, k): k for k in shards}
    graph = {key: (fn, dict(payload), k) for key, k in keys.items()}

    class _Recorder(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if key in keys:
                on_done(keys[key], result)

    # each shard task is seconds of work, so the per-task overhead (~200 us) does not matter here
    with _Recorder(), dask.config.set({"multiprocessing.context": "spawn"}):
        get = dask.threaded.get if scheduler == "threads" else dask.multiprocessing.get
        get(graph, list(keys), num_workers=workers)


# seconds to reach a scheduler, then to see its first worker
CONNECT_TIMEOUT_S = float(os.environ.get("SYNTHGEN_CONNECT_TIMEOUT_S", "20"))


def connect(address: str, timeout: float = CONNECT_TIMEOUT_S, *, progress: bool = False):
    """A Dask client of the scheduler at ``address`` with at least one worker, or a one-line error
    within about ``timeout`` seconds each (an address that is not a Dask scheduler never hangs)."""
    import threading

    from distributed import Client

    box: dict[str, Any] = {}

    def attempt() -> None:
        try:
            box["client"] = Client(address, timeout=f"{timeout}s")
        except Exception as e:  # reported below, in the calling thread
            box["error"] = e

    thread = threading.Thread(target=attempt, name="synthgen-connect", daemon=True)
    thread.start()
    thread.join(timeout + 5)
    if "client" not in box:
        why = box.get("error") or f"no answer within {timeout:.0f} s"
        raise ConfigError(
            f"Cannot reach a Dask scheduler at {address}: {why}. Is it a Dask scheduler, and up?"
        )
    client = box["client"]
    if progress and not client.scheduler_info().get("workers"):
        print(f"waiting up to {timeout:.0f} s for a worker of {address}...", file=sys.stderr, flush=True)
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError as e:
        client.close()
        raise ConfigError(
            f"The Dask scheduler at {address} has no worker after {timeout:.0f} s: start one "
            f"('dask worker {address}') and rerun."
        ) from e
    return client


def check_scheduler(scheduler: str, *, progress: bool = False) -> None:
    """Preflight: a distributed scheduler answers and has a worker (local schedulers always do)."""
    if parse_scheduler(scheduler) not in LOCAL_SCHEDULERS:
        connect(scheduler, progress=progress).close()


def _run_distributed(fn, payload, shards, address, token, on_done) -> None:
    from distributed import as_completed

    client = connect(address)
    try:
        futures = {
            client.submit(fn, dict(payload), k, key=task_key(token, k), pure=False, retries=3): k
            for k in shards
        }
        for future in as_completed(futures):
            on_done(futures[future], future.result())
    finally:
        client.close()
