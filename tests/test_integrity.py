"""The integrity layer through the CLI: ownership, atomic replacement and creation, one writer at a time,
digests, ``synthgen verify``. Each case checks the exit status, the one error line and the state of the
output afterwards (untouched, absent, or resumable to the bytes of an uninterrupted run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from helpers.checkpoints import random_checkpoint
from helpers.data import disc_labels, pairs_folder
from helpers.processes import free_port, kill_after_lease

from synthgen.cli import cli
from synthgen.schemas import CAMUS
from synthgen.storage import (
    StoreReader,
    acquire_lease,
    aside_url,
    read_lease,
    recover,
    release_lease,
    shard_keys,
    store_state,
)
from synthgen.storage.integrity import LEASE_SUFFIX, OLD_SUFFIX, SCRATCH_SUFFIX

SIZE = 32


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("gen") / "spade", "spade", CAMUS, image_size=SIZE)


def run(*args) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args])


def build_args(checkpoint, out, *extra) -> list:
    return [
        "build-dataset", "--out", out, "--generator", checkpoint, "--image-size", SIZE, SIZE,
        "--n", 24, "--shard-size", 8, "--batch-size", 8, "--backend", "onnxruntime",
        "--scheduler", "sync", "--quiet", *extra,
    ]  # fmt: skip


def one_error_line(result, *needles: str) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("synthgen: error: "), result.stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]
    return lines[0]


def arrays(url) -> dict[str, np.ndarray]:
    root = zarr.open_group(str(url), mode="r")
    names = ["images", "labels", *(f"meta/{k}" for k in root["meta"].array_keys())]
    return {name: root[name][:] for name in names}


def assert_same_arrays(a, b) -> None:
    left, right = arrays(a), arrays(b)
    assert left.keys() == right.keys()
    for name in left:
        np.testing.assert_array_equal(left[name], right[name], err_msg=name)


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name) and p != path)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, checkpoint):
    """An uninterrupted build: what every resumed or repaired build must equal, byte for byte."""
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    assert run(*build_args(checkpoint, out)).exit_code == 0
    return out


# -- ownership -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["build", "ingest"])
def test_overwrite_never_replaces_a_folder_of_other_files(tmp_path, checkpoint, command):
    out = tmp_path / "d"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("precious")
    if command == "build":
        result = run(*build_args(checkpoint, out, "--overwrite"))
    else:
        result = run("ingest", pairs_folder(tmp_path / "src"), out, "--schema", "camus", "--overwrite")
    one_error_line(result, "not a synthgen", "refusing")
    assert (out / "notes.txt").read_text() == "precious" and (out / "sub").is_dir()
    assert siblings(out) == []  # no lease, aside store or scratch left behind


def test_a_failed_ingest_overwrite_leaves_the_old_store_as_it_was(tmp_path):
    out = tmp_path / "s.zarr"
    assert run("ingest", pairs_folder(tmp_path / "good"), out, "--schema", "camus").exit_code == 0
    before = arrays(out)
    result = run("ingest", pairs_folder(tmp_path / "bad", bad=True), out, "--schema", "camus", "--overwrite")
    one_error_line(result, "9")
    after = arrays(out)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])
    assert store_state(str(out)) == "synthgen" and siblings(out) == []


def test_ingest_overwrite_replaces_a_synthgen_store(tmp_path):
    out = tmp_path / "s.zarr"
    assert run("ingest", pairs_folder(tmp_path / "a", n=4), out, "--schema", "camus").exit_code == 0
    assert run("ingest", pairs_folder(tmp_path / "b", n=6), out, "--schema", "camus").exit_code == 1
    assert (
        run("ingest", pairs_folder(tmp_path / "c", n=6), out, "--schema", "camus", "--overwrite").exit_code
        == 0
    )
    assert StoreReader(str(out)).layout.n == 6 and siblings(out) == []


def test_build_overwrite_swaps_in_only_a_complete_store(tmp_path, checkpoint, reference):
    out = tmp_path / "o.zarr"
    assert run(*build_args(checkpoint, out, "--seed", "1")).exit_code == 0
    old = arrays(out)
    # a build that fails once it has started (no TensorRT here) leaves the old store untouched
    result = run(*build_args(checkpoint, out, "--overwrite", "--backend", "tensorrt"))
    assert result.exit_code == 1 and result.stderr.startswith("synthgen: error:")
    for name, values in arrays(out).items():
        np.testing.assert_array_equal(values, old[name], err_msg=name)
    assert run(*build_args(checkpoint, out, "--overwrite")).exit_code == 0
    assert_same_arrays(out, reference)
    assert StoreReader(str(out)).attrs.provenance["build_config"]["seed"] == 0
    assert siblings(out) == []


def test_a_second_writer_is_refused_and_a_dead_ones_lease_taken_over(tmp_path, checkpoint, reference):
    out = tmp_path / "l.zarr"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lease = acquire_lease(str(out), "build-dataset")
        # pretend the sleeping process holds it
        data = json.loads(Path(str(out) + LEASE_SUFFIX).read_text())
        from psutil import Process

        data |= {"pid": holder.pid, "process_started": Process(holder.pid).create_time()}
        Path(str(out) + LEASE_SUFFIX).write_text(json.dumps(data))
        result = run(*build_args(checkpoint, out))
        one_error_line(result, "Expected no other writer", f"pid {holder.pid}")
        assert not out.exists()  # nothing was written
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lease is stale and the next writer takes it over
    assert read_lease(str(out)).pid == holder.pid and read_lease(str(out)).is_stale()
    assert run(*build_args(checkpoint, out)).exit_code == 0
    assert_same_arrays(out, reference)
    assert read_lease(str(out)) is None  # released at the end
    release_lease(str(out), lease)  # a lease that is no longer ours is left alone


# -- atomic creation, replacement and shard writes ---------------------------------------------------
def test_a_build_killed_while_creating_the_store_resumes(tmp_path, checkpoint, reference):
    out = tmp_path / "c.zarr"
    # what a kill between the group and its arrays leaves: a root marked as being created
    zarr.open_group(str(out), mode="w", attributes={"synthgen_creating": {"started": "now"}})
    zarr.open_group(str(out), mode="r+").create_group("meta")
    assert store_state(str(out)) == "creating"
    assert run(*build_args(checkpoint, out)).exit_code == 0
    assert_same_arrays(out, reference)


def test_a_swap_killed_half_way_is_finished_at_the_next_start(tmp_path, checkpoint, reference):
    out = tmp_path / "w.zarr"
    assert run(*build_args(checkpoint, out, "--seed", "2")).exit_code == 0
    new = Path(aside_url(str(out)))
    assert run(*build_args(checkpoint, new)).exit_code == 0  # a complete replacement, aside
    os.rename(out, str(out) + OLD_SUFFIX)  # killed between the two renames of the swap
    recover(str(out))
    assert_same_arrays(out, reference) and siblings(out) == []
    # killed after moving the old store away but before the new one was written: the old one comes back
    os.rename(out, str(out) + OLD_SUFFIX)
    recover(str(out))
    assert_same_arrays(out, reference)


def test_shards_are_written_whole_and_leave_no_scratch(tmp_path, checkpoint):
    out = tmp_path / "s.zarr"
    assert run(*build_args(checkpoint, out)).exit_code == 0
    files = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.endswith(".partial")]
    assert not Path(str(out) + SCRATCH_SUFFIX).exists()
    reader = StoreReader(str(out))
    for k in reader.complete_shards:
        for key in shard_keys(reader.layout, k):
            assert (out / key).is_file() or key.startswith("meta/")
    # Zarr tools see a plain Zarr hierarchy: nothing else inside the store (warnings are errors here)
    assert sorted(zarr.open_group(str(out), mode="r").keys()) == ["images", "labels", "meta"]


# -- digests and verify -----------------------------------------------------------------------------
def flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x04
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["bit flip", "deleted file"])
def test_damage_is_found_named_and_repaired_to_the_same_bytes(tmp_path, checkpoint, reference, damage):
    out = tmp_path / "v.zarr"
    assert run(*build_args(checkpoint, out)).exit_code == 0
    assert run("verify", out, "--quiet").exit_code == 0
    shard_file = out / "images" / "c" / "1" / "0" / "0"
    if damage == "bit flip":
        flip_a_bit(shard_file)
    else:
        shard_file.unlink()
    # every reader stops with one line naming the shard, instead of serving altered or black images
    one_error_line(run("inspect", out), "shard(s) [1]" if damage == "bit flip" else "shard 1 ")
    result = run("verify", out, "--quiet")
    assert result.exit_code == 1 and "shard 1:" in result.output and "1 of 3" in result.output
    result = run("verify", out, "--repair", "--quiet")
    assert result.exit_code == 0 and "unlisted 1 damaged shard(s) [1]" in result.output
    assert StoreReader(str(out)).complete_shards == (0, 2)
    assert run(*build_args(checkpoint, out)).exit_code == 0  # the same command writes shard 1 again
    assert_same_arrays(out, reference)
    assert run("verify", out, "--quiet").exit_code == 0


def test_verify_refuses_what_is_not_a_store(tmp_path):
    one_error_line(run("verify", tmp_path / "nothing.zarr"), "No Zarr store")


# -- finite and plausible data ------------------------------------------------------------------------
def float_store(url: Path, *, nan_at: int | None) -> str:
    """A complete float32 store of disc labels and grey images, NaN in sample ``nan_at``."""
    from synthgen.schemas import Intensity, StoreAttrs, StoreLayout
    from synthgen.storage import StoreWriter

    labels = disc_labels(16, 32, 32, seed=3)
    images = (labels * 0.25 + 0.1).astype(np.float32)
    if nan_at is not None:
        images[nan_at, 5, 5] = np.nan
    layout = StoreLayout(n=16, image_shape=(32, 32), image_dtype="float32", shard_size=8)
    writer = StoreWriter.create(str(url), StoreAttrs(layout, CAMUS, Intensity(0.0, 1.0)))
    digests = {k: writer.write_shard(k, images[8 * k : 8 * k + 8], labels[8 * k : 8 * k + 8]) for k in (0, 1)}
    writer.mark_complete(digests, digests=digests)
    return str(url)


def test_ingest_refuses_non_finite_images(tmp_path):
    import nibabel as nib

    src = tmp_path / "src"
    src.mkdir()
    labels = disc_labels(1, 24, 24)[0]
    image = labels.astype(np.float32)
    image[3, 3] = np.inf
    nib.save(nib.Nifti1Image(image[:, :, None], np.eye(4)), src / "case.nii.gz")
    nib.save(nib.Nifti1Image(labels[:, :, None], np.eye(4)), src / "case_gt.nii.gz")
    out = tmp_path / "s.zarr"
    one_error_line(run("ingest", src, out, "--schema", "camus"), "finite", "case.nii.gz")
    assert not out.exists() and siblings(out) == []


def test_training_stops_at_the_first_non_finite_loss_and_saves_nothing(tmp_path):
    train = float_store(tmp_path / "t.zarr", nan_at=0)
    val = float_store(tmp_path / "v.zarr", nan_at=None)
    assert "1 NaN or infinite image value(s)" in run("inspect", train).output  # inspect shows it
    args = ["train-seg", train, tmp_path / "run", "--val", val, "--steps", "4", "--batch-size", "16"]
    args += ["--split", "all"]  # every sample (a by-sample split would hold out sample 0)
    one_error_line(
        run(*args, "--width", "4", "--depth", "2", "--image-size", "32", "32", "--no-progress"), "finite"
    )
    assert not (tmp_path / "run" / "best").exists()


def test_a_source_whose_maps_all_fail_the_gate_stops_the_build(tmp_path, checkpoint):
    from synthgen.schemas import Intensity, StoreAttrs, StoreLayout
    from synthgen.storage import StoreWriter

    empty = str(tmp_path / "cavity.zarr")  # a cavity without wall or atrium: every draw fails the gate
    layout = StoreLayout(n=8, image_shape=(SIZE, SIZE), shard_size=8)
    writer = StoreWriter.create(empty, StoreAttrs(layout, CAMUS, Intensity.for_dtype("uint8")))
    cavity = np.where(disc_labels(8, SIZE, SIZE) == 1, 1, 0).astype(np.uint8)
    writer.mark_complete([0], digests={0: writer.write_shard(0, cavity * 50, cavity)})
    out = tmp_path / "g.zarr"
    args = build_args(checkpoint, out, "--source", "store", "--source-url", empty, "--max-attempts", "2")
    one_error_line(run(*args), "give up the plausibility gate", "8 of 8")
    assert "8 sample(s) kept although the gate rejected every draw" in run("inspect", out).output
    reader = StoreReader(str(out))  # what was built stays, flagged, and readers do not serve it
    assert reader.complete_shards == (0,) and (reader.read_meta("plausibility", 0, 8) != 0).all()
    from synthgen.storage import LoaderConfig, StoreStream

    with pytest.raises(Exception, match="complete shards"):
        StoreStream(str(out), LoaderConfig(batch_size=4))
    flagged = next(iter(StoreStream(str(out), LoaderConfig(batch_size=4, include_flagged=True))))
    assert flagged["image"].shape[0] == 4
    assert run(*args, "--max-give-up", "1").exit_code == 0  # allowed: the build finishes, and says so


# -- schedulers, workers, usage ---------------------------------------------------------------------
def test_a_server_that_is_not_dask_is_refused_in_time(tmp_path, checkpoint, monkeypatch):
    import socket
    import threading
    import time

    monkeypatch.setenv("SYNTHGEN_CONNECT_TIMEOUT_S", "2")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    out = tmp_path / "n.zarr"
    args = [a for a in build_args(checkpoint, out) if a not in ("--scheduler", "sync")]
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "synthgen.cli", *map(str, args), "--scheduler", f"tcp://127.0.0.1:{server.getsockname()[1]}"],
        capture_output=True, text=True, timeout=60, env=os.environ | {"SYNTHGEN_CONNECT_TIMEOUT_S": "2"},
    )  # fmt: skip
    for conn, _ in accepted:
        conn.close()
    server.close()
    assert result.returncode == 1 and time.monotonic() - start < 30
    assert result.stderr.strip().splitlines()[-1].startswith("synthgen: error: Cannot reach a Dask scheduler")
    assert not out.exists() and siblings(out) == []


@pytest.mark.slow
def test_a_scheduler_without_workers_is_refused_in_time(tmp_path, checkpoint):
    port = free_port()
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        out = tmp_path / "w.zarr"
        args = [a for a in build_args(checkpoint, out) if a not in ("--scheduler", "sync")]
        result = subprocess.run(
            [sys.executable, "-m", "synthgen.cli", *map(str, args), "--scheduler", f"tcp://127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=90, env=os.environ | {"SYNTHGEN_CONNECT_TIMEOUT_S": "8"},
        )  # fmt: skip
        assert result.returncode == 1, result.stderr
        assert "has no worker" in result.stderr.strip().splitlines()[-1]
        assert not out.exists()
    finally:
        scheduler.kill()
        scheduler.wait()


@pytest.mark.slow
def test_workers_end_when_their_coordinator_is_killed(tmp_path, checkpoint):
    import signal
    import time

    import psutil

    out = tmp_path / "k.zarr"
    args = [a for a in build_args(checkpoint, out) if a not in ("--scheduler", "sync", "--n", 24)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "synthgen.cli", *map(str, args), "--n", "4000", "--scheduler", "processes", "--workers", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 120
    workers = []
    while time.time() < deadline:  # until two workers run and a shard is recorded
        try:
            workers = [
                c
                for c in psutil.Process(proc.pid).children(recursive=True)
                if "resource_tracker" not in " ".join(c.cmdline())
            ]
            if (
                len(workers) >= 2
                and store_state(str(out)) == "synthgen"
                and StoreReader(str(out)).complete_shards
            ):
                break
        except (psutil.Error, Exception):
            pass
        time.sleep(0.2)
    assert workers, "the build started no worker process"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, f"{len(alive)} worker(s) outlived their coordinator"


@pytest.mark.parametrize(
    "args",
    [
        ["build-dataset", "--nn", "3"],
        ["verify"],
        ["build-dataset", "--out", "x.zarr", "--n", "abc"],
        ["no-such-command"],
    ],
)
def test_usage_errors_are_one_line(args):
    result = run(*args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("synthgen: error: "), result.stderr


# -- kill -9 at random moments: the rerun gives the bytes of an uninterrupted run ---------------------
def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "synthgen.cli", *map(str, args)]


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_a_build_killed_at_a_random_moment_resumes_to_the_same_bytes(tmp_path, checkpoint, reference, seed):
    delay = float(np.random.default_rng(seed).uniform(0.0, 2.5))  # from store creation to the last shards
    out = tmp_path / "k.zarr"
    kill_after_lease(_cli(*build_args(checkpoint, out)), out, delay)
    rerun = run(*build_args(checkpoint, out))
    assert rerun.exit_code == 0, (delay, rerun.output)
    assert_same_arrays(out, reference)
    assert run("verify", out, "--quiet").exit_code == 0 and siblings(out) == []


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_an_ingest_killed_at_a_random_moment_leaves_nothing_or_the_old_store(tmp_path, seed):
    src = pairs_folder(tmp_path / "src", n=1000)
    whole = tmp_path / "whole.zarr"
    assert run("ingest", src, whole, "--schema", "camus", "--shard-size", "16").exit_code == 0
    out = tmp_path / "k.zarr"
    delay = float(np.random.default_rng(seed).uniform(0.0, 0.8))
    old = seed % 2 == 1  # half the runs replace an existing store
    if old:
        assert run("ingest", pairs_folder(tmp_path / "old", n=4), out, "--schema", "camus").exit_code == 0
        before = arrays(out)
    args = ["ingest", src, out, "--schema", "camus", "--shard-size", "16", *(["--overwrite"] if old else [])]
    kill_after_lease(_cli(*args), out, delay)
    recover(str(out))  # what every next command does first: a swap killed between its two renames
    finished = out.exists() and StoreReader(str(out)).layout.n == 1000
    if out.exists() and not finished:  # killed before the swap: the old store, as it was
        for name, values in arrays(out).items():
            np.testing.assert_array_equal(values, before[name], err_msg=name)
    elif not out.exists():
        assert not old, "the old store was lost"
    if not finished:
        assert run(*args).exit_code == 0  # the same command again
    assert_same_arrays(out, whole)  # the whole store, nothing left beside it
    assert siblings(out) == []


# -- files that a rerun reads back ----------------------------------------------------------------------
def test_a_loss_log_torn_by_a_kill_is_read_and_resumed(tmp_path):
    from synthgen.trainers.trainlog import LossLog

    path = tmp_path / "losses.jsonl"
    log = LossLog(path)
    for step in (10, 20, 30):
        log.append(step, {"g": 1.0 / step})
    with path.open("a") as f:
        f.write('{"step": 40, "g": 0.0')  # killed mid-append
    assert [r["step"] for r in log.read()] == [10, 20, 30]
    resumed = LossLog(path, resume_step=20)  # the checkpoint was at step 20
    assert [r["step"] for r in resumed.read()] == [10, 20] and path.read_text().endswith("\n")


def test_a_torn_arm_result_runs_the_arm_again(tmp_path):
    from synthgen.evaluation.utility import RESULT_JSON, read_result

    (tmp_path / RESULT_JSON).write_text('{"arm": "real", "train_con')
    assert read_result(tmp_path) == {}
    assert read_result(tmp_path / "absent") == {}
    (tmp_path / RESULT_JSON).write_text('["not", "a", "result"]')
    assert read_result(tmp_path) == {}
    (tmp_path / RESULT_JSON).write_text('{"arm": "real"}')
    assert read_result(tmp_path) == {"arm": "real"}


def test_atomic_write_leaves_the_old_file_when_it_fails(tmp_path, monkeypatch):
    from synthgen.storage import atomic_write

    target = tmp_path / "summary.json"
    atomic_write(target, "old\n")

    def no_space(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(OSError, match="No space"):
        atomic_write(target, "new\n")
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


# -- a full disk or a failing device while shards are written --------------------------------------------
def _failing_moves(monkeypatch, after: int, errno_: int) -> None:
    """Every store file write after the first ``after`` fails with ``errno_`` (ENOSPC, EIO...)."""
    from synthgen.storage.integrity import StoreFiles

    real = StoreFiles.move_in
    calls = []

    def move_in(self, local_file, key):
        calls.append(key)
        if len(calls) > after:
            raise OSError(errno_, os.strerror(errno_), str(key))
        return real(self, local_file, key)

    monkeypatch.setattr(StoreFiles, "move_in", move_in)


@pytest.mark.parametrize("errno_", [28, 5])  # ENOSPC, EIO
def test_a_build_that_runs_out_of_disk_resumes_to_the_same_bytes(
    tmp_path, checkpoint, reference, monkeypatch, errno_
):
    out = tmp_path / "f.zarr"
    with monkeypatch.context() as m:
        first = [k for k in shard_keys(StoreReader(str(reference)).layout, 0) if (reference / k).exists()]
        _failing_moves(m, after=len(first), errno_=errno_)  # shard 0 lands, shard 1 does not
        one_error_line(run(*build_args(checkpoint, out)), os.strerror(errno_))
    assert StoreReader(str(out)).complete_shards == (0,) and siblings(out) == []
    assert run(*build_args(checkpoint, out)).exit_code == 0
    assert_same_arrays(out, reference)


def test_an_ingest_that_runs_out_of_disk_leaves_nothing(tmp_path, monkeypatch):
    src = pairs_folder(tmp_path / "src", n=40)
    out = tmp_path / "s.zarr"
    with monkeypatch.context() as m:
        _failing_moves(m, after=4, errno_=28)
        one_error_line(run("ingest", src, out, "--schema", "camus", "--shard-size", "8"), "No space left")
    assert not out.exists() and siblings(out) == []
    assert run("ingest", src, out, "--schema", "camus", "--shard-size", "8").exit_code == 0


def test_a_failed_build_does_not_block_the_corrected_rerun(tmp_path, checkpoint, reference):
    out = tmp_path / "e.zarr"
    result = run(*build_args(checkpoint, out, "--backend", "tensorrt"))  # no TensorRT: fails in preflight
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() and siblings(out) == []
    # a build that created its store, then failed (a worker died, say), holds no complete shard
    from synthgen.schemas import load_build_config
    from synthgen.storage import StoreWriter

    other = load_build_config(None, {"n": 16, "image_size": [SIZE, SIZE], "shard_size": 8, "seed": 9,
                                     "generator": str(checkpoint)})  # fmt: skip
    from synthgen.engine.pipeline import store_attrs

    StoreWriter.create(str(out), store_attrs(other))
    assert StoreReader(str(out)).complete_shards == ()
    assert run(*build_args(checkpoint, out)).exit_code == 0  # another config, nothing lost: replaced
    assert_same_arrays(out, reference)


@pytest.mark.slow
def test_a_damaged_shard_stops_training_in_a_loader_worker_with_one_line(tmp_path, checkpoint, reference):
    out = tmp_path / "t.zarr"
    assert run(*build_args(checkpoint, out)).exit_code == 0
    flip_a_bit(out / "images" / "c" / "2" / "0" / "0")
    args = ["train-seg", out, tmp_path / "run", "--val", reference, "--steps", "6", "--batch-size", "8",
            "--width", "4", "--depth", "2", "--image-size", "32", "32", "--workers", "1", "--no-progress",
            "--no-augment"]  # fmt: skip
    one_error_line(run(*args), "shard(s) [2]")


def test_a_reader_racing_a_rewriting_writer_never_sees_a_torn_shard(tmp_path, reference):
    """A retried task rewrites complete shards (the same bytes) while a reader reads them: every read
    decodes, and gives the data the digest was taken of."""
    import shutil
    import threading

    from synthgen.storage import StoreWriter, check_shard

    out = tmp_path / "r.zarr"
    shutil.copytree(reference, out)
    source = StoreReader(str(out))
    shards = {k: source.read_shard(k) for k in source.complete_shards}
    metas = {
        k: {m.name: source.read_meta(m.name, *source.layout.shard_bounds(k)) for m in source.layout.meta}
        for k in shards
    }
    stop, problems = threading.Event(), []

    def read_all():
        while not stop.is_set():
            reader = StoreReader(str(out))  # a new reader each pass: nothing cached
            for k in reader.complete_shards:
                problem = check_shard(reader, k)
                if problem is not None:
                    problems.append((k, problem))

    thread = threading.Thread(target=read_all)
    thread.start()
    writer = StoreWriter.open(str(out))
    for _ in range(5):
        for k, (images, labels) in shards.items():
            writer.write_shard(k, images, labels, metas[k])
    writer.close()
    stop.set()
    thread.join()
    assert problems == []
