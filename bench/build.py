"""End-to-end build benchmark: samples per second of `synthgen build-dataset` against its stages alone.

In one run, on one config (the bundled generator at 128 x 128 unless --generator is given):

- each stage alone on one worker: label drawing (source + deformation + gate), generation, post-processing
  plus the shard write; and generation alone on ``--workers`` processes (the slowest stage);
- the whole build on 1 and on ``--workers`` local processes; the ratio of the build to the slowest stage
  alone (target >= 0.85) and of 2 workers to 1 (target >= 1.7);
- peak memory (max RSS of any process of the build) for ``--n`` and ``10 x --n`` samples (``--memory``);
- the time 1,000,000 samples would take at the measured rate.

    python bench/build.py --n 2048 --out bench/results/build.json [--memory]
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
    from synthgen.engine.store import StoreWriter

    torch.set_num_threads(1)
    config = _config(args, n)
    indices = np.arange(n)
    gen = pipeline.generator(config)
    attrs = pipeline.store_attrs(config)
    pipeline.warm_generator(config, gen, attrs.intensity)
    t = time.perf_counter()
    drawn = pipeline.draw_labels(config, indices)
    labels_s = time.perf_counter() - t
    styles = pipeline.draw_styles(config, indices, gen.style_dim)
    times: Counter[str] = Counter()
    images = pipeline.generate_images(config, gen, drawn["labels"], styles, attrs.intensity, times)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        writer = StoreWriter.create(str(Path(d) / "w.zarr"), attrs)
        for k in range(attrs.layout.num_shards):
            a, b = attrs.layout.shard_bounds(k)
            meta = {m.name: np.zeros((b - a, *m.shape), m.dtype) for m in attrs.layout.meta}
            writer.write_shard(k, images[a:b], drawn["labels"][a:b], meta)
        write_s = time.perf_counter() - t + times["postprocess"]
    generate_s = times["generate"]
    return {
        "labels": n / labels_s,
        "generate": n / generate_s,
        "postprocess_and_write": n / write_s,
        "backend": gen.backend,
    }


def _generate_worker(args, n: int, queue) -> None:
    queue.put(_stage_times_generate_only(args, n))


def _stage_times_generate_only(args, n: int) -> float:
    import torch

    from synthgen.engine import pipeline

    torch.set_num_threads(1)
    config = _config(args, n)
    gen = pipeline.generator(config)
    intensity = pipeline.store_attrs(config).intensity
    labels = pipeline.draw_labels(config, np.arange(min(n, 64)))["labels"]
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


def _build(args, n: int, workers: int, workdir: str) -> dict[str, float]:
    """The whole build through the CLI in a child process: samples per second and peak RSS."""
    out = str(Path(workdir) / f"b{n}_{workers}.zarr")
    cmd = [
        sys.executable, "-m", "synthgen.cli", "build-dataset", "--out", out, "--n", str(n), "--seed", "0",
        "--workers", str(workers), "--scheduler", "processes", "--backend", args.backend,
        "--batch-size", str(args.batch_size), "--quiet", "--overwrite",
    ]  # fmt: skip
    if args.generator:
        cmd += ["--generator", args.generator]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    seconds = time.perf_counter() - t
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"samples_per_s": n / seconds, "seconds": seconds, "peak_rss_mb": max(peak_kb, before) / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2048, help="samples per build (a multiple of the shard size)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--generator", default=None, help="checkpoint folder (default: the bundled generator)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--memory", action="store_true", help="also peak memory at --n and 10 x --n samples")
    p.add_argument("--out", default="bench/results/build.json")
    args = p.parse_args()

    stages = _stage_times(args, min(args.n, 512))
    backend = stages.pop("backend")
    slowest = min(stages, key=stages.get)
    with tempfile.TemporaryDirectory() as d:
        gen_parallel = statistics.median(
            _generate_parallel(args, args.n, args.workers) for _ in range(args.repeats)
        )
        one = [_build(args, args.n, 1, d) for _ in range(args.repeats)]
        many = [_build(args, args.n, args.workers, d) for _ in range(args.repeats)]
        memory = {}
        if args.memory:
            memory = {str(n): _build(args, n, args.workers, d) for n in (args.n, 10 * args.n)}
    one_rate = statistics.median(r["samples_per_s"] for r in one)
    many_rate = statistics.median(r["samples_per_s"] for r in many)
    result = {
        "benchmark": "build",
        "n": args.n,
        "workers": args.workers,
        "backend": backend,
        "cpu_count": os.cpu_count(),
        "stage_alone_one_worker_samples_per_s": stages,
        "slowest_stage": slowest,
        "generate_alone_workers_samples_per_s": gen_parallel,
        "build_one_worker_samples_per_s": one_rate,
        "build_workers_samples_per_s": many_rate,
        # same worker count on both sides: one worker, the build against its slowest stage alone
        "ratio_build_vs_slowest_stage_alone_one_worker": one_rate / stages[slowest],
        "ratio_workers_vs_one": many_rate / one_rate,
        "hours_for_1M_samples": 1_000_000 / many_rate / 3600,
        "targets_met": {
            "build_ge_0.85_slowest_stage": one_rate / stages[slowest] >= 0.85,
            "workers_ge_1.7x_one": many_rate / one_rate >= 1.7,
        },
        "peak_memory": memory,
        "raw": {"one": one, "workers": many},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "raw"}, indent=2))


if __name__ == "__main__":
    main()
