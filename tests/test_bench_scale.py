"""bench/scale.py's plan: the arithmetic of a build at scale, on given measured figures (no build runs)."""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import math
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "bench" / "scale.py"
_SPEC = importlib.util.spec_from_file_location("bench_scale", _PATH)
scale = importlib.util.module_from_spec(_SPEC)
sys.modules["bench_scale"] = scale  # dataclasses look their module up by name
_SPEC.loader.exec_module(scale)

WORKERS = (1, 2, 8, 32, 128, 512, 1024, 4096)


def inputs(**overrides) -> scale.PlanInputs:
    """Round figures of the size bench/scale.py measures; records that do not grow with the store."""
    base = {
        "worker_samples_per_s": 256.0,  # one shard per second per worker
        "startup_s": 10.0,
        "scheduler_tasks_per_s": 1000.0,
        "submit_tasks_per_s": 1e9,
        "put_per_shard": 8.0,
        "get_per_shard": 37.0,
        "bytes_per_sample": 8_000.0,
        "files_per_shard": 7.0,
        "files_fixed": 11.0,
        "record_s": 0.0,
        "target": 1_000_000,
        "workers": WORKERS,
    }
    return scale.PlanInputs(**(base | overrides))


@pytest.mark.parametrize(
    ("target", "shard_size"), [(1, 256), (256, 256), (257, 256), (100_000_000, 256), (1000, 7)]
)
def test_shards_tasks_files_and_bytes_follow_the_layout(target, shard_size):
    p = scale.plan(inputs(target=target, shard_size=shard_size, workers=(1,)))
    assert p.shards == p.tasks == math.ceil(target / shard_size)
    assert p.files == 11 + 7 * p.shards
    assert p.bytes == pytest.approx(8_000.0 * target)


def test_time_falls_with_workers_until_the_named_bottleneck_then_stays_flat():
    p = scale.plan(inputs())
    rows = p.rows
    bottlenecks = [r.bottleneck for r in rows]
    # a shard per second per worker; the GET limit (5,500 / 37 = 149 shards/s) binds first, before the
    # scheduler (1,000/s), the PUT limit (437/s) and the network (1.56 M samples/s)
    assert bottlenecks == ["workers"] * 5 + ["object store GET"] * 3
    for a, b in itertools.pairwise(rows):
        if b.bottleneck == "workers":
            assert b.hours < a.hours * 0.6  # more workers, proportionally less time
        else:
            assert b.hours == pytest.approx(a.hours, rel=1e-9) or a.bottleneck == "workers"
    flat = [r.hours for r in rows if r.bottleneck != "workers"]
    assert max(flat) == pytest.approx(min(flat), rel=1e-9)
    shards_per_s = 5500 / 37
    assert flat[0] * 3600 == pytest.approx(10.0 + p.shards / shards_per_s, rel=1e-3)
    # one worker: a shard per second, start-up added
    assert rows[0].hours * 3600 == pytest.approx(10.0 + p.shards, rel=1e-3)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"scheduler_tasks_per_s": 50.0}, "dask scheduler"),
        ({"put_per_shard": 100.0, "get_per_shard": 1.0}, "object store PUT"),
        ({"bytes_per_sample": 5e6}, "network"),
        ({"record_s": 0.05}, "coordinator"),
        ({"submit_tasks_per_s": 20.0}, "coordinator"),
    ],
)
def test_the_bottleneck_named_is_the_smallest_limit(overrides, expected):
    p = scale.plan(inputs(**overrides))
    last = p.rows[-1]
    assert set(last.limits_samples_per_s) == set(scale.RESOURCES)
    assert last.bottleneck == expected
    assert last.limits_samples_per_s[expected] == min(last.limits_samples_per_s.values())
    for r in p.rows:
        assert r.bottleneck == min(r.limits_samples_per_s, key=r.limits_samples_per_s.get)
        # no build runs faster than its slowest resource allows (start-up aside)
        assert r.samples_per_s <= min(r.limits_samples_per_s.values()) * (1 + 1e-9)


def test_records_that_grow_with_the_store_bound_the_build_by_the_coordinator():
    """Each record costs more as the store fills: the coordinator alone needs sum(a + b j), however many
    workers there are, and the build cannot end before it has recorded the last shard."""
    grown = inputs(record_s=0.001, record_s_per_done_shard=1e-5)
    p = scale.plan(grown)
    k = p.shards
    coordinator = k * 0.001 + 1e-5 * k * (k - 1) / 2 + k / 1e9
    assert p.coordinator_s == pytest.approx(coordinator)
    assert all(r.hours * 3600 >= 10.0 + coordinator for r in p.rows)
    assert p.rows[-1].bottleneck == "coordinator"
    # it idles only while records are quicker than shards arrive (the GET limit: 5,500 / 37 shards/s)
    assert p.rows[-1].hours * 3600 <= 10.0 + coordinator + p.shards / (5500 / 37)
    constant = scale.plan(scale.constant_records(grown))
    assert all(c.hours <= a.hours for a, c in zip(p.rows, constant.rows, strict=True))
    assert constant.coordinator_s == pytest.approx(k * 0.001 + k / 1e9)


def test_batched_records_take_the_coordinator_out_of_the_way():
    """As built: records in batches taking at most a share of the coordinator's time, then one last batch,
    so growing records no longer bound the build; a record per shard does."""
    grown = inputs(record_s=0.001, record_s_per_done_shard=1e-5, submit_tasks_per_s=1000.0)
    batched = scale.plan(dataclasses.replace(grown, record_share=0.1))
    k = batched.shards
    last = 0.001 + 1e-5 * k
    assert batched.coordinator_s == pytest.approx(k / 1000.0 / 0.9 + last)
    assert batched.rows[-1].bottleneck == "object store GET"  # 149 shards/s, before the coordinator's 900/s
    assert batched.rows[-1].hours * 3600 == pytest.approx(10.0 + k / (5500 / 37) + last, rel=1e-3)
    before = scale.plan(scale.per_shard_records(dataclasses.replace(grown, record_share=0.1)))
    assert before.rows[-1].bottleneck == "coordinator" and before.rows[-1].hours > 2 * batched.rows[-1].hours


def test_attributes_that_grow_cost_the_workers_and_the_network():
    p = scale.plan(
        inputs(
            task_open_s_per_done_shard=1e-4,
            attrs_bytes=1e4,
            attrs_bytes_per_done_shard=70.0,
            attrs_transfers_per_shard=4.0,
        )
    )
    k = p.shards
    assert p.attrs_bytes_final == pytest.approx(1e4 + 70.0 * k)
    assert p.attrs_bytes_moved == pytest.approx(4 * (1e4 * k + 70.0 * k * (k - 1) / 2))
    one = p.rows[0]  # one worker: every shard's compute plus its growing open overhead
    assert one.hours * 3600 == pytest.approx(10.0 + k + 1e-4 * k * (k - 1) / 2, rel=1e-3)


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="positive rates"):
        inputs(worker_samples_per_s=0.0)
    with pytest.raises(ValueError, match="worker counts"):
        inputs(workers=(0,))
    p = scale.plan(inputs(workers=(3,)))
    assert dataclasses.asdict(p)["rows"][0]["workers"] == 3
