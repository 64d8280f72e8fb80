"""Planning a build of 100 million samples on a Dask cluster writing to an object store, on paper and in a
simulation, from figures measured on this machine.

The plan (:func:`plan`) is a pure function of measured inputs (:class:`PlanInputs` in, :class:`Plan` out):
shards, files, bytes, tasks, and for each number of workers the wall time, the rates the scheduler and the
object store must sustain, and the resource that bounds the build. It simulates the build shard by shard:
shards come off the workers at the rate of the slowest resource (the workers, the Dask scheduler, the object
store's request limits, the network), and the one coordinating process records them as their tasks return
(``build.py``'s ``CompletionRecords`` -> ``StoreWriter.mark_complete``). A record reads and rewrites the root
attributes, which list every complete shard and its digest, so it costs more as the store fills (the
measurements fit that growth). As built, records are written in batches that take at most
``CompletionRecords.RECORD_SHARE`` of the coordinator's time, and tasks get the attributes they need from the
coordinator instead of reading them; the plan also gives the design before that (a record per shard, two
transfers of the root attributes each) for comparison.

Measured here (``measure_*``), each with its command line or call:

- real builds through the CLI, ``--n-small`` and ``--n-large`` samples, on ``--scheduler processes
  --workers 1|2`` and on a loopback Dask cluster (``dask scheduler`` + ``dask worker --nthreads 1``, one and
  two worker processes): the steady rate is the marginal rate between the two builds (start-up cancels out),
  in wall-clock time and per CPU second of the workers (the plan's per-worker rate: the machine is shared);
- the store a build leaves: files and bytes, fitted per shard and per sample;
- ``StoreWriter.mark_complete`` of one shard, and a task's store overhead (``StoreWriter.for_shards`` then
  ``write_shard``, as the build's tasks do), on a store of the target's layout holding 0 to all of its shards complete, on the local
  file system and on moto's S3 server on loopback;
- S3 requests per shard of a real build (moto, counted from s3fs's call log): the marginal count between two
  builds;
- the Dask scheduler's rate on trivial tasks submitted the way the build submits its shard tasks.

Assumed (flags): S3's documented request limits per prefix (3,500 PUT/COPY/POST/DELETE and 5,500 GET/HEAD
per second), one prefix (every key of a store shares the store's prefix; S3 may split partitions under
sustained load, without a promise of when), and the aggregate network bandwidth to the object store.

    python bench/scale.py [--quick] [--n-small 512 --n-large 2048] [--target 100000000] [--out bench/results/scale.json]
    python bench/scale.py --replan bench/results/scale.json   # the plan again from a run's measurements
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

WORKERS = (1, 2, 8, 32, 128, 512, 1024)
S3_PUT_PER_PREFIX_S = 3500.0  # S3's documented PUT/COPY/POST/DELETE requests per second per prefix
S3_GET_PER_PREFIX_S = 5500.0  # and GET/HEAD
PUT_CLASS = {
    "put_object",
    "copy_object",
    "delete_object",
    "delete_objects",
    "create_multipart_upload",
    "upload_part",
    "complete_multipart_upload",
    "abort_multipart_upload",
}
RESOURCES = ("workers", "dask scheduler", "object store PUT", "object store GET", "network", "coordinator")


# ---------------------------------------------------------------------------------------------------------
# The plan: a pure function of the measured (and the assumed) figures
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanInputs:
    """What the plan is computed from. Rates are steady rates; ``*_per_done_shard`` figures are the growth of
    a cost with the number of shards already recorded complete in the store."""

    worker_samples_per_s: float  # one one-thread worker (a core), steady
    startup_s: float  # from the command to the first shard
    scheduler_tasks_per_s: float  # tasks the Dask scheduler dispatches and returns per second
    submit_tasks_per_s: float  # tasks the coordinator's client submits and collects per second
    put_per_shard: float  # object store requests per shard, PUT class (workers and coordinator)
    get_per_shard: float  # and GET class (GET, HEAD, LIST)
    bytes_per_sample: float  # stored bytes per sample (images, labels, metadata)
    files_per_shard: float  # files (objects) per shard
    record_s: float  # one mark_complete on a store with no shard complete
    record_s_per_done_shard: float = 0.0  # its growth per complete shard
    task_store_s: float = (
        0.0  # a task's extra seconds on the object store (its store overhead there, less local)
    )
    task_open_s_per_done_shard: float = 0.0  # a task's store overhead (open, scratch copy): its growth
    attrs_bytes: float = 0.0  # the root attributes (zarr.json) with no shard complete
    attrs_bytes_per_done_shard: float = 0.0  # their growth per complete shard
    attrs_transfers_per_shard: float = 0.0  # root zarr.json reads and writes per shard (a record: 2)
    record_share: float = 0.0  # > 0: batched records taking at most this share of the coordinator's time
    files_fixed: float = 0.0  # files of an empty store (array and group metadata)
    bytes_fixed: float = 0.0
    target: int = 100_000_000
    shard_size: int = 256
    workers: tuple[int, ...] = WORKERS
    put_limit_per_s: float = S3_PUT_PER_PREFIX_S  # per prefix (assumed: S3's documented figure)
    get_limit_per_s: float = S3_GET_PER_PREFIX_S
    prefixes: int = 1
    bandwidth_bytes_per_s: float = 12.5e9  # aggregate, cluster to object store (assumed: 100 Gbit/s)

    def __post_init__(self) -> None:
        if self.target < 1 or self.shard_size < 1:
            raise ValueError(f"Expected target and shard size >= 1. Got {self.target}, {self.shard_size}.")
        if not self.workers or min(self.workers) < 1:
            raise ValueError(f"Expected worker counts >= 1. Got {self.workers} instead.")
        positive = (
            "worker_samples_per_s",
            "scheduler_tasks_per_s",
            "submit_tasks_per_s",
            "bandwidth_bytes_per_s",
        )
        bad = [f"{k}={getattr(self, k)}" for k in positive if not getattr(self, k) > 0]
        if bad:
            raise ValueError(f"Expected positive rates. Got {', '.join(bad)} instead.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PlanRow:
    """One number of workers."""

    workers: int
    hours: float  # wall time, start-up included, until the last shard is recorded
    samples_per_s: float  # average over the build
    tasks_per_s_demand: float  # shard tasks per second the workers finish at their own rate (first shard)
    put_per_s_demand: float  # object store requests per second at that rate, PUT class
    get_per_s_demand: float  # and GET class
    tasks_per_s: float  # average over the build
    requests_per_s: float  # object store requests per second, average (PUT and GET classes)
    put_per_s: float
    get_per_s: float
    bytes_per_s: float  # average traffic to and from the object store (data and root attributes)
    bottleneck: str  # the resource with the smallest limit
    limits_samples_per_s: dict[str, float]  # each resource's limit: target / the seconds it alone needs


@dataclass(frozen=True)
class Plan:
    inputs: PlanInputs
    shards: int
    tasks: int
    files: int
    bytes: float
    attrs_bytes_final: float  # the root zarr.json once every shard is recorded
    attrs_bytes_moved: float  # read and written over the whole build
    coordinator_s: float  # the coordinator alone: submitting every task, then recording every shard
    rows: tuple[PlanRow, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def row(self, workers: int) -> PlanRow:
        return next(r for r in self.rows if r.workers == workers)


def plan(inputs: PlanInputs) -> Plan:
    """The plan of ``inputs.target`` samples for each of ``inputs.workers``.

    Shard j (in the order shards complete) is produced, with j shards already recorded, at the pace of the
    slowest resource: each resource needs some seconds per shard (the workers ``(samples / rate + open
    overhead) / W``, the scheduler ``1 / tasks_per_s``, the object store its requests over its limits, the
    network its bytes over the bandwidth), and shard j arrives when the sum of the largest of these over
    shards 0..j has passed. The coordinator submits every task, then records shards one after another in
    the order they arrive, each record taking ``record_s + record_s_per_done_shard * j``. The wall time is
    when the last record is written. Each resource's limit is the target over the seconds it alone would
    need (start-up left out); the bottleneck is the resource with the smallest limit."""
    p = inputs
    n, size = p.target, p.shard_size
    shards = -(-n // size)
    j = np.arange(shards, dtype=np.float64)
    samples = np.full(shards, float(size))
    samples[-1] = n - size * (shards - 1)
    attrs = p.attrs_bytes + p.attrs_bytes_per_done_shard * j  # the root zarr.json while shard j is built
    shard_bytes = samples * p.bytes_per_sample + p.attrs_transfers_per_shard * attrs
    service = p.record_s + p.record_s_per_done_shard * j  # the coordinator's record of shard j
    submit_s = shards / p.submit_tasks_per_s
    coordinator_s = submit_s + float(service.sum())
    if p.record_share > 0:  # batched: records take a bounded share of the time, then one last batch
        last = p.record_s + p.record_s_per_done_shard * shards
        service = np.zeros(shards)
        service[-1] = last
        coordinator_s = submit_s / (1.0 - p.record_share) + last
    suffix = np.cumsum(service[::-1])[::-1]  # records of shards j..end
    shared = {
        "dask scheduler": np.full(shards, 1.0 / p.scheduler_tasks_per_s),
        "object store PUT": np.full(shards, p.put_per_shard / (p.put_limit_per_s * p.prefixes)),
        "object store GET": np.full(shards, p.get_per_shard / (p.get_limit_per_s * p.prefixes)),
        "network": shard_bytes / p.bandwidth_bytes_per_s,
    }
    work = samples / p.worker_samples_per_s + p.task_store_s + p.task_open_s_per_done_shard * j  # one worker
    requests = shards * (p.put_per_shard + p.get_per_shard)
    moved = float(p.attrs_transfers_per_shard * attrs.sum())
    rows = []
    for w in p.workers:
        per_shard = {"workers": work / w, **shared}
        interval = np.maximum.reduce(list(per_shard.values()))
        arrival = p.startup_s + np.cumsum(interval)
        finish = max(p.startup_s + coordinator_s, float((arrival + suffix).max()))
        alone = {name: float(v.sum()) for name, v in per_shard.items()} | {"coordinator": coordinator_s}
        limits = {name: n / s for name, s in alone.items()}
        rows.append(
            PlanRow(
                workers=w,
                hours=finish / 3600,
                samples_per_s=n / finish,
                tasks_per_s_demand=w / work[0],
                put_per_s_demand=w / work[0] * p.put_per_shard,
                get_per_s_demand=w / work[0] * p.get_per_shard,
                tasks_per_s=shards / finish,
                requests_per_s=requests / finish,
                put_per_s=shards * p.put_per_shard / finish,
                get_per_s=shards * p.get_per_shard / finish,
                bytes_per_s=float(shard_bytes.sum()) / finish,
                bottleneck=min(limits, key=limits.get),
                limits_samples_per_s=limits,
            )
        )
    return Plan(
        inputs=p,
        shards=shards,
        tasks=shards,
        files=round(p.files_fixed + p.files_per_shard * shards),
        bytes=p.bytes_fixed + p.bytes_per_sample * n,
        attrs_bytes_final=p.attrs_bytes + p.attrs_bytes_per_done_shard * shards,
        attrs_bytes_moved=moved,
        coordinator_s=coordinator_s,
        rows=tuple(rows),
    )


def per_shard_records(inputs: PlanInputs) -> PlanInputs:
    """The same inputs under the design before batched records: a record per shard, two transfers of the
    root attributes each."""
    return dataclasses.replace(inputs, record_share=0.0, attrs_transfers_per_shard=2.0)


def constant_records(inputs: PlanInputs) -> PlanInputs:
    """The same inputs where opening the store and recording a shard cost the same however many shards are
    complete (completion records that do not grow with the store): what the rest of the system allows."""
    return dataclasses.replace(
        inputs, record_s_per_done_shard=0.0, task_open_s_per_done_shard=0.0, attrs_bytes_per_done_shard=0.0
    )


def limits(p: Plan) -> list[str]:
    """Each resource's limit at the largest number of workers, and the workers that reach it (Markdown)."""
    last = p.rows[-1]
    i = p.inputs
    rate = i.shard_size / (i.shard_size / i.worker_samples_per_s + i.task_store_s)  # a worker, empty store
    lines = [
        "| resource | limit, samples/s | 100 M samples at that rate | workers that reach it |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, value in sorted(last.limits_samples_per_s.items(), key=lambda kv: kv[1]):
        if name == "workers":
            continue
        lines.append(
            f"| {name} | {value:,.0f} | {p.inputs.target / value / 3600:,.2f} h | {value / rate:,.0f} |"
        )
    return lines


def table(as_built: Plan, before: Plan) -> list[str]:
    """The plan as a Markdown table (README): as built, and with a record per shard (the design before)."""
    lines = [
        "| workers | hours, as built | bottleneck, as built | hours, a record per shard | bottleneck then "
        "| tasks/s needed | PUT/s needed | GET/s needed | tasks/s achieved | requests/s achieved |",
        "| ---: | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for a, c in zip(as_built.rows, before.rows, strict=True):
        lines.append(
            f"| {a.workers:,} | {a.hours:,.2f} | {a.bottleneck} | {c.hours:,.0f} | {c.bottleneck} "
            f"| {a.tasks_per_s_demand:,.1f} | {a.put_per_s_demand:,.0f} | {a.get_per_s_demand:,.0f} "
            f"| {a.tasks_per_s:,.1f} | {a.requests_per_s:,.0f} |"
        )
    return lines


# ---------------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------------


def _tests_on_path() -> None:
    tests = str(Path(__file__).resolve().parents[1] / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)


def _store_size(path: Path) -> tuple[int, int]:
    """Files and bytes (apparent sizes: what an object store holds) under ``path``."""
    files = [Path(root) / f for root, _, names in os.walk(path) for f in names]
    return len(files), sum(f.stat().st_size for f in files)


def _cpu_s(procs) -> float:
    """CPU seconds (user + system) the processes ``procs`` have used so far."""
    import psutil

    return sum(sum(psutil.Process(p.pid).cpu_times()[:2]) for p in procs)


def _cli_build(out: Path, n: int, scheduler: str, workers: int, dask_workers=()) -> dict:
    """One ``synthgen build-dataset`` through the CLI in a child process: wall seconds, the CPU seconds of
    the build's workers (the CLI process and its children for ``processes``; the ``dask_workers``
    processes for a Dask cluster, the CLI process being the coordinator there), files, bytes."""
    cmd = [
        sys.executable, "-m", "synthgen.cli", "build-dataset", "--out", str(out), "--n", str(n), "--seed", "0",
        "--scheduler", scheduler, "--workers", str(workers), "--quiet",
    ]  # fmt: skip
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cluster = _cpu_s(dask_workers)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    seconds = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cli = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    files, nbytes = _store_size(out)
    shutil.rmtree(out)
    cpu = _cpu_s(dask_workers) - cluster if dask_workers else cli
    return {"seconds": seconds, "worker_cpu_s": cpu, "cli_cpu_s": cli, "files": files, "bytes": nbytes}


def _marginal(n_small: int, n_large: int, small: float, large: float) -> float:
    return (n_large - n_small) / (large - small) if large > small else float("nan")


def measure_builds(args, workdir: Path) -> dict:
    """Real builds (the default build: bundled echo generator, 128 x 128, shards of 256) of ``--n-small``
    and ``--n-large`` samples on each setup, interleaved over ``--repeats``: the steady rate is the marginal
    rate between the two (start-up cancels out), in wall-clock time (medians of the repeats' wall times)
    and per CPU second of the workers (what a worker holding a core of its own would give: the machine is
    shared, and other work stretches the wall clock, not the CPU time)."""
    _tests_on_path()
    from helpers.processes import loopback_cluster

    env = dict(os.environ)
    runs: dict[str, list[dict]] = {}
    ns, nl = args.n_small, args.n_large
    with loopback_cluster(env, workers=1) as (one, p1), loopback_cluster(env, workers=2) as (two, p2):
        setups = {
            "processes_1": ("processes", 1, ()),
            "processes_2": ("processes", 2, ()),
            "dask_1": (one, 1, p1[1:]),
            "dask_2": (two, 2, p2[1:]),
        }
        for name, (scheduler, workers, procs) in setups.items():  # warm-up: kernel and generator caches
            _cli_build(workdir / f"{name}_w.zarr", 256, scheduler, workers, procs)
        for repeat in range(args.repeats):  # interleaved: drifts of the shared machine hit every setup alike
            for name, (scheduler, workers, procs) in setups.items():
                small = _cli_build(workdir / f"{name}_s.zarr", ns, scheduler, workers, procs)
                large = _cli_build(workdir / f"{name}_l.zarr", nl, scheduler, workers, procs)
                row = {"repeat": repeat, "small": small, "large": large}
                row["steady_samples_per_s"] = _marginal(ns, nl, small["seconds"], large["seconds"])
                row["samples_per_worker_cpu_s"] = _marginal(
                    ns, nl, small["worker_cpu_s"], large["worker_cpu_s"]
                )
                runs.setdefault(name, []).append(row)
                print(
                    f"build {name} repeat {repeat}: {small['seconds']:.1f} s / {large['seconds']:.1f} s, steady "
                    f"{row['steady_samples_per_s']:.0f} samples/s, {row['samples_per_worker_cpu_s']:.0f} per "
                    f"worker CPU second; load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
        scheduler = measure_scheduler(two, p2[0], args)  # the two-worker cluster, before it goes
    out = {"setups": {}, "scheduler": scheduler}
    for name, rows in runs.items():
        small = statistics.median(r["small"]["seconds"] for r in rows)
        large = statistics.median(r["large"]["seconds"] for r in rows)
        steady = _marginal(ns, nl, small, large)
        cpu_small = statistics.median(r["small"]["worker_cpu_s"] for r in rows)
        cpu_large = statistics.median(r["large"]["worker_cpu_s"] for r in rows)
        out["setups"][name] = {
            "median_seconds": {"small": small, "large": large},
            "steady_samples_per_s": steady,
            "startup_s": large - nl / steady,
            "samples_per_worker_cpu_s": _marginal(ns, nl, cpu_small, cpu_large),
            "total_samples_per_s_large": nl / large,
            "raw": rows,
        }
    first = runs["processes_1"][0]
    ks, kl = -(-ns // 256), -(-nl // 256)
    files_per_shard = (first["large"]["files"] - first["small"]["files"]) / (kl - ks)
    bytes_per_sample = (first["large"]["bytes"] - first["small"]["bytes"]) / (nl - ns)
    every = [r[size]["files"] for v in runs.values() for r in v for size in ("small", "large")]
    out["store"] = {
        "command": f"find OUT -type f | wc -l; apparent sizes, after builds of {ns} and {nl} samples",
        "shards_small": ks,
        "shards_large": kl,
        "files_small": first["small"]["files"],
        "files_large": first["large"]["files"],
        "bytes_small": first["small"]["bytes"],
        "bytes_large": first["large"]["bytes"],
        "files_per_shard": files_per_shard,
        "files_fixed": first["small"]["files"] - files_per_shard * ks,
        "bytes_per_sample": bytes_per_sample,
        "bytes_fixed": first["small"]["bytes"] - bytes_per_sample * ns,
        "files_same_in_every_build": set(every) == {first["small"]["files"], first["large"]["files"]},
    }
    return out


def _noop(payload: dict, k: int) -> dict:
    return {"k": k}


def measure_scheduler(address: str, scheduler_proc, args) -> dict:
    """Trivial tasks through the loopback Dask scheduler, submitted the way the build submits shard tasks
    (one ``client.submit`` each, with the build's payload, ``pure=False, retries=3``, then ``as_completed``):
    the marginal rate between ``m_small`` and ``m_large`` tasks, in wall-clock time and per CPU second of the
    scheduler process and of this process (the client: what the build's coordinator spends per task).
    Here the scheduler, the client and both workers share two cores with other work: the CPU figures say
    what each would do on a core of its own."""
    import pickle

    from distributed import Client, as_completed

    from synthgen.schemas import load_build_config

    payload = {"out": "s3://bucket/x.zarr", "config": load_build_config(None, {"n": args.target}).to_dict()}
    payload["storage_options"] = {}
    m_small, m_large = (500, 2000) if args.quick else (500, 2500)
    rows = []
    with Client(address, timeout="60s") as client:
        for repeat in range(args.repeats):
            row: dict = {"repeat": repeat}
            for m in (m_small, m_large):
                token = uuid.uuid4().hex[:8]
                sched, mine = _cpu_s([scheduler_proc]), time.process_time()
                t = time.perf_counter()
                futures = {
                    client.submit(
                        _noop, dict(payload), k, key=f"scale-noop-{token}-{k}", pure=False, retries=3
                    ): k
                    for k in range(m)
                }
                submitted = time.perf_counter() - t
                for future in as_completed(futures):
                    future.result()
                row[str(m)] = {
                    "submit_s": submitted,
                    "total_s": time.perf_counter() - t,
                    "scheduler_cpu_s": _cpu_s([scheduler_proc]) - sched,
                    "client_cpu_s": time.process_time() - mine,
                }
                del futures
            a, b = row[str(m_small)], row[str(m_large)]
            for key, name in (
                ("total_s", "tasks_per_s"),
                ("submit_s", "submit_per_s"),
                ("scheduler_cpu_s", "tasks_per_scheduler_cpu_s"),
                ("client_cpu_s", "tasks_per_client_cpu_s"),
            ):
                row[name] = _marginal(m_small, m_large, a[key], b[key])
            rows.append(row)
            print(
                f"scheduler repeat {repeat}: {row['tasks_per_s']:.0f} tasks/s wall, "
                f"{row['tasks_per_scheduler_cpu_s']:.0f} per scheduler CPU second, "
                f"{row['tasks_per_client_cpu_s']:.0f} per client CPU second",
                flush=True,
            )
    names = ("tasks_per_s", "submit_per_s", "tasks_per_scheduler_cpu_s", "tasks_per_client_cpu_s")
    return {
        "tasks_small": m_small,
        "tasks_large": m_large,
        "workers": 2,
        **{name: statistics.median(r[name] for r in rows) for name in names},
        "payload_pickled_bytes": len(pickle.dumps(payload)),
        "raw": rows,
    }


def measure_records(url: str, target: int, levels: list[int], repeats: int, zarr_json_size) -> dict:
    """On a store of the target's layout (the default build config, ``n = target``) holding ``level`` shards
    complete: one ``mark_complete`` of one more shard (the coordinator's record), and a task's store overhead
    (``StoreWriter.open`` then ``write_shard`` of an all-zero shard, which writes no data file): seconds,
    medians of ``repeats``, and the size of the root ``zarr.json``."""
    from synthgen.engine import pipeline
    from synthgen.schemas import load_build_config
    from synthgen.storage import StoreWriter

    config = load_build_config(None, {"n": target, "seed": 0})
    attrs = pipeline.store_attrs(config)
    layout = attrs.layout
    digest = "0123456789abcdef0123456789abcdef:1ff"  # the size of a real one: 32 hex digits, a 9-file mask
    writer = StoreWriter.create(url, attrs)
    zeros_meta = {m.name: np.zeros((layout.shard_size, *m.shape), m.dtype) for m in layout.meta}
    images = np.zeros((layout.shard_size, *layout.image_shape), layout.image_dtype)
    labels = np.zeros((layout.shard_size, *layout.label_shape), np.uint8)
    top = layout.num_shards - 1  # timed records take shards from the top, below the filled ones
    done = 0
    rows = []
    for level in levels:
        level = min(level, layout.num_shards - repeats - 1)
        if level > done:
            writer.mark_complete(range(done, level), digests=dict.fromkeys(range(done, level), digest))
            done = level
        records, opens, records_cpu, opens_cpu = [], [], [], []
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            writer.mark_complete([top], digests={top: digest})
            records.append(time.perf_counter() - t)
            records_cpu.append(time.process_time() - c)
            top -= 1
            t, c = time.perf_counter(), time.process_time()
            task = StoreWriter.for_shards(url, writer.shard_attrs())
            task.write_shard(layout.num_shards // 2, images, labels, zeros_meta)
            task.close()
            opens.append(time.perf_counter() - t)
            opens_cpu.append(time.process_time() - c)
        rows.append(
            {
                "complete_shards": level,
                "record_s": statistics.median(records),
                "task_store_overhead_s": statistics.median(opens),
                "record_cpu_s": statistics.median(records_cpu),
                "task_store_overhead_cpu_s": statistics.median(opens_cpu),
                "zarr_json_bytes": zarr_json_size(),
                "record_raw": records,
                "task_raw": opens,
            }
        )
        print(
            f"records {url.split(':')[0] if '://' in url else 'local'} at {level} complete: record "
            f"{rows[-1]['record_s'] * 1e3:.1f} ms, task overhead {rows[-1]['task_store_overhead_s'] * 1e3:.1f} ms",
            flush=True,
        )
    return {"target_shards": layout.num_shards, **fit_levels(rows), "levels": rows}


def fit_levels(rows: list[dict]) -> dict:
    """Each measured figure as ``a + b * complete shards``: ``a`` at the emptiest level, ``b`` the secant
    to the fullest (the figures grow a little faster than linearly: the shard indices gain digits)."""
    first, last = rows[0], rows[-1]
    span = max(last["complete_shards"] - first["complete_shards"], 1)
    out = {"fit": "a at the emptiest level, b the secant to the fullest"}
    names = {
        "record_s": "record_s_per_done_shard",
        "task_store_overhead_s": "task_s_per_done_shard",
        "record_cpu_s": "record_cpu_s_per_done_shard",
        "task_store_overhead_cpu_s": "task_cpu_s_per_done_shard",
        "zarr_json_bytes": "zarr_json_bytes_per_done_shard",
    }
    for a, b in names.items():
        out[a] = first[a]
        out[b] = (last[a] - first[a]) / span
    return out


def _requests(counter, url: str, n: int) -> tuple[Counter, int]:
    """A real build of ``n`` samples into ``url`` in this process (sync scheduler: every request is
    counted here): its S3 requests by kind, and its shards."""
    from synthgen.engine.build import RunOptions, build_dataset
    from synthgen.schemas import load_build_config

    config = load_build_config(None, {"n": n, "seed": 0})
    counter.take()
    summary = build_dataset(url, config, RunOptions(scheduler="sync", progress=False))
    return counter.take(), summary.shards_built


def measure_s3(args) -> dict:
    """On moto's S3 server on loopback: requests per shard of a real build (the marginal count between a
    build of ``n_small`` and one of ``n_large`` samples), and the record and task overhead by fill level."""
    _tests_on_path()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from helpers.s3 import moto_s3
    from s3 import RequestCounter  # bench/s3.py

    from synthgen.storage import StoreFiles

    counter = RequestCounter()
    log = logging.getLogger("s3fs")
    log.setLevel(logging.DEBUG)
    log.addHandler(counter)
    log.propagate = False
    small_n, large_n = (256, 768) if args.quick else (256, 1280)
    saved = dict(os.environ)
    try:
        with moto_s3() as server:
            os.environ.update(server.env())
            small, ks = _requests(counter, server.url("small.zarr"), small_n)
            large, kl = _requests(counter, server.url("large.zarr"), large_n)
            kinds = sorted(set(small) | set(large))
            per_shard = {kind: (large[kind] - small[kind]) / (kl - ks) for kind in kinds}
            put = sum(v for kind, v in per_shard.items() if kind in PUT_CLASS)
            get = sum(v for kind, v in per_shard.items() if kind not in PUT_CLASS)
            url = server.url("records.zarr")
            files = StoreFiles(url)
            levels = [0, 1000] if args.quick else [0, 1000, 10000, 30000]
            records = measure_records(url, args.target, levels, 3, lambda: len(files.read("zarr.json")))
            counter.take()
            from synthgen.storage import StoreWriter

            writer = StoreWriter.open(url)
            counter.take()
            writer.mark_complete([0], digests={0: "0" * 32 + ":1"})
            record_calls = counter.take()
    finally:
        os.environ.clear()
        os.environ.update(saved)
        log.removeHandler(counter)
    return {
        "server": "moto_server (Python, loopback, same machine)",
        "build_samples": [small_n, large_n],
        "build_shards": [ks, kl],
        "requests_small_build": dict(small),
        "requests_large_build": dict(large),
        "requests_per_shard": per_shard,
        "put_per_shard": put,
        "get_per_shard": get,
        "requests_per_sample": (put + get) / 256,
        "record_requests": dict(record_calls),
        "records": records,
    }


def measure_local_records(args, workdir: Path) -> dict:
    path = workdir / "records.zarr"
    levels = [0, 1000, 10000] if args.quick else [0, 1000, 10000, 100000, 1 << 40]
    return measure_records(str(path), args.target, levels, 3, lambda: (path / "zarr.json").stat().st_size)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-small", type=int, default=512, help="samples of the small build (start-up baseline)")
    p.add_argument("--n-large", type=int, default=2048, help="samples of the large build")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--target", type=int, default=100_000_000, help="samples to plan for")
    p.add_argument("--bandwidth-gbit", type=float, default=100.0, help="assumed: cluster to object store")
    p.add_argument("--prefixes", type=int, default=1, help="assumed: S3 partitions serving the store")
    p.add_argument("--quick", action="store_true", help="small sizes, one repeat (a smoke run)")
    p.add_argument("--out", default="bench/results/scale.json")
    p.add_argument("--replan", metavar="JSON", help="no measurements: plan again from an earlier run's JSON")
    args = p.parse_args()
    if args.quick:
        args.n_small, args.n_large, args.repeats = 256, 768, 1

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import cpu_model  # bench/machine.py

    if args.replan:  # the plan again from the measurements of an earlier run (fits redone from its levels)
        earlier = json.loads(Path(args.replan).read_text())
        measured = earlier["measured"]
        for records in (measured["records_local"], measured["s3_moto"]["records"]):
            records.update(fit_levels(records["levels"]))
        header = {k: earlier[k] for k in ("command", "cpu_model", "cpu_count", "seconds")}
        header["replanned"] = "python bench/scale.py " + " ".join(sys.argv[1:])
    else:
        from synthgen.storage import use_fast_codecs

        use_fast_codecs()
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as d:
            workdir = Path(d)
            builds = measure_builds(args, workdir)
            local = measure_local_records(args, workdir)
        s3 = measure_s3(args)
        measured = {
            "builds": {
                "n_small": args.n_small,
                "n_large": args.n_large,
                "repeats": args.repeats,
                "config": "default build: bundled echo generator, 128 x 128, uint8, shards of 256",
                "setups": builds["setups"],
            },
            "store": builds["store"],
            "dask_scheduler": builds["scheduler"],
            "records_local": local,
            "s3_moto": s3,
        }
        header = {
            "command": "python bench/scale.py " + " ".join(sys.argv[1:]),
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "seconds": time.perf_counter() - started,
        }
    setups = measured["builds"]["setups"]
    rate = {k: v["steady_samples_per_s"] for k, v in setups.items()}
    measured["builds"]["steady_samples_per_s"] = rate
    measured["builds"]["samples_per_worker_cpu_s"] = {
        k: v["samples_per_worker_cpu_s"] for k, v in setups.items()
    }
    measured["builds"]["startup_s"] = {k: v["startup_s"] for k, v in setups.items()}
    measured["builds"]["ratios"] = {
        "dask_2_vs_dask_1": rate["dask_2"] / rate["dask_1"],
        "processes_2_vs_processes_1": rate["processes_2"] / rate["processes_1"],
        "dask_1_vs_processes_1": rate["dask_1"] / rate["processes_1"],
    }
    # one one-thread worker per core, as on a cluster: samples per CPU second of the two Dask workers
    per_worker = setups["dask_2"]["samples_per_worker_cpu_s"]
    sched = measured["dask_scheduler"]
    store = measured["store"]
    local = measured["records_local"]
    s3 = measured["s3_moto"]
    remote = s3["records"]

    def on_object_store(key: str) -> float:
        """This process's CPU seconds on the local store, plus what the object store (moto) adds in wall
        time over the local store in the same run (requests, transfers, its server)."""
        cpu_key = key.replace("_s", "_cpu_s", 1)
        return local[cpu_key] + max(0.0, remote[key] - local[key])

    from synthgen.engine.build import CompletionRecords

    inputs = PlanInputs(
        worker_samples_per_s=per_worker,
        startup_s=setups["dask_2"]["startup_s"],
        scheduler_tasks_per_s=sched["tasks_per_scheduler_cpu_s"],
        submit_tasks_per_s=sched["tasks_per_client_cpu_s"],
        put_per_shard=s3["put_per_shard"],
        get_per_shard=s3["get_per_shard"],
        bytes_per_sample=store["bytes_per_sample"],
        files_per_shard=store["files_per_shard"],
        files_fixed=store["files_fixed"],
        bytes_fixed=store["bytes_fixed"],
        record_s=on_object_store("record_s"),
        record_s_per_done_shard=on_object_store("record_s_per_done_shard"),
        task_store_s=max(0.0, remote["task_store_overhead_s"] - local["task_store_overhead_s"]),
        task_open_s_per_done_shard=on_object_store("task_s_per_done_shard"),
        attrs_bytes=local["zarr_json_bytes"],
        attrs_bytes_per_done_shard=local["zarr_json_bytes_per_done_shard"],
        target=args.target,
        prefixes=args.prefixes,
        bandwidth_bytes_per_s=args.bandwidth_gbit * 1e9 / 8,
        record_share=CompletionRecords.RECORD_SHARE,
    )
    as_built = plan(inputs)
    constant = plan(per_shard_records(inputs))
    wall = dataclasses.replace(
        inputs,
        worker_samples_per_s=setups["dask_2"]["steady_samples_per_s"] / 2,
        scheduler_tasks_per_s=sched["tasks_per_s"],
    )
    wall_built, wall_constant = plan(wall), plan(per_shard_records(wall))
    result = {
        "benchmark": "scale",
        **header,
        "measured": measured,
        "assumed": {
            "s3_put_per_prefix_per_s": S3_PUT_PER_PREFIX_S,
            "s3_get_per_prefix_per_s": S3_GET_PER_PREFIX_S,
            "prefixes": args.prefixes,
            "bandwidth_gbit_per_s": args.bandwidth_gbit,
            "workers": "one-thread Dask workers, one per core, each at the samples per CPU second measured "
            "with two Dask workers on this machine's two cores; the scheduler and the coordinator each on a core "
            "of their own, at their measured tasks per CPU second",
        },
        "plan": {"as_built": as_built.to_dict(), "a_record_per_shard": constant.to_dict()},
        "sensitivity": {  # the same plans on the wall-clock rates of this shared machine instead of CPU time
            "worker_samples_per_s_wall": setups["dask_2"]["steady_samples_per_s"] / 2,
            "scheduler_tasks_per_s_wall": sched["tasks_per_s"],
            "hours_as_built": {r.workers: r.hours for r in wall_built.rows},
            "hours_a_record_per_shard": {r.workers: r.hours for r in wall_constant.rows},
        },
        "table": table(as_built, constant),
        "limits_as_built": limits(as_built),
        "limits_a_record_per_shard": limits(constant),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(result["table"] + result["limits_as_built"] + result["limits_a_record_per_shard"]))
    print(f"{as_built.shards:,} shards, {as_built.files:,} files, {as_built.bytes / 1e12:.2f} TB; "
          f"root zarr.json at the end {as_built.attrs_bytes_final / 1e6:.1f} MB; "
          f"run took {result['seconds']:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
