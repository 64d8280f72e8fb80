"""Growing a build: ``build-dataset --n M`` on a store of the same build of fewer samples extends it into
the bytes of a fresh build of M (the partial last shard rebuilt whole), refuses to shrink it, survives
kill -9, and never lets a reader count a shard that does not hold all its samples.

zarrs encodes a shard's chunks concurrently, so the order of the chunks inside a shard file differs
from one run to the next (their bytes, the shard's digest and the arrays do not): these tests write
with zarr-python's codec pipeline, whose shard files are byte-for-byte reproducible, except one that
checks the growth under zarrs by its digests and arrays.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from helpers.checkpoints import random_checkpoint
from helpers.processes import kill_after_lease

from synthgen.cli import cli
from synthgen.errors import IncompleteShardError, StoreError
from synthgen.schemas import CAMUS
from synthgen.storage import StoreReader, StoreWriter, acquire_lease, release_lease
from synthgen.storage.integrity import LEASE_SUFFIX

SIZE = 32
PYTHON_PIPELINE = "zarr.core.codec_pipeline.BatchedCodecPipeline"


@pytest.fixture(autouse=True)
def python_codecs(monkeypatch):
    """zarr-python's codec pipeline in this process and in the commands it starts."""
    monkeypatch.setenv("SYNTHGEN_CODEC_PIPELINE", "python")
    with zarr.config.set({"codec_pipeline.path": PYTHON_PIPELINE}):
        yield


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("gen") / "spade", "spade", CAMUS, image_size=SIZE)


def build_args(checkpoint, out, n) -> list[str]:
    return [
        "build-dataset", "--out", str(out), "--n", str(n), "--generator", str(checkpoint),
        "--image-size", str(SIZE), str(SIZE), "--shard-size", "16", "--batch-size", "8",
        "--backend", "onnxruntime", "--scheduler", "sync", "--quiet",
    ]  # fmt: skip


def build(checkpoint, out, n) -> str:
    result = CliRunner().invoke(cli, build_args(checkpoint, out, n))
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, checkpoint):
    """Uninterrupted builds of 40 and of 100 samples: what every grown store must equal."""
    root = tmp_path_factory.mktemp("fresh")
    with pytest.MonkeyPatch.context() as mp, zarr.config.set({"codec_pipeline.path": PYTHON_PIPELINE}):
        mp.setenv("SYNTHGEN_CODEC_PIPELINE", "python")
        for n in (40, 100):
            build(checkpoint, root / f"{n}.zarr", n)
    return {n: root / f"{n}.zarr" for n in (40, 100)}


def files(store: Path) -> dict[str, bytes]:
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def attrs_of(store: Path) -> dict:
    """The root attributes, less the two timestamps that differ between any two builds."""
    attrs = json.loads((store / "zarr.json").read_text())["attributes"]["synthgen"]
    for stamp in ("created", "completed"):
        attrs["provenance"].pop(stamp)
    return attrs


def assert_same_build(store: Path, reference: Path) -> None:
    """Every file byte for byte (shards, their indices, array metadata), and the same root attributes
    (layout, build config, complete shards, digests) but for the timestamps."""
    mine, theirs = files(store), files(reference)
    assert sorted(mine) == sorted(theirs)
    differ = [key for key in mine if key != "zarr.json" and mine[key] != theirs[key]]
    assert differ == []
    assert attrs_of(store) == attrs_of(reference)


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name) and p != path)


def verify(store: Path) -> None:
    result = CliRunner().invoke(cli, ["verify", str(store), "--quiet"])
    assert result.exit_code == 0, result.output


def test_growing_40_to_100_equals_a_fresh_build_of_100(tmp_path, checkpoint, fresh):
    out = tmp_path / "g.zarr"
    build(checkpoint, out, 40)
    assert_same_build(out, fresh[40])
    kept = {key: (out / key).stat().st_mtime_ns for key in ("images/c/0/0/0", "labels/c/1/0/0")}
    plan = CliRunner().invoke(cli, [*build_args(checkpoint, out, 100), "--dry-run"])
    assert "grows the 40 samples there" in plan.stdout and "5 to build (2 already complete)" in plan.stdout
    assert StoreReader(str(out)).layout.n == 40  # a dry run writes nothing
    summary = build(checkpoint, out, 100)
    # shards 0 and 1 are kept as they were; the partial shard 2 (samples 32..39) is built again whole
    assert "built 5 shard(s), skipped 2 already complete" in summary and "(grown from 40)" in summary
    assert {key: (out / key).stat().st_mtime_ns for key in kept} == kept
    assert_same_build(out, fresh[100])
    assert StoreReader(str(out)).attrs.provenance["build_config"]["n"] == 100
    verify(out)
    assert siblings(out) == []
    # the same command again finds nothing to do
    assert "built 0 shard(s), skipped 7 already complete" in build(checkpoint, out, 100)


def test_shrinking_is_refused_and_leaves_the_store_untouched(tmp_path, checkpoint):
    out = tmp_path / "s.zarr"
    build(checkpoint, out, 40)
    before = files(out)
    result = CliRunner().invoke(cli, build_args(checkpoint, out, 20))
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("synthgen: error: Expected --n >= 40"), result.stderr
    assert "holds 40 samples" in lines[0] and "Got --n 20" in lines[0]
    assert files(out) == before and siblings(out) == []


def test_readers_never_count_the_partial_shard_while_the_store_grows(tmp_path, checkpoint, fresh):
    out = tmp_path / "r.zarr"
    build(checkpoint, out, 40)
    # what a growth killed right after it recorded the new size leaves: no new shard written yet
    writer = StoreWriter.open(str(out))
    with pytest.raises(StoreError, match="beyond its 40 samples"):
        writer.grow(40)
    config = dict(writer.attrs.provenance["build_config"]) | {"n": 100}
    writer.grow(100, {"build_config": config})
    reader = StoreReader(str(out))
    assert reader.layout.n == 100 and reader.complete_shards == (0, 1)
    assert reader.num_available == 32 and "completed" not in reader.attrs.provenance
    np.testing.assert_array_equal(reader.available_indices(), np.arange(32))
    with pytest.raises(IncompleteShardError):
        reader.read_block(32, 40)  # samples of the old partial shard are not counted until rebuilt
    np.testing.assert_array_equal(reader.read_labels(0, 32), StoreReader(str(fresh[100])).read_labels(0, 32))
    verify(out)
    summary = build(checkpoint, out, 100)  # an ordinary resume now
    assert "built 5 shard(s), skipped 2 already complete" in summary
    assert_same_build(out, fresh[100])


def test_a_growth_killed_before_it_recorded_its_size_leaves_the_old_store(tmp_path, checkpoint, fresh):
    out = tmp_path / "k.zarr"
    build(checkpoint, out, 40)
    root = zarr.open_group(str(out), mode="r+")  # killed between resizing the arrays and the attributes
    for name in ("images", "labels", *(f"meta/{k}" for k in root["meta"].array_keys())):
        root[name].resize((100, *root[name].shape[1:]))
    reader = StoreReader(str(out))  # readers go by the attributes: the old store, whole
    assert reader.layout.n == 40 and reader.num_available == 40
    np.testing.assert_array_equal(reader.read_images(0, 40), StoreReader(str(fresh[40])).read_images(0, 40))
    verify(out)
    # the old size again puts the arrays back: the store is the build of 40 exactly
    assert "built 0 shard(s), skipped 3 already complete" in build(checkpoint, out, 40)
    assert_same_build(out, fresh[40])
    # and the growth, run again, finishes
    root = zarr.open_group(str(out), mode="r+")
    root["labels"].resize((100, SIZE, SIZE))
    build(checkpoint, out, 100)
    assert_same_build(out, fresh[100])


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "synthgen.cli", *map(str, args)]


@pytest.mark.slow
def test_a_growth_killed_mid_way_resumes_to_the_fresh_bytes(tmp_path, checkpoint, fresh):
    out = tmp_path / "m.zarr"
    build(checkpoint, out, 40)
    log = tmp_path / "growth.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(_cli(*build_args(checkpoint, out, 100)), stderr=stderr)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:  # kill once the grown store holds a new shard
            reader = StoreReader(str(out))
            if reader.layout.n == 100 and len(reader.complete_shards) >= 3:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    reader = StoreReader(str(out))
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-2000:]
    assert reader.layout.n == 100 and 3 <= len(reader.complete_shards) < 7, reader.complete_shards
    assert Path(str(out) + LEASE_SUFFIX).exists()  # the dead process's lease, taken over by the rerun
    verify(out)  # what a killed growth leaves is a valid store of its complete shards
    build(checkpoint, out, 100)
    assert_same_build(out, fresh[100])
    verify(out)
    assert siblings(out) == []


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2))
def test_a_growth_killed_at_a_random_moment_resumes_to_the_fresh_bytes(tmp_path, checkpoint, fresh, seed):
    out = tmp_path / "k.zarr"
    build(checkpoint, out, 40)
    delay = float(np.random.default_rng(seed).uniform(0.0, 4.0))  # from the lease to the last shards
    kill_after_lease(_cli(*build_args(checkpoint, out, 100)), out, delay, stdout=None)
    verify(out)
    build(checkpoint, out, 100)
    assert_same_build(out, fresh[100])
    assert siblings(out) == []


def test_growing_an_incomplete_build(tmp_path, checkpoint, fresh):
    out = tmp_path / "i.zarr"
    build(checkpoint, out, 40)
    # as if the build of 40 had died before recording shards 0 and 2, with shard 0's data scribbled over
    root = zarr.open_group(str(out), mode="r+")
    attrs = dict(root.attrs["synthgen"])
    attrs["complete_shards"], attrs["shard_digests"] = [1], {"1": attrs["shard_digests"]["1"]}
    attrs["provenance"] = {k: v for k, v in attrs["provenance"].items() if k != "completed"}
    root.attrs["synthgen"] = attrs
    root["images"][0:16] = 7
    summary = build(checkpoint, out, 100)
    assert "built 6 shard(s), skipped 1 already complete" in summary and "(grown from 40)" in summary
    assert_same_build(out, fresh[100])
    verify(out)


def test_a_second_writer_is_refused_while_a_store_grows(tmp_path, checkpoint):
    out = tmp_path / "l.zarr"
    build(checkpoint, out, 40)
    before = files(out)
    lease = acquire_lease(str(out), "build-dataset")  # this (live) process writes the store
    try:
        result = CliRunner().invoke(cli, build_args(checkpoint, out, 100))
        assert result.exit_code == 1 and "Expected no other writer" in result.stderr
        assert files(out) == before
    finally:
        release_lease(str(out), lease)


def test_a_store_made_with_another_generator_is_not_grown(tmp_path, checkpoint):
    out = tmp_path / "o.zarr"
    build(checkpoint, out, 40)
    root = zarr.open_group(str(out), mode="r+")  # as if the checkpoint at that path had been retrained
    attrs = dict(root.attrs["synthgen"])
    attrs["provenance"] = attrs["provenance"] | {"generator": {"path": str(checkpoint), "hash": "0" * 64}}
    root.attrs["synthgen"] = attrs
    before = files(out)
    result = CliRunner().invoke(cli, build_args(checkpoint, out, 100))
    assert result.exit_code == 1 and "differs in ['generator']" in result.stderr, result.output
    assert files(out) == before


def test_a_different_build_is_still_refused(tmp_path, checkpoint):
    out = tmp_path / "d.zarr"
    build(checkpoint, out, 40)
    result = CliRunner().invoke(cli, [*build_args(checkpoint, out, 100), "--seed", "3"])
    assert result.exit_code == 1 and "different build (differs in ['seed'])" in result.stderr, result.output


def test_growing_under_zarrs_gives_the_digests_and_arrays_of_a_fresh_build(tmp_path, checkpoint, monkeypatch):
    pytest.importorskip("zarrs")
    monkeypatch.delenv("SYNTHGEN_CODEC_PIPELINE")
    with zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"}):
        build(checkpoint, tmp_path / "g.zarr", 40)
        build(checkpoint, tmp_path / "g.zarr", 100)
        build(checkpoint, tmp_path / "f.zarr", 100)
    grown, whole = StoreReader(str(tmp_path / "g.zarr")), StoreReader(str(tmp_path / "f.zarr"))
    assert grown.attrs.shard_digests == whole.attrs.shard_digests and grown.complete_shards == tuple(range(7))
    for name in ("images", "labels", *(f"meta/{m.name}" for m in whole.layout.meta)):
        np.testing.assert_array_equal(grown.array(name)[:], whole.array(name)[:], err_msg=name)
    verify(tmp_path / "g.zarr")
