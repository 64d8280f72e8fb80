"""Loader benchmark: pairs per second through a DataLoader over a store, vs an in-memory NumPy dataset.

Same run, same batch size, same pair size; the store is read with 0, 1 and 2 DataLoader workers.

    python bench/loader.py --n 8192 --out bench/results/loader.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store import make_pairs

from synthgen.schemas import CAMUS
from synthgen.schemas.store_layout import StoreAttrs, StoreLayout
from synthgen.storage.loader import LoaderConfig, StoreStream, make_loader
from synthgen.storage.store import StoreWriter, use_fast_codecs


class InMemoryBatches(Dataset):
    """The baseline: the whole dataset as NumPy arrays, shuffled batches sliced out by index."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int) -> None:
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.order = np.random.default_rng(0).permutation(len(images))

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, b: int) -> dict[str, torch.Tensor]:
        idx = np.sort(self.order[b * self.batch_size : (b + 1) * self.batch_size])
        images = self.images[idx].astype(np.float32)[:, None] / 255.0
        return {
            "image": torch.from_numpy(images),
            "label": torch.from_numpy(self.labels[idx].astype(np.int64)),
        }


def drain(loader) -> float:
    t = time.perf_counter()
    n = sum(len(batch["label"]) for batch in loader)
    return n / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=8192)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="bench/results/loader.json")
    args = p.parse_args()
    use_fast_codecs()  # DataLoader workers follow (StoreStream)
    images, labels = make_pairs(args.n, args.size)
    with tempfile.TemporaryDirectory() as d:
        url = str(Path(d) / "loader.zarr")
        layout = StoreLayout(n=args.n, image_shape=(args.size, args.size), shard_size=256)
        writer = StoreWriter.create(url, StoreAttrs(layout, CAMUS))
        for k in range(layout.num_shards):
            a, b = layout.shard_bounds(k)
            writer.write_shard(k, images[a:b], labels[a:b])
        writer.mark_complete(range(layout.num_shards))
        memory = InMemoryBatches(images, labels, args.batch_size)
        rows: dict[str, list[float]] = {"in_memory_numpy": []}
        for _ in range(args.repeats):
            rows["in_memory_numpy"].append(drain(DataLoader(memory, batch_size=None, shuffle=True)))
        for as_float in (True, False):
            for workers in (0, 1, 2):
                stream = StoreStream(url, LoaderConfig(batch_size=args.batch_size, as_float=as_float))
                loader = make_loader(stream, num_workers=workers, persistent_workers=workers > 0)
                drain(loader)  # warm-up epoch: starts the workers
                name = f"store_{workers}_workers_{'float32' if as_float else 'uint8'}"
                rows[name] = [drain(loader) for _ in range(args.repeats)]
    medians = {k: statistics.median(v) for k, v in rows.items()}
    base = medians["in_memory_numpy"]
    result = {
        "benchmark": "loader",
        "n_pairs": args.n,
        "size": [args.size, args.size],
        "batch_size": args.batch_size,
        "cpu_count": os.cpu_count(),
        "pairs_per_s_median": medians,
        "ratio_vs_in_memory": {k: v / base for k, v in medians.items()},
        "target_10000_pairs_per_s_met": {k: v >= 10_000 for k, v in medians.items() if k.startswith("store")},
        "raw": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    for k, v in medians.items():
        print(f"{k:22s} {v:9.0f} pairs/s  ({v / base:.2f}x in-memory)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
