"""End-to-end build benchmark: samples per second of `synthgen build-dataset` against its stages alone.

In one run, on one config (the bundled generator at 128 x 128 unless --generator is given):

- each stage alone on one worker: label drawing (source + deformation + gate), generation, post-processing
  plus the shard write; and generation alone on ``--workers`` processes (the slowest stage);
- the whole build through the CLI on 1 and on ``--workers`` local processes, on 1 process held to
  one core (``sched_setaffinity``), and on ``--workers`` threads of one process (the default local
  scheduler): total samples per second, and the steady rate, the marginal rate between a build of
  ``--n`` samples and one of ``--base`` samples (start-up, imports, kernel cache loads and generator
  sessions cancel out; they are reported apart as ``startup_s``);
- start-up, cold and warm: a 1,000-sample build with the default scheduler, first with empty Numba
  and ONNX caches (a fresh installation: ``NUMBA_CACHE_DIR`` and ``SYNTHGEN_CACHE_DIR`` pointed at new
  folders), then again with them filled; its wall time end to end and its start-up (wall time less
  1,000 samples at the steady rate); and what 100,000 samples take at the measured start-up and rate;
- the ratio of the one-worker build to its slowest stage alone (target >= 0.85), and of ``--workers``
  workers to one worker: against one worker on all cores, and against one worker held to one core (a
  worker per core; one unrestricted worker already overlaps its stages over both cores of this machine);
- peak memory (max RSS of any process of the build) for ``--n`` and ``10 x --n`` samples (``--memory``);
- the time 1,000,000 samples would take at the measured rate.

    python bench/build.py --n 4096 --out bench/results/build.json [--memory]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model


def _config(args, n: int):
    from synthgen.schemas.build_config import load_build_config

    overrides = {"n": n, "seed": 0, "backend": args.backend, "batch_size": args.batch_size}
    if args.generator:
        overrides["generator"] = args.generator
    return load_build_config(None, overrides)


def _stage_times(args, n: int) -> dict[str, float]:
    """Each stage alone, one worker, on the same samples: samples per second."""
    import torch

    from synthgen.engine import pipeline
    from synthgen.storage import StoreWriter, use_fast_codecs

    use_fast_codecs()  # as the build's own processes do

    torch.set_num_threads(1)
    config = _config(args, n)
    indices = np.arange(n)
    gen = pipeline.generator(config)
    attrs = pipeline.store_attrs(config)
    pipeline.warm_generator(config, gen, attrs.intensity)
    pipeline.label_source(config)  # kernel warm-up and source set-up, outside the timing
    t = time.perf_counter()
    drawn = pipeline.draw_labels(config, indices)
    labels_s = time.perf_counter() - t
    styles = pipeline.draw_styles(config, indices, gen.style_dim)
    times: Counter[str] = Counter()
    images, _ = pipeline.generate_images(config, gen, drawn.labels, styles, attrs.intensity, times)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        writer = StoreWriter.create(str(Path(d) / "w.zarr"), attrs)
        for k in range(attrs.layout.num_shards):
            a, b = attrs.layout.shard_bounds(k)
            meta = {m.name: np.zeros((b - a, *m.shape), m.dtype) for m in attrs.layout.meta}
            writer.write_shard(k, images[a:b], drawn.labels[a:b], meta)
        write_s = time.perf_counter() - t + times["postprocess"]
    generate_s = times["generate"]
    return {
        "labels": n / labels_s,
        "generate": n / generate_s,
        "postprocess_and_write": n / write_s,
        "backend": gen.backend,
    }


def _stage_median(args, n: int) -> dict[str, float]:
    """Median over ``--repeats`` of each stage alone."""
    runs = [_stage_times(args, n) for _ in range(args.repeats)]
    out: dict = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "backend"}
    return out | {"backend": runs[0]["backend"]}


def _generate_worker(args, n: int, queue) -> None:
    queue.put(_stage_times_generate_only(args, n))


def _stage_times_generate_only(args, n: int) -> float:
    import torch

    from synthgen.engine import pipeline

    torch.set_num_threads(1)
    config = _config(args, n)
    gen = pipeline.generator(config)
    intensity = pipeline.store_attrs(config).intensity
    labels = pipeline.draw_labels(config, np.arange(min(n, 64))).labels
    labels = np.resize(labels, (n, *labels.shape[1:]))
    styles = pipeline.draw_styles(config, np.arange(n), gen.style_dim)
    pipeline.warm_generator(config, gen, intensity)
    times: Counter[str] = Counter()
    pipeline.generate_images(config, gen, labels, styles, intensity, times)
    return times["generate"]


def _generate_parallel(args, n: int, workers: int) -> float:
    """Generation alone in ``workers`` spawned processes at once: total samples per second."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    per = n // workers
    procs = [ctx.Process(target=_generate_worker, args=(args, per, queue)) for _ in range(workers)]
    for p in procs:
        p.start()
    seconds = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return per * workers / max(seconds)


def _build(
    args,
    n: int,
    workers: int,
    workdir: str,
    cores: set[int] | None = None,
    scheduler: str = "processes",
    env: dict[str, str] | None = None,
) -> dict[str, float]:
    """The whole build through the CLI in a child process (held to ``cores`` if given): samples per
    second and peak RSS."""
    out = str(Path(workdir) / f"b{n}_{workers}_{scheduler}.zarr")
    cmd = [
        sys.executable, "-m", "synthgen.cli", "build-dataset", "--out", out, "--n", str(n), "--seed", "0",
        "--workers", str(workers), "--scheduler", scheduler, "--backend", args.backend,
        "--batch-size", str(args.batch_size), "--quiet", "--overwrite",
    ]  # fmt: skip
    if args.generator:
        cmd += ["--generator", args.generator]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
    t = time.perf_counter()
    subprocess.run(
        cmd, check=True, capture_output=True, preexec_fn=pin, env=None if env is None else os.environ | env
    )
    seconds = time.perf_counter() - t
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"samples_per_s": n / seconds, "seconds": seconds, "peak_rss_mb": max(peak_kb, before) / 1024}


DEFAULT_SETUP = "threads"  # what `synthgen build-dataset` runs with no --scheduler or --workers


def _startup(args, workdir: str, setup: tuple, runs: list[dict]) -> dict[str, dict[str, float]]:
    """A 1,000-sample build on the default setup with cold caches, then warm (medians of
    ``--repeats``): seconds end to end and start-up (less 1,000 samples at the steady rate)."""
    workers, cores, scheduler = setup
    steady = statistics.median(r["steady_samples_per_s"] for r in runs)
    n = 1000
    cold, warm = [], []
    for k in range(args.repeats):
        caches = Path(workdir) / f"caches{k}"
        env = {"NUMBA_CACHE_DIR": str(caches / "numba"), "SYNTHGEN_CACHE_DIR": str(caches / "synthgen")}
        cold.append(_build(args, n, workers, workdir, cores, scheduler, env)["seconds"])
        warm.append(_build(args, n, workers, workdir, cores, scheduler, env)["seconds"])
    out = {}
    for name, seconds in (("cold", cold), ("warm", warm)):
        s = statistics.median(seconds)
        out[name] = {"seconds": s, "startup_s": s - n / steady, "raw_seconds": seconds}
    out["hours_for_100k_samples_warm"] = (out["warm"]["startup_s"] + 100_000 / steady) / 3600
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2048, help="samples per build (a multiple of the shard size)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--generator", default=None, help="checkpoint folder (default: the bundled generator)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--base", type=int, default=512, help="the small build the steady rate is taken against")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--memory", action="store_true", help="also peak memory at --n and 10 x --n samples")
    p.add_argument("--out", default="bench/results/build.json")
    args = p.parse_args()

    stages = _stage_median(args, min(args.n, 1024))
    backend = stages.pop("backend")
    slowest = min(stages, key=stages.get)
    setups = {
        "one_worker": (1, None, "processes"),
        "one_worker_one_core": (1, {0}, "processes"),
        "workers": (args.workers, None, "processes"),
        "threads": (args.workers, None, "threads"),
    }
    builds: dict[str, list[dict]] = {name: [] for name in setups}
    with tempfile.TemporaryDirectory() as d:
        gen_parallel = statistics.median(
            _generate_parallel(args, args.n, args.workers) for _ in range(args.repeats)
        )
        for _ in range(args.repeats):  # interleaved, so that drifts of the machine hit every setup alike
            for name, (workers, cores, scheduler) in setups.items():
                small = _build(args, args.base, workers, d, cores, scheduler)
                big = _build(args, args.n, workers, d, cores, scheduler)
                steady = (args.n - args.base) / (big["seconds"] - small["seconds"])
                startup = big["seconds"] - args.n / steady
                builds[name].append(big | {"steady_samples_per_s": steady, "startup_s": startup})
        startup = _startup(args, d, setups[DEFAULT_SETUP], builds[DEFAULT_SETUP])
        memory = {}
        if args.memory:
            memory = {str(n): _build(args, n, args.workers, d) for n in (args.n, 10 * args.n)}

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in builds[name])

    steady = {name: med(name, "steady_samples_per_s") for name in setups}
    total = {name: med(name, "samples_per_s") for name in setups}
    ratios = {
        "build_vs_slowest_stage_alone_one_worker_steady": steady["one_worker"] / stages[slowest],
        "build_vs_slowest_stage_alone_one_worker_total": total["one_worker"] / stages[slowest],
        "workers_vs_one_worker_one_core_steady": steady["workers"] / steady["one_worker_one_core"],
        "workers_vs_one_worker_all_cores_steady": steady["workers"] / steady["one_worker"],
        "workers_vs_one_worker_all_cores_total": total["workers"] / total["one_worker"],
        "threads_vs_workers_steady": steady["threads"] / steady["workers"],
        "threads_vs_workers_total": total["threads"] / total["workers"],
    }
    result = {
        "benchmark": "build",
        "cpu": cpu_model(),
        "n": args.n,
        "base": args.base,
        "workers": args.workers,
        "backend": backend,
        "cpu_count": os.cpu_count(),
        "stage_alone_one_worker_samples_per_s": stages,
        "slowest_stage": slowest,
        "generate_alone_workers_samples_per_s": gen_parallel,
        "build_steady_samples_per_s": steady,
        "build_total_samples_per_s": total,
        "startup_s": {name: med(name, "startup_s") for name in setups},
        "default_scheduler": f"{setups[DEFAULT_SETUP][2]}, {setups[DEFAULT_SETUP][0]} workers",
        "startup_1000_samples": startup,
        "ratios": ratios,
        "hours_for_1M_samples": 1_000_000 / steady[DEFAULT_SETUP] / 3600,
        "targets_met": {
            "build_ge_0.85_slowest_stage (steady, one worker)": ratios[
                "build_vs_slowest_stage_alone_one_worker_steady"
            ]
            >= 0.85,
            "workers_ge_1.7x_one (steady, a worker per core)": ratios["workers_vs_one_worker_one_core_steady"]
            >= 1.7,
            "workers_ge_1.7x_one (steady, one worker on all cores)": ratios[
                "workers_vs_one_worker_all_cores_steady"
            ]
            >= 1.7,
            "startup_warm_lt_2_s": startup["warm"]["startup_s"] < 2.0,
            "build_1000_warm_lt_5_s": startup["warm"]["seconds"] < 5.0,
            "steady_ge_1000_per_s (default scheduler)": steady[DEFAULT_SETUP] >= 1000,
        },
        "peak_memory": memory,
        "raw": builds,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "raw"}, indent=2))


if __name__ == "__main__":
    main()
