"""What the integrity layer costs on store writes: StoreWriter (shards encoded in scratch and renamed into
place, content digests, zstd checksums) against plain sharded Zarr writes of the same arrays, as
StoreWriter wrote them before (one ``array[start:stop] = shard`` per array, no checksum), in the same
run, alternating, on tmpfs where the machine has one (disk writeback would otherwise dominate).

    python bench/integrity.py --out bench/results/integrity.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import cpu_model  # bench/machine.py (scripts run as python bench/NAME.py)


def pairs(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.zeros((n, size, size), np.uint8)
    labels[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    labels[:, 3 * size // 8 : 5 * size // 8, 3 * size // 8 : 5 * size // 8] = 2
    images = (rng.random((n, size, size)) * 40 + labels * 60).astype(np.uint8)
    return images, labels


def plain_zarr(images, labels, shard: int, folder: str) -> None:
    import zarr
    from zarr.codecs import ZstdCodec

    root = zarr.open_group(zarr.storage.LocalStore(folder), mode="w", zarr_format=3)
    size = images.shape[-1]
    spec = dict(dtype="uint8", chunks=(1, size, size), shards=(shard, size, size), fill_value=0)
    arrays = [
        root.create_array(name, shape=images.shape, compressors=ZstdCodec(level=1), **spec)
        for name in ("images", "labels")
    ]
    for k in range(len(images) // shard):
        for array, data in zip(arrays, (images, labels), strict=True):
            array[k * shard : (k + 1) * shard] = data[k * shard : (k + 1) * shard]


def store_writer(images, labels, shard: int, folder: str) -> None:
    from synthgen.schemas import CAMUS, StoreAttrs, StoreLayout
    from synthgen.storage import StoreWriter

    layout = StoreLayout(n=len(images), image_shape=images.shape[1:], shard_size=shard)
    writer = StoreWriter.create(folder, StoreAttrs(layout, CAMUS))
    digests = {
        k: writer.write_shard(k, images[k * shard : (k + 1) * shard], labels[k * shard : (k + 1) * shard])
        for k in range(layout.num_shards)
    }
    writer.mark_complete(digests, digests=digests)
    writer.close()


def timed(fn, images, labels, shard: int, workdir: str) -> tuple[float, float]:
    folder = tempfile.mkdtemp(dir=workdir)
    try:
        t, c = time.perf_counter(), time.process_time()
        fn(images, labels, shard, f"{folder}/s.zarr")
        return len(images) / (time.perf_counter() - t), len(images) / (time.process_time() - c)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(f"{folder}/s.zarr.synthgen-scratch", ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--shard", type=int, default=256)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--workdir", default="/dev/shm" if Path("/dev/shm").is_dir() else None)
    p.add_argument("--out", default="bench/results/integrity.json")
    args = p.parse_args()
    from synthgen.storage import use_fast_codecs

    pipeline = use_fast_codecs()
    images, labels = pairs(args.n, args.size)
    runs: dict[str, list[tuple[float, float]]] = {"plain_zarr": [], "store_writer": []}
    for _ in range(args.repeats):  # alternating, so that both see the same machine
        runs["plain_zarr"].append(timed(plain_zarr, images, labels, args.shard, args.workdir))
        runs["store_writer"].append(timed(store_writer, images, labels, args.shard, args.workdir))
    medians = {
        name: {
            "pairs_per_s": statistics.median(r[0] for r in rs),
            "pairs_per_cpu_s": statistics.median(r[1] for r in rs),
        }
        for name, rs in runs.items()
    }
    ratios = [w[0] / p[0] for w, p in zip(runs["store_writer"], runs["plain_zarr"], strict=True)]
    result = {
        "benchmark": "integrity",
        "cpu": cpu_model(),
        "codec_pipeline": pipeline,
        "n": args.n,
        "size": args.size,
        "shard": args.shard,
        "workdir": args.workdir,
        "medians": medians,
        "store_writer_vs_plain_zarr": {
            "median_of_paired_ratios": statistics.median(ratios),
            "paired_ratios": ratios,
        },
        "target_met": {"write_cost_le_10pct": statistics.median(ratios) >= 0.90},
        "raw": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(
        json.dumps(
            {k: result[k] for k in ("cpu", "medians", "store_writer_vs_plain_zarr", "target_met")}, indent=1
        )
    )


if __name__ == "__main__":
    main()
