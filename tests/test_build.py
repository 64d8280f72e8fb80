"""The build engine: reproducibility across schedulers, resume after kill -9, bad input, dry run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from helpers.checkpoints import random_checkpoint
from helpers.processes import loopback_cluster

from synthgen.cli import cli
from synthgen.engine import replay
from synthgen.engine.build import RunOptions, build_dataset, plan_build
from synthgen.inference.onnx_export import cached_onnx
from synthgen.schemas import ACDC, CAMUS
from synthgen.schemas.build_config import load_build_config
from synthgen.storage.store import StoreReader

SIZE = 32


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("gen") / "spade", "spade", CAMUS, image_size=SIZE)


# the generators a build may run: a trained one with the appearance stage (the default), without it,
# and the randomised generator
VARIANTS = {
    "gan+appearance": {},
    "gan": {"appearance": {"enabled": False}},
    "randomised": {"generator": "randomised"},
}


def config_for(checkpoint, variant="gan+appearance", **overrides):
    base = {
        "n": 40,
        "image_size": [SIZE, SIZE],
        "shard_size": 16,
        "generator": str(checkpoint),
        "batch_size": 8,
        "backend": "onnxruntime",
    }
    return load_build_config(None, base | VARIANTS[variant] | overrides)


def store_arrays(url) -> dict[str, np.ndarray]:
    root = zarr.open_group(url, mode="r")
    names = ["images", "labels", *(f"meta/{k}" for k in root["meta"].array_keys())]
    return {name: root[name][:] for name in names}


def assert_same_store(a, b):
    arrays_a, arrays_b = store_arrays(a), store_arrays(b)
    assert arrays_a.keys() == arrays_b.keys()
    for name in arrays_a:
        np.testing.assert_array_equal(arrays_a[name], arrays_b[name], err_msg=name)
    attrs_a, attrs_b = StoreReader(a).attrs, StoreReader(b).attrs
    assert attrs_a.complete_shards == attrs_b.complete_shards
    assert attrs_a.provenance["build_config"] == attrs_b.provenance["build_config"]


@pytest.mark.parametrize("variant", ["gan+appearance", "randomised"])
def test_replay_rebuilds_each_stored_label_map(tmp_path, checkpoint, variant):
    out = str(tmp_path / "r.zarr")
    build_dataset(out, config_for(checkpoint, variant), RunOptions(scheduler="sync", progress=False))
    reader = StoreReader(out)
    labels = reader.read_labels(0, 40)
    redrawn = np.flatnonzero(reader.read_meta("attempt") > 0)
    for i in sorted({0, 17, 39, *redrawn[:3].tolist()}):  # first draws and gate redraws
        np.testing.assert_array_equal(replay(out, i), labels[i], err_msg=f"sample {i}")
    assert not np.array_equal(replay(out, 1), labels[0])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_build_writes_a_complete_store(tmp_path, checkpoint, variant):
    out = str(tmp_path / "a.zarr")
    config = config_for(checkpoint, variant)
    summary = build_dataset(out, config, RunOptions(scheduler="sync", progress=False))
    reader = StoreReader(out)
    assert reader.attrs.is_complete and reader.num_available == 40
    assert summary.shards_built == 3 and summary.gate_checked >= 40
    images, labels = reader.read_block(0, 40)
    assert images.shape == (40, SIZE, SIZE) and images.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    assert (reader.read_meta("plausibility") == 0).all()  # every kept map passed the gate
    assert len(np.unique(reader.read_meta("seed"))) == 40
    # outside the ultrasound sector the images are blank: the fixed one, or each sample's own
    from synthgen.kernels import sector_mask

    if config.restyle is None:
        assert (images[:, ~sector_mask((SIZE, SIZE))] == 0).all()
        assert "appearance" not in {m.name for m in reader.attrs.layout.meta}
        return
    params = reader.read_meta("appearance")
    assert params.shape == (40, reader.attrs.layout.meta_field("appearance").shape[0])
    for image, p in zip(images, params, strict=True):
        assert (image[~sample_sector(p, (SIZE, SIZE))] == 0).all()
    assert len({p.tobytes() for p in params}) == 40  # one draw per sample


def sample_sector(params, shape):
    """Pixels that a stored draw's sector covers at all: the signed distance of the pixel centre to
    the nearest sector edge (straight edges, elliptic far boundary) above -0.5, with a small margin."""
    import synthgen.kernels.randomise as k

    h, w = shape
    py, px = np.mgrid[:h, :w] + 0.5
    py, px = py - params[k.APEX_Y] * h, px - params[k.APEX_X] * w
    half, tilt = np.radians(params[k.HALF_ANGLE]), np.radians(params[k.TILT])
    d_left = px * np.cos(tilt - half) - py * np.sin(tilt - half)
    d_right = py * np.sin(tilt + half) - px * np.cos(tilt + half)
    a, b = params[k.WIDTH] * w, params[k.DEPTH] * h
    q = np.hypot(px / a, py / b)
    d_arc = (1 - q) * q / np.maximum(np.hypot(px / a**2, py / b**2), 1e-12)
    return np.minimum(np.minimum(d_left, d_right), d_arc) > -0.5 - 1e-3


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_same_seed_same_bytes_on_sync_and_threads(tmp_path, checkpoint, variant):
    config = config_for(checkpoint, variant)
    build_dataset(str(tmp_path / "sync.zarr"), config, RunOptions(scheduler="sync", progress=False))
    build_dataset(
        str(tmp_path / "thr.zarr"), config, RunOptions(scheduler="threads", workers=3, progress=False)
    )
    assert_same_store(str(tmp_path / "sync.zarr"), str(tmp_path / "thr.zarr"))
    other = config_for(checkpoint, variant, seed=1)
    build_dataset(str(tmp_path / "seed1.zarr"), other, RunOptions(scheduler="sync", progress=False))
    assert not np.array_equal(
        store_arrays(str(tmp_path / "sync.zarr"))["labels"],
        store_arrays(str(tmp_path / "seed1.zarr"))["labels"],
    )


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["gan+appearance", "randomised"])
def test_same_bytes_with_local_processes(tmp_path, checkpoint, variant):
    config = config_for(checkpoint, variant)
    build_dataset(str(tmp_path / "sync.zarr"), config, RunOptions(scheduler="sync", progress=False))
    build_dataset(
        str(tmp_path / "proc.zarr"), config, RunOptions(scheduler="processes", workers=2, progress=False)
    )
    assert_same_store(str(tmp_path / "sync.zarr"), str(tmp_path / "proc.zarr"))


@pytest.mark.parametrize("variant", ["gan+appearance", "randomised"])
def test_resume_finishes_only_missing_shards(tmp_path, checkpoint, variant):
    config = config_for(checkpoint, variant)
    full = str(tmp_path / "full.zarr")
    build_dataset(full, config, RunOptions(scheduler="sync", progress=False))
    part = str(tmp_path / "part.zarr")
    build_dataset(part, config, RunOptions(scheduler="sync", progress=False))
    # forget shard 1 as if the build had died before recording it, and scribble over its data
    root = zarr.open_group(part, mode="r+")
    attrs = dict(root.attrs["synthgen"])
    attrs["complete_shards"] = [0, 2]
    root.attrs["synthgen"] = attrs
    root["images"][16:32] = 7
    summary = build_dataset(part, config, RunOptions(scheduler="sync", progress=False))
    assert (summary.shards_built, summary.shards_skipped) == (1, 2)
    assert_same_store(full, part)


def _cli(*args):
    return [sys.executable, "-m", "synthgen.cli", *args]


def test_a_build_on_onnx_runtime_never_imports_torch(tmp_path, checkpoint):
    """torch takes seconds to import in each process, and a build on ONNX Runtime needs none of it: not the
    coordinator, not a shard task (the sync scheduler runs the tasks in the coordinating process)."""
    cached_onnx(checkpoint)  # exporting needs torch; the build finds the export cached
    argv = [
        "synthgen", "build-dataset", "--out", str(tmp_path / "a.zarr"), "--n", "16", "--image-size", str(SIZE),
        str(SIZE), "--shard-size", "8", "--generator", str(checkpoint), "--backend", "onnxruntime",
        "--scheduler", "sync", "--quiet",
    ]  # fmt: skip
    code = (
        "import sys\n"
        "from synthgen.cli import main\n"
        f"sys.argv = {argv!r}\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert StoreReader(str(tmp_path / "a.zarr")).complete_shards == (0, 1)
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
@pytest.mark.parametrize("generator", ["checkpoint", "randomised"])
def test_kill_9_then_rerun_gives_the_uninterrupted_bytes(tmp_path, checkpoint, generator):
    args = [
        "build-dataset", "--n", "96", "--image-size", str(SIZE), str(SIZE), "--shard-size", "8",
        "--generator", str(checkpoint) if generator == "checkpoint" else "randomised",
        "--batch-size", "8", "--backend", "onnxruntime", "--scheduler", "sync", "--quiet",
    ]  # fmt: skip
    killed = str(tmp_path / "killed.zarr")
    proc = subprocess.Popen(
        _cli(*args, "--out", killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline:  # kill as soon as a few shards are recorded, mid-build
        try:
            if len(StoreReader(killed).complete_shards) >= 3:
                break
        except Exception:
            pass
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = StoreReader(killed).complete_shards
    assert 3 <= len(done) < 12, "the build should have been killed mid-way"
    subprocess.run(_cli(*args, "--out", killed), check=True, capture_output=True)
    full = str(tmp_path / "full.zarr")
    subprocess.run(_cli(*args, "--out", full), check=True, capture_output=True)
    assert_same_store(full, killed)


def test_dry_run_prints_the_plan(tmp_path, checkpoint):
    plan = plan_build(
        str(tmp_path / "x.zarr"), config_for(checkpoint, n=1000), RunOptions(workers=2), calibration=8
    )
    text = "\n".join(plan.lines())
    assert "63 of 16 samples" in text and "63 to build" in text and "estimated time" in text
    assert not (tmp_path / "x.zarr").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--preset", "xray"], "build preset"),
        (["--n", "0"], "n .*>= 1"),
        (["--scheduler", "mpi"], "scheduler"),
        (["--image-size", "48", "48"], "image-size"),
        (["--n", "1000000000000"], "Not enough disk space"),
        (["--backend", "cuda"], "backend"),
    ],
)
def test_bad_input_gives_one_line_and_exit_1(tmp_path, checkpoint, extra, message):
    out = tmp_path / "o.zarr"
    base = ["build-dataset", "--out", str(out), "--generator", str(checkpoint), "--image-size", "32", "32"]
    result = CliRunner().invoke(cli, [*base, *extra])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("synthgen: error:")
    import re

    assert re.search(message, lines[0]), lines[0]
    assert not out.exists()


def test_checkpoint_of_another_schema_is_refused(tmp_path):
    acdc = random_checkpoint(tmp_path / "acdc", "spade", ACDC, image_size=SIZE)
    result = CliRunner().invoke(
        cli,
        [
            "build-dataset",
            "--out",
            str(tmp_path / "o.zarr"),
            "--generator",
            str(acdc),
            "--image-size",
            "32",
            "32",
        ],
    )
    assert result.exit_code == 1
    assert "label schema 'camus'" in result.stderr and "'acdc'" in result.stderr
    assert not (tmp_path / "o.zarr").exists()


def test_output_of_another_kind_is_refused(tmp_path, checkpoint):
    plain = tmp_path / "plain.zarr"
    zarr.open_group(str(plain), mode="w")
    args = ["build-dataset", "--generator", str(checkpoint), "--image-size", "32", "32", "--n", "20"]
    result = CliRunner().invoke(cli, [*args, "--out", str(plain)])
    assert result.exit_code == 1 and "not a synthgen dataset build" in result.stderr
    assert list(zarr.open_group(str(plain), mode="r").array_keys()) == []  # untouched
    built = tmp_path / "built.zarr"
    assert (
        CliRunner().invoke(cli, [*args, "--out", str(built), "--quiet", "--scheduler", "sync"]).exit_code == 0
    )
    result = CliRunner().invoke(cli, [*args, "--out", str(built), "--seed", "5"])
    assert result.exit_code == 1 and "different build (differs in ['seed'])" in result.stderr


@pytest.mark.slow
def test_distributed_cluster_survives_a_killed_worker(tmp_path, checkpoint):
    """A real `dask scheduler` and two `dask worker` processes on loopback; one worker is killed mid-build."""
    with loopback_cluster(os.environ) as (address, procs):
        config = config_for(checkpoint, n=96, shard_size=8)
        out = str(tmp_path / "dist.zarr")

        import threading

        def kill_when_under_way():
            deadline = time.time() + 120
            while time.time() < deadline:
                try:
                    if len(StoreReader(out).complete_shards) >= 2:
                        break
                except Exception:
                    pass
                time.sleep(0.05)
            procs[1].send_signal(signal.SIGKILL)

        killer = threading.Thread(target=kill_when_under_way)
        killer.start()
        summary = build_dataset(out, config, RunOptions(scheduler=address, progress=False))
        killer.join()
        assert procs[1].wait(timeout=10) == -signal.SIGKILL
        assert summary.shards_built == 12
        reference = str(tmp_path / "sync.zarr")
        build_dataset(reference, config, RunOptions(scheduler="sync", progress=False))
        assert_same_store(reference, out)
