"""Store benchmark: write and read N pairs of 256 x 256 through the synthgen store vs numpy.memmap.

Every figure is measured in the same run against the memmap baseline, repeated, and reported as the
median with ratios. The codec pipelines (zarr-python's own and ``zarrs``) are measured in separate child
processes, since a process picks its pipeline once.

    python bench/store.py --n 4096 --repeats 3 --out bench/results/store.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_pairs(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Label maps with a walled cavity and an atrium, and speckled images that follow them."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32) / size
    labels = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        cy, cx = 0.4 + rng.uniform(-0.05, 0.05), 0.5 + rng.uniform(-0.05, 0.05)
        r2 = (yy - cy) ** 2 + ((xx - cx) * 1.6) ** 2
        labels[i][r2 < 0.09] = 2
        labels[i][r2 < 0.05] = 1
        labels[i][((yy - cy - 0.35) ** 2 + (xx - cx) ** 2) < 0.012] = 3
    brightness = np.array([30, 60, 160, 70], np.float32)
    images = brightness[labels] * rng.rayleigh(1.0, labels.shape).astype(np.float32)
    return np.clip(images, 0, 255).astype(np.uint8), labels


def bench_memmap(images, labels, shard: int, workdir: Path) -> dict[str, float]:
    n = len(images)
    t = time.perf_counter()
    mi = np.lib.format.open_memmap(workdir / "images.npy", "w+", np.uint8, images.shape)
    ml = np.lib.format.open_memmap(workdir / "labels.npy", "w+", np.uint8, labels.shape)
    for s in range(0, n, shard):
        mi[s : s + shard] = images[s : s + shard]
        ml[s : s + shard] = labels[s : s + shard]
    mi.flush()
    ml.flush()
    del mi, ml
    write = n / (time.perf_counter() - t)
    mi = np.load(workdir / "images.npy", mmap_mode="r")
    ml = np.load(workdir / "labels.npy", mmap_mode="r")
    t = time.perf_counter()
    for s in range(0, n, shard):
        np.array(mi[s : s + shard]), np.array(ml[s : s + shard])
    block = n / (time.perf_counter() - t)
    return {"write_pairs_per_s": write, "block_read_pairs_per_s": block}


def bench_store(images, labels, shard: int, workdir: Path, n_random: int) -> dict[str, float]:
    from synthgen.schemas import CAMUS
    from synthgen.schemas.store_layout import StoreAttrs, StoreLayout
    from synthgen.storage.store import StoreReader, StoreWriter, use_fast_codecs

    pipeline = use_fast_codecs()  # "python" where SYNTHGEN_CODEC_PIPELINE=python
    n, size = len(images), images.shape[-1]
    url = str(workdir / "bench.zarr")
    layout = StoreLayout(n=n, image_shape=(size, size), shard_size=shard)
    t = time.perf_counter()
    writer = StoreWriter.create(url, StoreAttrs(layout, CAMUS), overwrite=True)
    for k in range(layout.num_shards):
        a, b = layout.shard_bounds(k)
        writer.write_shard(k, images[a:b], labels[a:b])
    writer.mark_complete(range(layout.num_shards))
    write = n / (time.perf_counter() - t)
    reader = StoreReader(url)
    t = time.perf_counter()
    for _ in reader.iter_shards():
        pass
    block = n / (time.perf_counter() - t)
    rng = np.random.default_rng(1)
    t = time.perf_counter()
    for i in rng.integers(0, n, n_random):
        reader.read_sample(int(i))
    random = n_random / (time.perf_counter() - t)
    size_bytes = sum(f.stat().st_size for f in Path(url).rglob("*") if f.is_file())
    ts = bench_tensorstore_reads(url, n, shard, n_random)
    raw = images.nbytes + labels.nbytes
    return {
        "pipeline": pipeline,
        "write_pairs_per_s": write,
        "block_read_pairs_per_s": block,
        "random_read_pairs_per_s": random,
        "compression_ratio": raw / size_bytes,
        **ts,
    }


def bench_tensorstore_reads(url: str, n: int, shard: int, n_random: int) -> dict[str, float]:
    """The same store read through tensorstore (the other candidate reader), where it is installed."""
    try:
        import tensorstore as ts
    except ImportError:
        return {}
    arrays = [
        ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": f"{url}/{name}"}}).result()
        for name in ("images", "labels")
    ]
    t = time.perf_counter()
    for s in range(0, n, shard):
        for a in arrays:
            a[s : s + shard].read().result()
    block = n / (time.perf_counter() - t)
    rng = np.random.default_rng(1)
    t = time.perf_counter()
    for i in rng.integers(0, n, n_random):
        for a in arrays:
            a[int(i)].read().result()
    return {
        "tensorstore_block_read_pairs_per_s": block,
        "tensorstore_random_read_pairs_per_s": n_random / (time.perf_counter() - t),
    }


def child(args: argparse.Namespace) -> None:
    images, labels = make_pairs(args.n, args.size)
    with tempfile.TemporaryDirectory(dir=args.workdir) as d:
        work = Path(d)
        rows = []
        for _ in range(args.repeats):
            row = {"memmap": bench_memmap(images, labels, args.shard, work)}
            row["store"] = bench_store(images, labels, args.shard, work, args.random)
            rows.append(row)
            shutil.rmtree(work / "bench.zarr", ignore_errors=True)
    print(json.dumps(rows))


def median_of(rows: list[dict], *path: str) -> float:
    return statistics.median(r[path[0]][path[1]] for r in rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--shard", type=int, default=256)
    p.add_argument("--random", type=int, default=500, help="random single-sample reads")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workdir", default=None, help="where temporary stores go (default: system temp)")
    p.add_argument("--out", default="bench/results/store.json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    results: dict[str, object] = {
        "benchmark": "store",
        "n_pairs": args.n,
        "size": [args.size, args.size],
        "shard_size": args.shard,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "pipelines": {},
    }
    cmd = [sys.executable, __file__, "--child", *sys.argv[1:]]
    for pipeline in ("python", "zarrs"):
        env = os.environ | {"SYNTHGEN_CODEC_PIPELINE": pipeline}
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        rows = json.loads(out.strip().splitlines()[-1])
        actual = rows[0]["store"]["pipeline"]
        mm_w, mm_r = (
            median_of(rows, "memmap", "write_pairs_per_s"),
            median_of(rows, "memmap", "block_read_pairs_per_s"),
        )
        st = {k: median_of(rows, "store", k) for k in rows[0]["store"] if k != "pipeline"}
        results["pipelines"][pipeline] = {
            "pipeline_used": actual,
            "memmap_write_pairs_per_s": mm_w,
            "memmap_block_read_pairs_per_s": mm_r,
            **{f"store_{k}": v for k, v in st.items()},
            "write_ratio_vs_memmap": st["write_pairs_per_s"] / mm_w,
            "block_read_ratio_vs_memmap": st["block_read_pairs_per_s"] / mm_r,
            "targets_met": {
                "write_ge_0.5x_memmap": st["write_pairs_per_s"] >= 0.5 * mm_w,
                "block_read_ge_5000_per_s": st["block_read_pairs_per_s"] >= 5000,
            },
            "raw": rows,
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    for name, r in results["pipelines"].items():
        print(
            f"{name:7s} write {r['store_write_pairs_per_s']:8.0f}/s ({r['write_ratio_vs_memmap']:.2f}x memmap "
            f"{r['memmap_write_pairs_per_s']:.0f}/s)  block read {r['store_block_read_pairs_per_s']:8.0f}/s  "
            f"random read {r['store_random_read_pairs_per_s']:6.0f}/s  compression {r['store_compression_ratio']:.1f}x"
        )
    ts_block = results["pipelines"]["zarrs"].get("store_tensorstore_block_read_pairs_per_s")
    if ts_block:
        ts_random = results["pipelines"]["zarrs"]["store_tensorstore_random_read_pairs_per_s"]
        print(f"tensorstore reads of the same store: block {ts_block:8.0f}/s  random {ts_random:6.0f}/s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
