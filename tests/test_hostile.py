"""Hostile and careless input through the CLI, as a table: each row is a situation, the exit status it must
give, a word its one ``synthgen: error:`` line must hold, and what must be true of the output afterwards
(``absent``: nothing written, not even a lease or an aside store; ``kept``: an existing output unchanged)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from helpers.checkpoints import random_checkpoint
from helpers.data import pairs_folder

from synthgen.cli import cli
from synthgen.schemas import ACDC, CAMUS

SIZE = 32


@dataclass(frozen=True)
class World:
    """What the situations start from: built once per module (tests only read them)."""

    root: Path
    checkpoint: Path  # a CAMUS generator at SIZE
    acdc_checkpoint: Path
    build: Path  # a finished build
    ingested: Path  # an ingested (not built) store
    pairs: Path  # a pairs-layout source folder
    bad_pairs: Path  # the same with a label outside the schema


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("world")
    checkpoint = random_checkpoint(root / "gen", "spade", CAMUS, image_size=SIZE)
    acdc = random_checkpoint(root / "gen_acdc", "spade", ACDC, image_size=SIZE)
    build = root / "build.zarr"
    assert CliRunner().invoke(cli, [str(a) for a in _build_args(checkpoint, build)]).exit_code == 0
    pairs = pairs_folder(root / "pairs")
    ingested = root / "ingested.zarr"
    assert CliRunner().invoke(cli, ["ingest", str(pairs), str(ingested), "--schema", "camus"]).exit_code == 0
    return World(root, checkpoint, acdc, build, ingested, pairs, pairs_folder(root / "bad_pairs", bad=True))


def _build_args(checkpoint, out, *extra) -> list:
    return [
        "build-dataset", "--out", out, "--generator", checkpoint, "--image-size", SIZE, SIZE, "--n", 16,
        "--shard-size", 8, "--batch-size", 8, "--backend", "onnxruntime", "--scheduler", "sync", "--quiet", *extra,
    ]  # fmt: skip


@dataclass(frozen=True)
class Case:
    name: str
    args: Callable[[World, Path], list]  # (world, a fresh folder) -> command line
    status: int
    needle: str
    out: Callable[[World, Path], Path] | None = None  # the output whose state is checked
    state: str = "absent"  # absent | kept
    setup: Callable[[World, Path], None] | None = None


def build(*extra, out=None):  # a build into the fresh folder (or ``out``)
    return lambda w, d: _build_args(w.checkpoint, out(w, d) if out else d / "o.zarr", *extra)


def build_out(w, d):  # the default output of B
    return d / "o.zarr"


def toml(text: str) -> Callable[[World, Path], list]:
    def args(w, d):
        (d / "b.toml").write_text(text)
        return _build_args(w.checkpoint, d / "o.zarr", "--config", d / "b.toml")

    return args


def file_at(name: str, content: bytes = b"x") -> Callable[[World, Path], None]:
    return lambda w, d: (d / name).write_bytes(content)


def folder_with_notes(name: str) -> Callable[[World, Path], None]:
    def setup(w, d):
        (d / name).mkdir()
        (d / name / "notes.txt").write_text("precious")

    return setup


def copy_of(which: str) -> Callable[[World, Path], Path]:
    """The output is a copy of a world store, made in setup (so tests never change the world)."""
    return lambda w, d: d / f"{which}.zarr"


def copy_setup(which: str) -> Callable[[World, Path], None]:
    import shutil

    return lambda w, d: shutil.copytree(getattr(w, which), d / f"{which}.zarr")


def ingest(*extra, src="pairs", out=None):  # an ingest of a world source into the fresh folder
    return lambda w, d: ["ingest", getattr(w, src) if src in ("pairs", "bad_pairs") else d / src,
                         out(w, d) if out else d / "s.zarr", "--schema", "camus", *extra]  # fmt: skip


def ingest_out(w, d):  # the default output of I
    return d / "s.zarr"


def bad_generator(w, d):
    (d / "gen").mkdir()
    (d / "gen" / "generator.json").write_text("{ not json")


def lease_held_by_parent(target: str) -> Callable[[World, Path], None]:
    """A live process (the test runner's parent) holds the lease of ``target`` (a world store name)."""

    def setup(w, d):
        import shutil

        import psutil

        shutil.copytree(getattr(w, target), d / f"{target}.zarr")
        parent = psutil.Process(os.getppid())
        lease = {"token": "t", "host": os.uname().nodename, "pid": parent.pid,
                 "process_started": parent.create_time(), "command": "build-dataset", "acquired": 0.0, "renewed": 0.0}  # fmt: skip
        (d / f"{target}.zarr.synthgen-lease").write_text(json.dumps(lease))

    return setup


CASES = [
    # -- build-dataset: values -------------------------------------------------------------------
    Case("n zero", build("--n", "0"), 1, "n (the number of samples)", build_out),
    Case("n negative", build("--n", "-5"), 1, ">= 1", build_out),
    Case("n not a number", build("--n", "ten"), 2, "not a valid integer", build_out),
    Case("seed negative", build("--seed", "-1"), 1, "seed", build_out),
    Case("seed too large", build("--seed", str(2**64)), 1, "seed", build_out),
    Case("image size too small", build("--image-size", "4", "4"), 1, "image_size", build_out),
    Case("image size one number", build("--image-size", "32"), 2, "requires 2 arguments", build_out),
    Case("image size huge", build("--image-size", "9000", "9000"), 1, "image_size", build_out),
    Case("image size not the generator's", build("--image-size", "64", "64"), 1, "generator", build_out),
    Case("shard size zero", build("--shard-size", "0"), 1, "shard_size", build_out),
    Case("batch size zero", build("--batch-size", "0"), 1, "batch_size", build_out),
    Case("unknown backend", build("--backend", "cuda"), 1, "backend", build_out),
    Case("integer image dtype", build("--dtype", "int16"), 1, "image_dtype", build_out),
    Case("unknown preset", build("--preset", "xray"), 1, "preset", build_out),
    Case("unknown scheduler", build("--scheduler", "mpi"), 1, "scheduler", build_out),
    Case("scheduler without port", build("--scheduler", "tcp://"), 1, "Dask scheduler", build_out),
    Case("workers zero", build("--workers", "0"), 1, "workers", build_out),
    Case("give-up above one", build("--max-give-up", "2"), 1, "max-give-up", build_out),
    Case("max attempts zero", build("--max-attempts", "0"), 1, "max_attempts", build_out),
    Case("displacement not a number", build("--max-displacement", "nan"), 1, "max_displacement", build_out),
    Case("displacement infinite", build("--max-displacement", "inf"), 1, "max_displacement", build_out),
    Case("spacing negative", build("--spacing", "-1"), 1, "spacing", build_out),
    Case("unknown option", build("--colour", "red"), 2, "No such option", build_out),
    # -- build-dataset: generator and source ------------------------------------------------------
    Case("generator missing", lambda w, d: [*_build_args(w.checkpoint, d / "o.zarr"), "--generator", d / "none"], 1, "generator", build_out),
    Case("generator is a file", lambda w, d: [*_build_args(w.checkpoint, d / "o.zarr"), "--generator", d / "f"], 1, "generator", build_out, setup=file_at("f")),
    Case("generator spec corrupt", lambda w, d: [*_build_args(w.checkpoint, d / "o.zarr"), "--generator", d / "gen"], 1, "generator.json", build_out, setup=bad_generator),
    # the label source opens while the generator does (start-up overlaps): when both are broken, the source's error is the one named
    Case("store source missing and generator spec corrupt", lambda w, d: [*_build_args(w.checkpoint, d / "o.zarr"), "--generator", d / "gen", "--config", d / "s.toml"], 1, "No Zarr store", build_out,
         setup=lambda w, d: (bad_generator(w, d), (d / "s.toml").write_text(f'[source]\nkind = "store"\nurl = "{d / "none.zarr"}"\n'))),
    Case("generator of another schema", lambda w, d: [*_build_args(w.acdc_checkpoint, d / "o.zarr")], 1, "schema", build_out),
    Case("source store missing", build("--source", "store", "--source-url", "/nonexistent.zarr"), 1, "nonexistent", build_out),
    Case("source store is a file", lambda w, d: _build_args(w.checkpoint, d / "o.zarr", "--source", "store", "--source-url", d / "f"), 1, "store", build_out, setup=file_at("f")),
    Case("source kind unknown", build("--source", "dream"), 1, "source.kind", build_out),
    Case("source store without url", build("--source", "store"), 1, "source.url", build_out),
    Case("source volume without url", build("--source", "volume"), 1, "source.urls", build_out),
    Case("source vae missing", build("--source", "vae", "--source-url", "/nonexistent"), 1, "shape VAE", build_out),
    Case("view misspelt", build("--view", "apikal"), 1, "source.view", build_out),
    # -- build-dataset: config files ---------------------------------------------------------------
    Case("config missing", build("--config", "/nonexistent.toml"), 1, "Cannot read build config", build_out),
    Case("config not TOML", toml("n = [\n"), 1, "Cannot parse", build_out),
    Case("config image size a number", toml("image_size = 5\n"), 1, "image_size", build_out),
    Case("config spacing nan", toml("[deform]\nspacing = nan\n"), 1, "deform.spacing", build_out),
    Case("config n a string", toml('n = "ten"\n'), 1, "n (the number of samples)", build_out),
    Case("config unknown key", toml("colour = 1\n"), 1, "Unknown key", build_out),
    Case("config unknown deform key", toml("[deform]\nwobble = 1\n"), 1, "Unknown key", build_out),
    Case("config gate a string", toml('gate = "yes"\n'), 1, "gate", build_out),
    Case("config source a number", toml("source = 3\n"), 1, "source", build_out),
    Case("config appearance range reversed", toml("[appearance]\ngamma = [2.0, 1.0]\n"), 1, "appearance.gamma", build_out),
    Case("config appearance unknown key", toml("[appearance]\nsparkle = [0, 1]\n"), 1, "sparkle", build_out),
    Case("config appearance modality", toml('[appearance]\nmodality = "xray"\n'), 1, "appearance.modality", build_out),
    Case("config randomised range a string", toml('[randomised]\nnoise = "0.1"\n'), 1, "randomised", build_out),
    # -- build-dataset: outputs ------------------------------------------------------------------
    Case("output is a file", build(out=lambda w, d: d / "f"), 1, "not a synthgen", lambda w, d: d / "f", "kept", file_at("f")),
    Case("output is a file, overwrite", build("--overwrite", out=lambda w, d: d / "f"), 1, "not a synthgen", lambda w, d: d / "f", "kept", file_at("f")),
    Case("output parent missing", build(out=lambda w, d: d / "no" / "o.zarr"), 1, "parent", lambda w, d: d / "no"),
    Case("output folder of other files", build(out=lambda w, d: d / "keep"), 1, "not a synthgen", lambda w, d: d / "keep", "kept", folder_with_notes("keep")),
    Case("output folder of other files, overwrite", build("--overwrite", out=lambda w, d: d / "keep"), 1, "not a synthgen", lambda w, d: d / "keep", "kept", folder_with_notes("keep")),
    Case("output an ingested store", build(out=copy_of("ingested")), 1, "did not write", copy_of("ingested"), "kept", copy_setup("ingested")),
    Case("output another build", build("--seed", "3", out=copy_of("build")), 1, "different build", copy_of("build"), "kept", copy_setup("build")),
    Case("output being written by another", build(out=copy_of("build")), 1, "other writer", copy_of("build"), "kept", lease_held_by_parent("build")),
    Case("dry run of 10**12 samples", build("--n", str(10**12), "--dry-run"), 0, "", build_out),
    # -- ingest ------------------------------------------------------------------------------------
    Case("ingest source missing", ingest(src="none"), 1, "", ingest_out),
    Case("ingest source is a file", ingest(src="f"), 2, "is a file", ingest_out, setup=file_at("f")),
    Case("ingest source empty", ingest(src="empty"), 1, "", ingest_out, setup=lambda w, d: (d / "empty").mkdir()),
    Case("ingest label outside the schema", ingest(src="bad_pairs"), 1, "9", ingest_out),
    Case("ingest size zero", ingest("--size", "0", "0"), 1, "size", ingest_out),
    Case("ingest shard size zero", ingest("--shard-size", "0"), 1, "shard", ingest_out),
    Case("ingest unknown schema", lambda w, d: ["ingest", w.pairs, d / "s.zarr", "--schema", "nope"], 1, "schema", ingest_out),
    Case("ingest schema file malformed", lambda w, d: ["ingest", w.pairs, d / "s.zarr", "--schema", d / "s.toml"], 1, "s.toml", ingest_out, setup=file_at("s.toml", b"[[[")),
    Case("ingest pairs without schema", lambda w, d: ["ingest", w.pairs, d / "s.zarr"], 1, "schema", ingest_out),
    Case("ingest over a store", ingest(out=copy_of("ingested")), 1, "already exists", copy_of("ingested"), "kept", copy_setup("ingested")),
    Case("ingest bad data over a store", ingest("--overwrite", src="bad_pairs", out=copy_of("ingested")), 1, "9", copy_of("ingested"), "kept", copy_setup("ingested")),
    Case("ingest over a folder of other files", ingest("--overwrite", out=lambda w, d: d / "keep"), 1, "not a synthgen", lambda w, d: d / "keep", "kept", folder_with_notes("keep")),
    # -- readers ---------------------------------------------------------------------------------------
    Case("inspect missing", lambda w, d: ["inspect", d / "none.zarr"], 1, "No Zarr store", lambda w, d: d / "none.zarr"),
    Case("inspect a plain Zarr group", lambda w, d: ["inspect", d / "g.zarr"], 1, "not a synthgen store", lambda w, d: d / "g.zarr", "kept", lambda w, d: zarr.open_group(str(d / "g.zarr"), mode="w")),
    Case("inspect garbage metadata", lambda w, d: ["inspect", d / "g.zarr"], 1, "", lambda w, d: d / "g.zarr", "kept", lambda w, d: (d / "g.zarr").mkdir() or (d / "g.zarr" / "zarr.json").write_text("{]")),
    Case("verify a folder of other files", lambda w, d: ["verify", d / "keep"], 1, "", lambda w, d: d / "keep", "kept", folder_with_notes("keep")),
    Case("verify repair while another writes", lambda w, d: ["verify", d / "build.zarr", "--repair"], 0, "", copy_of("build"), "kept", lease_held_by_parent("build")),
    Case("train-seg store missing", lambda w, d: ["train-seg", d / "none.zarr", d / "run", "--val", d / "none.zarr"], 1, "none.zarr", lambda w, d: d / "run"),
    Case("train-seg zero steps", lambda w, d: ["train-seg", w.ingested, d / "run", "--val", w.ingested, "--steps", "0"], 1, "steps", lambda w, d: d / "run"),
    Case("evaluate with no checkpoint", lambda w, d: ["evaluate", "seg", d / "none", w.ingested], 1, "none", lambda w, d: d / "none"),
    Case("export a missing checkpoint", lambda w, d: ["export", d / "none"], 2, "does not exist", lambda w, d: d / "none"),
    Case("unknown command", lambda w, d: ["fly"], 2, "No such command", lambda w, d: d / "nothing"),
]  # fmt: skip


def _snapshot(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_the_table_is_long_enough():
    assert len(CASES) >= 60 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(case: Case, world: World, tmp_path: Path):
    if case.setup is not None:
        case.setup(world, tmp_path)
    out = case.out(world, tmp_path) if case.out else None
    before = _snapshot(out) if out is not None and out.exists() else None
    argv = [str(a) for a in case.args(world, tmp_path)]  # may write an input file (a config)
    before_names = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == case.status, result.output
    if case.status:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("synthgen: error: "), result.stderr
        assert case.needle.lower() in lines[0].lower(), lines[0]
    if out is None or case.status == 0:
        return
    if case.state == "absent":
        assert not out.exists(), f"{out} was written"
    else:
        assert _snapshot(out) == before, f"{out} changed"
    assert sorted(p.name for p in tmp_path.iterdir()) == before_names  # no lease, aside store or scratch left


def test_a_read_only_output_folder(world: World, tmp_path: Path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        result = CliRunner().invoke(cli, [str(a) for a in _build_args(world.checkpoint, locked / "o.zarr")])
        assert result.exit_code == 1 and result.stderr.startswith("synthgen: error:")
    finally:
        locked.chmod(stat.S_IRWXU)
    assert list(locked.iterdir()) == []


def test_world_stores_are_intact(world: World):
    assert CliRunner().invoke(cli, ["verify", str(world.build), "--quiet"]).exit_code == 0
    assert np.array_equal(zarr.open_group(str(world.ingested), mode="r")["labels"][:].shape, (6, 24, 24))
