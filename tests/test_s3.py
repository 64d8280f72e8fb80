"""Object storage: every command against a real S3-protocol server on loopback (moto's, with IAM
authentication on), the integrity layer there (lease by conditional PUT, swaps by copy, digests), and
one clear line for each way of failing to reach the store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.data import pairs_folder
from helpers.processes import free_port, loopback_cluster
from helpers.s3 import S3Server, moto_s3
from helpers.seg import make_seg_store

from synthgen.cli import cli
from synthgen.errors import StoreLockedError
from synthgen.storage import (
    LoaderConfig,
    StoreFiles,
    StoreReader,
    StoreStream,
    acquire_lease,
    open_store,
    read_lease,
    release_lease,
    storage_options,
    verify_store,
)
from synthgen.storage.integrity import (
    LEASE_SUFFIX,
    STORAGE_OPTIONS_ENV,
    Lease,
    aside_url,
    recover,
)

pytest.importorskip("s3fs")
pytest.importorskip("moto")

# a tiny build: 4 shards of 8 pairs of 32 x 32, images drawn by the randomised generator (no model)
BUILD = [
    "build-dataset", "--n", "32", "--image-size", "32", "32", "--shard-size", "8",
    "--generator", "randomised", "--batch-size", "8", "--quiet",
]  # fmt: skip
SHARDS = 4


@pytest.fixture(scope="module")
def s3() -> S3Server:
    with moto_s3() as server:
        yield server


@pytest.fixture(autouse=True)
def aws_env(s3, monkeypatch):
    """Credentials and endpoint in the environment, as botocore reads them; no storage options left
    over from another test (the CLI sets them in the environment, for its worker processes)."""
    for key in [k for k in os.environ if k.startswith(("AWS_", "FSSPEC_S3"))]:
        monkeypatch.delenv(key)
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(STORAGE_OPTIONS_ENV, "")  # none (and whatever a test sets is undone after it)


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory) -> str:
    """The tiny build, on the local file system, in one process."""
    out = str(tmp_path_factory.mktemp("local") / "synth.zarr")
    result = CliRunner().invoke(cli, [*BUILD, "--out", out, "--scheduler", "sync"])
    assert result.exit_code == 0, result.output
    return out


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "synthgen.cli", *args]


def store_contents(url: str) -> dict[str, np.ndarray]:
    reader = StoreReader(url)
    names = ["images", "labels", *(f"meta/{m.name}" for m in reader.layout.meta)]
    return {name: reader.array(name)[:] for name in names}


def assert_same_build(url: str, reference: str, shards: int = SHARDS) -> None:
    """Same arrays, same complete shards (all `shards` of them) and the same shard digests as the
    reference store."""
    got, want = StoreReader(url), StoreReader(reference)
    assert got.complete_shards == want.complete_shards == tuple(range(shards))
    assert got.attrs.shard_digests == want.attrs.shard_digests
    a, b = store_contents(url), store_contents(reference)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# -- options --------------------------------------------------------------------------------------
def test_storage_options_merge_defaults_fsspec_config_and_the_flag(monkeypatch):
    import fsspec.config

    monkeypatch.setitem(fsspec.config.conf, "s3", {"config_kwargs": {"read_timeout": 7}, "anon": False})
    result = run(
        "--storage-option", "endpoint_url=http://127.0.0.1:1", "--storage-option", "config_kwargs.connect_timeout:=2",
        "--storage-option", "use_ssl:=false", "inspect", "--help",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    given = json.loads(os.environ[STORAGE_OPTIONS_ENV])
    assert given == {
        "endpoint_url": "http://127.0.0.1:1",
        "config_kwargs": {"connect_timeout": 2},
        "use_ssl": False,
    }
    options = storage_options("s3://bucket/x.zarr")
    assert options["endpoint_url"] == "http://127.0.0.1:1" and options["use_ssl"] is False
    assert options["anon"] is False  # fsspec's configuration
    # synthgen's bounded retries stay under the flag's and fsspec's settings, key by key
    assert options["config_kwargs"] == {
        "connect_timeout": 2,
        "read_timeout": 7,
        "retries": {"max_attempts": 2, "mode": "standard"},
    }
    assert storage_options("/tmp/x.zarr") == {} and storage_options("file:///tmp/x.zarr") == {}


@pytest.mark.parametrize("flag", ["novalue", "=x", "a:={", "a=1 a.b=2"])
def test_bad_storage_options_are_usage_errors(flag):
    args = [part for item in flag.split() for part in ("--storage-option", item)]
    result = run(*args, "inspect", "s3://bucket/x.zarr")
    assert result.exit_code == 2 and "--storage-option" in result.stderr, result.output


# -- every command against the bucket -----------------------------------------------------------
def test_ingest_build_inspect_verify_and_load_from_the_bucket(s3, local_reference, tmp_path, monkeypatch):
    """The endpoint by --storage-option only (the credentials from the environment); a build on two
    local worker processes writes the bytes of the local one-process build."""
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    flags = s3.flags()
    real = s3.url("real.zarr")
    result = run(
        *flags,
        "ingest",
        str(pairs_folder(tmp_path / "pairs")),
        real,
        "--schema",
        "camus",
        "--shard-size",
        "4",
    )
    assert result.exit_code == 0, result.output
    assert StoreReader(real).num_available == 6
    result = run(
        *flags, "ingest", str(tmp_path / "pairs"), real, "--schema", "camus", "--limit", "4", "--overwrite"
    )
    assert result.exit_code == 0, result.output  # written aside, then copied over the old store
    assert StoreReader(real).num_available == 4
    keys = s3.keys()
    assert not any(".synthgen-" in k for k in keys), keys  # no aside store, lease or scratch left

    synth = s3.url("synth.zarr")
    result = run(*flags, *BUILD, "--out", synth, "--scheduler", "processes", "--workers", "2")
    assert result.exit_code == 0, result.output
    assert_same_build(synth, local_reference)
    assert not any(k.startswith(f"{s3.bucket}/synth.zarr.synthgen") for k in s3.keys())

    result = run(*flags, "inspect", synth)
    assert result.exit_code == 0, result.output
    assert "4 of 4 complete" in result.output and "digests of 4 of 4" in result.output
    result = run(*flags, "verify", synth, "--quiet")
    assert result.exit_code == 0 and "all intact" in result.output, result.output

    contents = open_store(synth)  # the store for other tools, and the streaming loader
    want = store_contents(local_reference)
    np.testing.assert_array_equal(contents.images[:], want["images"])
    np.testing.assert_array_equal(contents.to_dask("labels").compute(), want["labels"])
    seen = np.zeros(32, int)
    for batch in StoreStream(synth, LoaderConfig(batch_size=10, block_size=8, as_float=False)):
        index = batch["index"].numpy()
        seen[index] += 1
        np.testing.assert_array_equal(batch["image"].numpy()[:, 0], want["images"][index])
        np.testing.assert_array_equal(batch["label"].numpy(), want["labels"][index])
    assert (seen == 1).all()


def test_kill_9_mid_build_then_resume_gives_the_local_bytes(s3, tmp_path):
    """Killed once a shard is recorded, the build resumes to the bytes of the local build; every
    shard a reader finds listed complete mid-build reads whole and equal to the local one. The
    build is 16 shards long and stopped (SIGSTOP) the moment a shard is listed, so that it cannot
    finish between the listing and the kill (with 4 shards, a loaded machine once let it)."""
    long_build = [*BUILD, "--n", "128"]  # the later --n wins: 16 shards of 8
    reference = str(tmp_path / "local.zarr")
    assert run(*long_build, "--out", reference, "--scheduler", "sync").exit_code == 0
    want = store_contents(reference)
    out = s3.url("killed.zarr")
    proc = subprocess.Popen(
        _cli(*long_build, "--out", out, "--scheduler", "sync"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    read = set()
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None and not read:
            try:
                listed = StoreReader(out).complete_shards
            except Exception:  # not created yet
                time.sleep(0.05)
                continue
            if not listed:
                continue
            proc.send_signal(signal.SIGSTOP)  # mid-build, as the listing found it
            reader = StoreReader(out)
            for k in reader.complete_shards:
                images, labels = reader.read_shard(k)
                np.testing.assert_array_equal(images, want["images"][8 * k : 8 * k + 8])
                np.testing.assert_array_equal(labels, want["labels"][8 * k : 8 * k + 8])
                read.add(k)
    finally:  # killed here even when a check above fails: a stopped build would never end
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the build ended before it was killed"
    assert 1 <= len(StoreReader(out).complete_shards) < 16
    assert read_lease(out) is not None  # the killed build's lease is left behind...
    result = run(*long_build, "--out", out, "--scheduler", "sync")  # ...and taken over: its process is gone
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output
    assert_same_build(out, reference, shards=16)
    assert read_lease(out) is None


def test_train_seg_and_evaluate_read_from_the_bucket(s3, tmp_path):
    train = make_seg_store(s3.url("seg-train.zarr"), n=16, seed=0)
    val = make_seg_store(s3.url("seg-val.zarr"), n=8, seed=1)
    out = tmp_path / "seg"
    result = run(
        "train-seg", train, str(out), "--val", val, "--arch", "lite", "--width", "4", "--depth", "2",
        "--image-size", "32", "32", "--steps", "2", "--val-every", "2", "--batch-size", "8",
        "--device", "cpu", "--no-progress", "--no-augment", "--threads", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"validated on {val}" in result.output
    result = run("evaluate", "seg", str(out / "best"), val, "--out", str(tmp_path / "eval"))
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["n"] == 8 and summary["store"] == val


@pytest.mark.slow
def test_a_dask_cluster_writes_the_bucket_with_the_options_of_the_command(s3, local_reference):
    """A real `dask scheduler` and two `dask worker` processes whose environment holds neither the
    endpoint nor the credentials: the command's --storage-option flags reach them in the task."""
    from distributed import Client

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with loopback_cluster(env) as (address, _), Client(address, timeout="60s") as client:
        out = s3.url("cluster.zarr")
        result = run(*s3.flags(credentials=True), *BUILD, "--out", out, "--scheduler", address)
        assert result.exit_code == 0, result.output
        workers = client.run(lambda: os.environ.get(STORAGE_OPTIONS_ENV))
    assert len(workers) == 2 and all(
        json.loads(w)["endpoint_url"] == s3.endpoint for w in workers.values() if w
    )
    assert any(workers.values()), "no worker ran a shard"
    assert_same_build(out, local_reference)


# -- integrity ---------------------------------------------------------------------------------------
def test_a_second_writer_is_refused_while_the_first_holds_the_lease(s3):
    out = s3.url("leased.zarr")
    lease = acquire_lease(out, "build-dataset")
    try:
        with pytest.raises(StoreLockedError, match="is writing it"):
            acquire_lease(out, "ingest")
        result = run(*BUILD, "--out", out, "--scheduler", "sync")
        assert result.exit_code == 1 and "Expected no other writer" in result.stderr, result.output
        assert read_lease(out).token == lease.token
    finally:
        release_lease(out, lease)
    assert read_lease(out) is None and not s3.fs().exists(f"{s3.bucket}/leased.zarr{LEASE_SUFFIX}")


def test_the_lease_is_a_conditional_put_that_the_server_refuses_when_it_exists(s3):
    """Two writers that both found no lease (the check before the PUT raced): the server refuses the
    second PUT (If-None-Match), so the first keeps the lease."""
    out = s3.url("race.zarr")
    first = acquire_lease(out, "build-dataset")
    try:
        files = StoreFiles(out + LEASE_SUFFIX)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(files.fs, "exists", lambda path, **kw: False)  # the check found nothing
            with pytest.raises(FileExistsError):
                files.write("", b"{}", exclusive=True)
            with pytest.raises(StoreLockedError):
                acquire_lease(out, "ingest")
        assert read_lease(out).token == first.token
    finally:
        release_lease(out, first)


def test_a_conflicting_concurrent_create_counts_as_an_existing_lease(s3, monkeypatch):
    """S3 answers 409 ConditionalRequestConflict to a conditional PUT racing another one on the same key."""
    from botocore.exceptions import ClientError

    files = StoreFiles(s3.url("conflict.zarr") + LEASE_SUFFIX)

    def conflict(path, data, **kw):
        error = ClientError({"Error": {"Code": "ConditionalRequestConflict", "Message": "busy"}}, "PutObject")
        raise OSError("busy") from error

    monkeypatch.setattr(files.fs, "pipe_file", conflict)
    with pytest.raises(FileExistsError):
        files.write("", b"{}", exclusive=True)
    with pytest.raises(OSError, match="busy") as raised:
        files.write("", b"{}")  # an unconditional write is not a lease race: the error stands
    assert not isinstance(raised.value, FileExistsError)


def test_a_stale_lease_of_a_dead_process_is_taken_over(s3):
    out = s3.url("stale.zarr")
    dead = Lease.new("build-dataset")
    dead = Lease(**(dead.__dict__ | {"pid": 2**22 + 12345}))  # no such process on this host
    StoreFiles(out + LEASE_SUFFIX).write("", json.dumps(dead.__dict__).encode())
    lease = acquire_lease(out, "ingest")
    try:
        assert read_lease(out).token == lease.token != dead.token
    finally:
        release_lease(out, lease)


def test_an_interrupted_swap_on_object_storage_is_finished_by_recover(s3, monkeypatch):
    """A swap copies the new store over, zarr.json last, then deletes the source, zarr.json first: a
    swap killed after the old store was set aside and the target half deleted is finished by recover."""
    url = s3.url("swap.zarr")
    old = make_seg_store(url, n=8, seed=3)
    new = make_seg_store(aside_url(url), n=8, seed=4)
    want = store_contents(new)
    # killed mid-swap: the old store copied aside whole, the target half deleted (zarr.json first)
    _move_copy_only(StoreFiles(old), StoreFiles(url + ".synthgen-old"))
    target = StoreFiles(url)
    target.remove("zarr.json")
    target.remove("images", recursive=True)
    copied, removed = [], []
    copy, remove = target.fs.copy, StoreFiles.remove  # one cached file system for the bucket
    monkeypatch.setattr(target.fs, "copy", lambda a, b, **kw: (copied.append(a), copy(a, b, **kw))[1])
    monkeypatch.setattr(
        StoreFiles,
        "remove",
        lambda self, key, **kw: (removed.append((self.url, key)), remove(self, key, **kw))[1],
    )
    recover(url)
    assert copied[-1].endswith("swap.zarr.synthgen-new/zarr.json")  # the copy is a store once whole
    assert (aside_url(url), "zarr.json") in removed  # the source stops being one first
    assert removed.index((aside_url(url), "zarr.json")) < removed.index((aside_url(url), ""))
    got = store_contents(url)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert not s3.fs().exists(f"{s3.bucket}/swap.zarr.synthgen-old")
    assert not s3.fs().exists(f"{s3.bucket}/swap.zarr.synthgen-new")
    assert verify_store(url, progress=False).intact


def _move_copy_only(src: StoreFiles, dst: StoreFiles) -> None:
    """The first half of a move between object-store prefixes: the copy, not the delete."""
    keys = src.keys()
    src.fs.copy([src.path(k) for k in keys], [dst.path(k) for k in keys])


# -- failing to reach the store -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def present(s3) -> str:
    with pytest.MonkeyPatch.context() as patch:
        for key, value in s3.env().items():
            patch.setenv(key, value)
        patch.setenv(STORAGE_OPTIONS_ENV, "")
        return make_seg_store(s3.url("present.zarr"), n=8)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("wrong credentials", "refused access"),
        ("missing bucket", "does not exist"),
        ("unreachable endpoint", "Cannot reach the object store"),
    ],
)
@pytest.mark.parametrize("command", ["build-dataset", "inspect"])
def test_unreachable_stores_fail_fast_with_one_line_and_leave_nothing(s3, present, case, message, command):
    """A writer (ingest takes the same lease first) and a reader, for each way of failing."""
    bucket, flags = s3.bucket, s3.flags(credentials=True)
    if case == "wrong credentials":
        flags = s3.flags(credentials=True, secret="not-the-secret")
    elif case == "missing bucket":
        bucket = "no-such-bucket"
    else:
        flags = s3.flags(credentials=True, endpoint_url=f"http://127.0.0.1:{free_port()}")  # nothing listens
    out = f"s3://{bucket}/failed.zarr"
    if command == "build-dataset":
        args = [*BUILD, "--out", out, "--scheduler", "sync"]
    else:
        args = ["inspect", present if bucket == s3.bucket else out]
    before = s3.keys()
    t = time.perf_counter()
    result = run(*flags, *args)
    seconds = time.perf_counter() - t
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("synthgen: error: "), result.stderr
    if not (command == "inspect" and case == "missing bucket"):
        assert message in lines[0], lines[0]
    else:
        assert "No Zarr store at s3://no-such-bucket/failed.zarr" in lines[0], lines[0]
    assert seconds < 20, f"took {seconds:.1f} s"
    assert s3.keys() == before  # nothing written: no lease, no store
