"""Honest splits through the CLI: train-seg leaves out test and validation patients, validates on a split
disjoint from both, records what it read; evaluate seg warns (or refuses) on seen samples; realism
refuses a segmenter trained on the judged store."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.data import disc_labels
from helpers.seg import make_seg_store, pair_images

import synthgen.trainers.segmenter as segmenter_module
from synthgen.cli import cli
from synthgen.schemas import CAMUS
from synthgen.schemas.store_layout import Intensity, StoreAttrs, StoreLayout
from synthgen.storage.splits import RunSplits, is_test_patient, is_val_patient
from synthgen.storage.store import StoreWriter

pytestmark = pytest.mark.usefixtures("torch_one_thread")

PATIENTS = np.repeat(np.arange(1, 21), 2)  # 20 patients, 2 samples each
TEST_P, VAL_P = {10, 20}, {5, 15}
TINY = [
    *("--arch", "unet", "--width", "4", "--depth", "2", "--image-size", "32", "32"),
    *("--batch-size", "4", "--lr", "0.03", "--device", "cpu", "--no-progress", "--no-augment"),
]


def synthetic_store(url: str, n: int = 16) -> str:
    """A store as build-dataset writes one: provenance ``build_config``, no patients."""
    labels = disc_labels(n, 32, 32, seed=7)
    layout = StoreLayout(n=n, image_shape=(32, 32), shard_size=8)
    provenance = {"build_config": {"preset": "test"}}
    writer = StoreWriter.create(
        url, StoreAttrs(layout, CAMUS, Intensity.for_dtype("uint8"), None, provenance)
    )
    for k in range(layout.num_shards):
        a, b = layout.shard_bounds(k)
        writer.write_shard(k, pair_images(labels[a:b], k), labels[a:b], {})
    writer.mark_complete(range(layout.num_shards))
    return url


@pytest.fixture
def real(tmp_path):
    return make_seg_store(str(tmp_path / "real.zarr"), n=40, patients=PATIENTS)


@pytest.fixture
def read_indices(monkeypatch):
    """Every sample index the trainer's loaders served: {'train': {(store, index)}, 'val': {index}}."""
    seen = {"train": set(), "val": set()}

    class Spy(segmenter_module.StoreStream):
        def _collate(self, parts, rng):
            batch = super()._collate(parts, rng)
            pairs = zip(batch["store"].tolist(), batch["index"].tolist(), strict=True)
            if self.config.shuffle:
                seen["train"].update(pairs)
            else:
                seen["val"].update(i for _, i in pairs)
            return batch

    monkeypatch.setattr(segmenter_module, "StoreStream", Spy)
    return seen


def train(train, out, *extra, steps=8):
    result = CliRunner().invoke(
        cli, ["train-seg", train, str(out), *TINY, "--steps", str(steps), "--val-every", str(steps), *extra]
    )
    assert result.exit_code == 0, result.output
    return result, RunSplits.read(out / "best", {})


def test_default_split_leaves_out_test_and_validation_patients(real, tmp_path, read_indices):
    result, splits = train(real, tmp_path / "run")  # 32 training samples, batch 4: one epoch in 8 steps
    held = {int(i) for i in np.flatnonzero(np.isin(PATIENTS, sorted(TEST_P | VAL_P)))}
    trained = {i for _, i in read_indices["train"]}
    assert trained == set(range(40)) - held and len(trained) == 32
    assert read_indices["val"] == {int(i) for i in np.flatnonzero(np.isin(PATIENTS, sorted(VAL_P)))}
    # the checkpoint records what was read
    (seen,) = splits.train
    assert (
        set(seen.indices.tolist()) == trained
        and set(seen.patients.tolist()) == set(range(1, 21)) - TEST_P - VAL_P
    )
    assert seen.split == "train" and seen.by == "patient" and seen.without_val
    assert set(splits.val.patients.tolist()) == VAL_P and splits.val.split == "val"
    assert splits.val.store_hash == seen.store_hash and seen.store_hash.startswith("sha256:")
    assert "validated on" in result.stdout and "4 samples of patients 5, 15" in result.stdout
    assert "note" not in result.output


def test_split_all_includes_test_patients(real, tmp_path, read_indices):
    _, splits = train(real, tmp_path / "all", "--split", "all", steps=9)  # 36 samples: one epoch
    trained = {i for _, i in read_indices["train"]}
    assert set(PATIENTS[sorted(trained)].tolist()) == set(range(1, 21)) - VAL_P  # test in, validation out
    assert splits.train[0].split == "all"

    other = make_seg_store(str(tmp_path / "other.zarr"), n=8, seed=3)
    read_indices["train"].clear()
    _, splits = train(real, tmp_path / "other", "--split", "all", "--val", other, steps=10)
    assert {i for _, i in read_indices["train"]} == set(range(40))  # validation elsewhere: every sample
    assert splits.val.split == "all" and splits.val.n == 8 and not splits.train[0].without_val


def test_store_without_patients_is_split_by_sample_with_a_note(tmp_path, read_indices):
    store = make_seg_store(str(tmp_path / "anon.zarr"), n=40)
    result, splits = train(store, tmp_path / "run")
    note = f"synthgen: note: {store} has no patient metadata: split by sample index instead"
    assert [line for line in result.stderr.splitlines() if line.startswith("synthgen: note:")] == [
        note + " (index % 10 == 0: test, % 10 == 5: validation)."
    ]
    assert {i for _, i in read_indices["train"]} == {i for i in range(40) if i % 10 not in (0, 5)}
    assert read_indices["val"] == {5, 15, 25, 35}
    assert splits.train[0].by == splits.val.by == "sample"


def test_synthetic_stores_are_read_whole_and_validation_defaults_to_the_real_store(
    real, tmp_path, read_indices
):
    synth = synthetic_store(str(tmp_path / "synth.zarr"))
    _, splits = train(f"{synth}:0.5,{real}:0.5", tmp_path / "mix", steps=12)
    whole, part = splits.train
    assert whole.by == "whole" and whole.n == 16 and part.by == "patient" and part.n == 32
    assert splits.val.url == real and set(splits.val.patients.tolist()) == VAL_P
    by_store = {s: {i for j, i in read_indices["train"] if j == s} for s in (0, 1)}
    assert by_store[1] and not {int(p) for p in PATIENTS[sorted(by_store[1])]} & (TEST_P | VAL_P)
    assert by_store[0] and by_store[0] <= set(range(16))


def test_validation_is_never_the_test_split_or_the_training_samples(real, tmp_path):
    synth = synthetic_store(str(tmp_path / "synth.zarr"))
    cases = [
        (
            [real, "--val", f"{real}:test"],
            "Expected a validation split in ('val', 'train', 'all'). Got 'test'",
        ),
        ([real, "--val", f"{real}:train"], "Expected training samples in split 'train' of"),
        ([synth], "Expected --val STORE[:split]: the mix"),
    ]
    for args, message in cases:
        out = str(tmp_path / f"o{len(message)}")
        result = CliRunner().invoke(cli, ["train-seg", args[0], out, *args[1:], *TINY, "--steps", "2"])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1 and message in lines[0], result.output


@pytest.fixture
def checkpoint(real, tmp_path):
    train(real, tmp_path / "seg", steps=2)
    return str(tmp_path / "seg" / "best")


def evaluate(*args):
    return CliRunner().invoke(cli, ["evaluate", "seg", *args])


def test_evaluate_seg_warns_on_seen_patients_and_strict_refuses(checkpoint, real, tmp_path):
    held_out = evaluate(checkpoint, real, "--split", "test", "--out", str(tmp_path / "test"))
    assert held_out.exit_code == 0 and "warning" not in held_out.output
    summary = json.loads((tmp_path / "test" / "summary.json").read_text())
    assert summary["n"] == 4 and summary["seen_by_segmenter"] == {
        "trained": 0,
        "validated": 0,
        "warning": None,
    }

    everything = evaluate(checkpoint, real, "--out", str(tmp_path / "all"))
    assert everything.exit_code == 0, everything.output
    (warning,) = everything.stderr.strip().splitlines()
    assert warning == (
        f"synthgen: warning: 36 of the 40 evaluated samples of {real} (split 'all') were seen by the "
        "segmenter (trained on 32 samples of patients 1, 2, 3, 4, 6, 7, 8, 9 and 8 more; validated on "
        "4 samples of patients 5, 15): these scores are not held out."
    )
    seen = json.loads((tmp_path / "all" / "summary.json").read_text())["seen_by_segmenter"]
    assert seen["trained"] == 32 and seen["validated"] == 4 and seen["warning"] in warning

    val = evaluate(checkpoint, real, "--split", "val")
    assert val.exit_code == 0 and "(validated on 4 samples of patients 5, 15)" in val.stderr

    strict = evaluate(checkpoint, real, "--split", "train", "--strict")
    lines = strict.output.strip().splitlines()
    assert strict.exit_code == 1 and len(lines) == 1
    assert lines[0].startswith(
        "synthgen: error: Expected samples the segmenter never saw (--strict). Got 36 of"
    )
    assert evaluate(checkpoint, real, "--split", "test", "--strict").exit_code == 0


def test_evaluate_seg_knows_copies_and_stores_without_patients(tmp_path):
    anon = make_seg_store(str(tmp_path / "anon.zarr"), n=40)
    train(anon, tmp_path / "seg", steps=2)
    ckpt = str(tmp_path / "seg" / "best")
    held_out = evaluate(ckpt, anon, "--split", "test", "--strict")
    assert held_out.exit_code == 0, held_out.output
    assert "\n4 samples;" in held_out.stdout  # indices 0, 10, 20, 30
    # a copy at another URL has the same attributes (hash): its samples were seen all the same
    copy = str(shutil.copytree(anon, tmp_path / "copy.zarr"))
    again = evaluate(ckpt, copy, "--split", "val")
    assert again.exit_code == 0 and "(validated on 4 samples)" in again.stderr
    # another store of the same size and no patients (other attributes) is not the store trained on
    twin = make_seg_store(str(tmp_path / "twin.zarr"), n=40, seed=1, spacing=(1.0, 1.0))
    assert "warning" not in evaluate(ckpt, twin, "--split", "val").output


def test_realism_refuses_a_segmenter_trained_on_the_judged_store(real, tmp_path):
    synth = synthetic_store(str(tmp_path / "synth.zarr"))
    train(f"{real}:0.5,{synth}:0.5", tmp_path / "mixed", steps=2)
    train(real, tmp_path / "real_only", steps=2)
    options = ["--kid-subset-size", "4", "--memo-size", "16"]
    refused = CliRunner().invoke(
        cli, ["evaluate", "realism", synth, real, "--segmenter", str(tmp_path / "mixed" / "best"), *options]
    )
    lines = refused.output.strip().splitlines()
    assert refused.exit_code == 1 and len(lines) == 1
    assert lines[0].startswith(
        f"synthgen: error: Expected a segmenter that never trained on the judged store {synth}."
    )
    accepted = CliRunner().invoke(
        cli,
        ["evaluate", "realism", synth, real, "--segmenter", str(tmp_path / "real_only" / "best"), *options],
    )
    assert accepted.exit_code == 0, accepted.output


def test_rules_are_those_of_the_generative_trainers():
    assert [p for p in range(1, 31) if is_test_patient(p)] == [10, 20, 30]
    assert [p for p in range(1, 31) if is_val_patient(p)] == [5, 15, 25]
