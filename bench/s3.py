"""Object storage benchmark: the same store written and read on the local file system and on an
S3-protocol server (moto's, on loopback, started here), in one run, alternating, repeated.

- **write**: what a build does per shard, without the generator: a worker opens the store
  (``StoreWriter.open``), writes the shard whole (``write_shard``: encoded locally, one PUT per file),
  and the coordinator records it (``mark_complete``), all under the store's lease; pairs/s.
- **block read**: a reader walks the complete shards in blocks of one shard (``read_block``); pairs/s.
- **build**: ``build-dataset``'s library call end to end (randomised generator, sync scheduler), pairs/s.
- **requests**: every S3 call, counted by kind from s3fs's call log, per shard written (worker and
  coordinator) and per shard read; divided by the shard size, per sample.

moto runs in Python on the same cores as the client: its figures are a floor set by that server, not
what S3 or MinIO would give (they serve requests concurrently, on other machines); the request counts
are the same on any server.

    python bench/s3.py --out bench/results/s3.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from machine import cpu_model  # bench/machine.py (scripts run as python bench/NAME.py)
from store import make_pairs  # bench/store.py

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers.s3 import moto_s3  # the tests' loopback server


class RequestCounter(logging.Handler):
    """Counts s3fs's calls to the server ("CALL: put_object - ..." at debug level), by method."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.calls: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("CALL: "):
            self.calls[str(record.args[0])] += 1

    def take(self) -> Counter[str]:
        calls, self.calls = self.calls, Counter()
        return calls


def write_store(url: str, images, labels, shard: int, counter: RequestCounter) -> dict:
    from synthgen.schemas import CAMUS
    from synthgen.schemas.store_layout import StoreAttrs, StoreLayout
    from synthgen.storage import StoreWriter, delete_store, store_lease, store_state

    layout = StoreLayout(n=len(images), image_shape=images.shape[1:], shard_size=shard)
    with store_lease(url, "bench"):
        if store_state(url) != "absent":
            delete_store(url)
        coordinator = StoreWriter.create(url, StoreAttrs(layout, CAMUS))
        counter.take()
        per_shard: list[Counter[str]] = []
        t = time.perf_counter()
        for k in range(layout.num_shards):
            a, b = layout.shard_bounds(k)
            worker = StoreWriter.open(url)  # as each build task does
            digest = worker.write_shard(k, images[a:b], labels[a:b])
            worker.close()
            coordinator.mark_complete([k], digests={k: digest})
            per_shard.append(counter.take())
        seconds = time.perf_counter() - t
    return {"pairs_per_s": len(images) / seconds, "requests_per_shard": _mean_calls(per_shard)}


def read_store(url: str, shard: int, counter: RequestCounter) -> dict:
    from synthgen.storage import StoreReader

    reader = StoreReader(url)
    counter.take()
    per_shard: list[Counter[str]] = []
    t = time.perf_counter()
    for k in reader.complete_shards:
        reader.read_block(*reader.layout.shard_bounds(k))
        per_shard.append(counter.take())
    seconds = time.perf_counter() - t
    return {"pairs_per_s": reader.num_available / seconds, "requests_per_shard": _mean_calls(per_shard)}


def build_store(url: str, n: int, size: int, shard: int, counter: RequestCounter) -> dict:
    from synthgen.engine.build import RunOptions, build_dataset
    from synthgen.schemas import load_build_config
    from synthgen.storage import delete_store, store_state

    if store_state(url) != "absent":
        delete_store(url)
    config = load_build_config(
        None, {"n": n, "image_size": [size, size], "shard_size": shard, "generator": "randomised"}
    )
    counter.take()
    summary = build_dataset(url, config, RunOptions(scheduler="sync", progress=False))
    calls = counter.take()  # the sync scheduler runs every task here: all of the build's requests
    per_shard = {kind: c / summary.shards_built for kind, c in sorted(calls.items())}
    total = sum(per_shard.values())
    return {"pairs_per_s": summary.samples_per_second, "requests_per_shard": per_shard | {"total": total}}


def _mean_calls(per_shard: list[Counter[str]]) -> dict[str, float]:
    kinds = sorted({kind for c in per_shard for kind in c})
    mean = {kind: statistics.fmean(c[kind] for c in per_shard) for kind in kinds}
    return mean | {"total": sum(mean.values())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1024, help="pairs written and read")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--shard", type=int, default=256)
    p.add_argument("--build-n", type=int, default=256, help="pairs of the end-to-end build")
    p.add_argument("--build-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="bench/results/s3.json")
    args = p.parse_args()

    from synthgen.kernels import warm_up
    from synthgen.storage import use_fast_codecs

    pipeline = use_fast_codecs()
    warm_up()
    counter = RequestCounter()
    log = logging.getLogger("s3fs")
    log.setLevel(logging.DEBUG)
    log.addHandler(counter)
    log.propagate = False
    images, labels = make_pairs(args.n, args.size)
    rows: list[dict] = []
    with moto_s3() as server, tempfile.TemporaryDirectory() as tmp:
        os.environ.update(server.env())
        where = {"local": str(Path(tmp) / "bench.zarr"), "s3": server.url("bench.zarr")}
        built = {"local": str(Path(tmp) / "build.zarr"), "s3": server.url("build.zarr")}
        for repeat in range(args.repeats):
            for name, url in where.items():
                row = {"repeat": repeat, "store": name}
                row["write"] = write_store(url, images, labels, args.shard, counter)
                row["block_read"] = read_store(url, args.shard, counter)
                row["build"] = build_store(built[name], args.build_n, args.build_size, 32, counter)
                rows.append(row)
                print(
                    f"{name:5s} write {row['write']['pairs_per_s']:7.0f} pairs/s, block read "
                    f"{row['block_read']['pairs_per_s']:7.0f} pairs/s, build {row['build']['pairs_per_s']:6.0f} "
                    f"pairs/s; requests per shard: write {row['write']['requests_per_shard'].get('total', 0):.0f}, "
                    f"read {row['block_read']['requests_per_shard'].get('total', 0):.0f}, build "
                    f"{row['build']['requests_per_shard'].get('total', 0):.0f}",
                    flush=True,
                )

    def median(store: str, *path: str) -> float:
        values = []
        for r in rows:
            if r["store"] == store:
                v = r
                for key in path:
                    v = v[key]
                values.append(v)
        return statistics.median(values)

    summary = {}
    for store in ("local", "s3"):
        summary[store] = {
            "write_pairs_per_s": median(store, "write", "pairs_per_s"),
            "block_read_pairs_per_s": median(store, "block_read", "pairs_per_s"),
            "build_pairs_per_s": median(store, "build", "pairs_per_s"),
        }
    s3_rows = [r for r in rows if r["store"] == "s3"]
    write_calls = s3_rows[-1]["write"]["requests_per_shard"]
    read_calls = s3_rows[-1]["block_read"]["requests_per_shard"]
    build_calls = s3_rows[-1]["build"]["requests_per_shard"]
    results = {
        "benchmark": "s3",
        "command": "python bench/s3.py " + " ".join(sys.argv[1:]),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "codec_pipeline": pipeline,
        "server": "moto_server (Python, loopback, same machine), IAM authentication on",
        "n_pairs": args.n,
        "size": [args.size, args.size],
        "shard_size": args.shard,
        "build": {
            "n": args.build_n,
            "size": [args.build_size] * 2,
            "shard_size": 32,
            "generator": "randomised",
        },
        "repeats": args.repeats,
        "median": summary,
        "s3_vs_local": {
            key: summary["s3"][key] / summary["local"][key]
            for key in summary["local"]
            if summary["local"][key]
        },
        "requests_per_shard": {"write": write_calls, "block_read": read_calls, "build": build_calls},
        "requests_per_sample": {
            "write": write_calls["total"] / args.shard,
            "block_read": read_calls["total"] / args.shard,
            "build": build_calls["total"] / 32,
        },
        "raw": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    for store, figures in summary.items():
        print(store, {k: round(v, 1) for k, v in figures.items()})
    print("requests per shard", {k: v["total"] for k, v in results["requests_per_shard"].items()})


if __name__ == "__main__":
    main()
