"""The coordinator records finished shards in batches once records grow costly, and never loses one."""

from __future__ import annotations

import time

import numpy as np
import zarr
from helpers.checkpoints import random_checkpoint

from synthgen.engine.build import CompletionRecords, RunOptions, build_dataset
from synthgen.schemas import CAMUS
from synthgen.schemas.build_config import load_build_config
from synthgen.storage.store import StoreReader, StoreWriter


class Clock:
    """A clock that moves only when told (the machine's load cannot change what the tests see)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SlowWriter:
    """Stands in for a StoreWriter whose every record costs ``cost`` seconds of ``clock``."""

    def __init__(self, cost: float, clock: Clock) -> None:
        self.cost = cost
        self.clock = clock
        self.calls: list[list[int]] = []

    def mark_complete(self, shards, digests=None):
        self.clock.now += self.cost
        self.calls.append(sorted(shards))
        assert sorted(digests) == sorted(shards)


def test_cheap_records_are_written_at_once():
    clock = Clock()
    writer = SlowWriter(0.0, clock)
    records = CompletionRecords(writer, clock)
    for k in range(5):
        records.add(k, f"d{k}")
        clock.now += 0.002
    assert writer.calls == [[0], [1], [2], [3], [4]]


def test_costly_records_are_batched_to_a_share_of_the_time_and_the_rest_flushed():
    clock = Clock()
    writer = SlowWriter(0.05, clock)
    records = CompletionRecords(writer, clock)
    for k in range(40):
        records.add(k, f"d{k}")
        clock.now += 0.01
    records.flush()
    spent = clock.now
    assert [k for c in writer.calls for k in c] == list(range(40))  # every shard once, in order
    assert writer.calls[0] == [0] and len(writer.calls) < 40 / 3
    # at most the share between two writes, plus the first write and the final flush
    assert len(writer.calls) * writer.cost <= CompletionRecords.RECORD_SHARE * spent + 2 * writer.cost
    records.flush()
    assert len([k for c in writer.calls for k in c]) == 40  # nothing pending: no write


def test_a_build_with_costly_records_records_every_shard_and_tasks_skip_the_root(tmp_path, monkeypatch):
    checkpoint = random_checkpoint(
        tmp_path / "gen", "pix2pix", CAMUS, image_size=16, width=4, max_width=8, depth=3
    )
    config = load_build_config(
        None,
        {"n": 48, "image_size": [16, 16], "shard_size": 4, "generator": str(checkpoint), "batch_size": 4},
    )
    calls = []
    real_mark = StoreWriter.mark_complete

    def slow_mark(self, shards, *args, **kwargs):
        calls.append(sorted(shards))
        time.sleep(0.2)  # as a store of hundreds of thousands of shards costs
        return real_mark(self, shards, *args, **kwargs)

    opened = []
    real_open = StoreWriter.open
    monkeypatch.setattr(StoreWriter, "mark_complete", slow_mark)
    monkeypatch.setattr(
        StoreWriter, "open", classmethod(lambda cls, url: opened.append(url) or real_open(url))
    )
    out = str(tmp_path / "b.zarr")
    summary = build_dataset(out, config, RunOptions(scheduler="sync", progress=False))
    assert summary.shards_built == 12 and [k for c in calls for k in c] == list(range(12)) and len(calls) < 12
    reader = StoreReader(out)
    assert reader.attrs.complete_shards == tuple(range(12)) and len(reader.attrs.shard_digests) == 12
    assert "completed" in reader.attrs.provenance
    assert opened == []  # no shard task read the root attributes
    images = zarr.open_group(out, mode="r")["images"][:]
    assert images.shape == (48, 16, 16) and np.count_nonzero(images.reshape(48, -1).max(axis=1)) == 48
