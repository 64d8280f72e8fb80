"""``synthgen ingest --layout nnunet``: nnU-Net v2 raw datasets read back equal to the store that
``synthgen convert --to nnunet`` wrote them from; bad folders fail in one line and leave nothing.
Also: files no reader opens (DICOM) are named as such, not blamed on a missing label."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from helpers.cli import assert_clean_failure as clean_failure
from helpers.data import disc_labels
from PIL import Image

from synthgen.cli import cli
from synthgen.schemas import CAMUS
from synthgen.schemas.store_layout import Intensity, MetaField, StoreAttrs, StoreLayout
from synthgen.storage.store import StoreReader, StoreWriter

H, W = 12, 16  # rows, cols: not square, so a missing or extra transpose shows


def make_store(url: Path, *, n: int = 6, channels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A uint8 CAMUS-schema store of ``n`` samples (shards of 4) with pixel spacing; its images and labels."""
    labels = disc_labels(n, H, W, seed=5)
    rng = np.random.default_rng(1)
    shape = (n, channels, H, W) if channels else (n, H, W)
    grey = labels[:, None] if channels else labels
    images = (grey * 50 + rng.integers(0, 40, shape)).astype(np.uint8)
    layout = StoreLayout(
        n=n,
        image_shape=(channels, H, W) if channels else (H, W),
        image_dtype="uint8",
        shard_size=4,
        meta=(MetaField("patient", "int32"),),
    )
    attrs = StoreAttrs(layout, CAMUS, Intensity.for_dtype("uint8"), spacing=(0.5, 0.25))
    writer = StoreWriter.create(str(url), attrs)
    for k in range(layout.num_shards):
        a, b = layout.shard_bounds(k)
        writer.write_shard(k, images[a:b], labels[a:b], {"patient": np.arange(a, b, dtype=np.int32)})
    writer.mark_complete(range(layout.num_shards))
    return images, labels


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_clean_failure(result, out: Path, *needles: str) -> None:
    clean_failure(result, out, *needles, no_leftovers=True)


def ok(*args):
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def converted(tmp_path: Path, channels: int | None = None) -> tuple[Path, np.ndarray, np.ndarray]:
    images, labels = make_store(tmp_path / "s.zarr", channels=channels)
    ok("convert", tmp_path / "s.zarr", tmp_path / "nn", "--to", "nnunet", "--quiet")
    return tmp_path / "nn", images, labels


@pytest.mark.parametrize("channels", [None, 2])
def test_round_trip_through_convert(tmp_path, channels):
    nn, images, labels = converted(tmp_path, channels)
    out = tmp_path / "back.zarr"
    result = ok("ingest", nn, out, "--layout", "nnunet")
    assert "nnunet layout" in result.output
    back = StoreReader(str(out))
    assert back.layout.image_shape == ((channels, H, W) if channels else (H, W))
    assert back.layout.image_dtype == "uint8"
    got_images, got_labels = back.read_block(0, back.layout.n)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert back.schema.names == CAMUS.names and back.schema.values == CAMUS.values
    np.testing.assert_allclose(back.read_meta("spacing", 0, back.layout.n), [[0.5, 0.25]] * len(images))
    sources = back.attrs.provenance["sources"]
    assert sources[0] == "imagesTr/case_000000_0000.nii.gz"
    assert back.attrs.provenance["label_sources"][0] == "labelsTr/case_000000.nii.gz"


def test_schema_names_and_values_from_dataset_json(tmp_path):
    nn, _, _ = converted(tmp_path)
    spec = json.loads((nn / "dataset.json").read_text())
    spec["labels"] = {"background": 0, "myo": 2, "cavity": 1, "atrium": 3}
    spec["name"] = "Heart"
    (nn / "dataset.json").write_text(json.dumps(spec))
    out = tmp_path / "back.zarr"
    ok("ingest", nn, out, "--layout", "nnunet")
    schema = StoreReader(str(out)).schema
    assert schema.name == "Heart"
    assert schema.names == ("cavity", "myo", "atrium") and schema.values == (1, 2, 3)
    ok("ingest", nn, tmp_path / "camus.zarr", "--layout", "nnunet", "--schema", "camus")  # --schema wins
    assert StoreReader(str(tmp_path / "camus.zarr")).schema.name == "camus"
    spec["labels"] = {"background": 0, "cavity": 1}  # value 2 and 3 in the files are not in the schema
    (nn / "dataset.json").write_text(json.dumps(spec))
    bad = tmp_path / "bad.zarr"
    assert_clean_failure(run("ingest", nn, bad, "--layout", "nnunet"), bad, "Label value 2", "not in schema")


def test_3d_volumes_are_sliced(tmp_path):
    nn = tmp_path / "nn"
    (nn / "imagesTr").mkdir(parents=True)
    (nn / "labelsTr").mkdir()
    spec = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "lv": 1}, "file_ending": ".nii.gz"}
    (nn / "dataset.json").write_text(json.dumps(spec))
    labels = (disc_labels(3, H, W, seed=2) > 0).astype(np.uint8)  # (slices, rows, cols)
    image = (labels * 100 + 7).astype(np.int16)
    for array, path in ((image, "imagesTr/vol_0000.nii.gz"), (labels, "labelsTr/vol.nii.gz")):
        nib.save(nib.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0)), np.eye(4)), nn / path)
    out = tmp_path / "back.zarr"
    ok("ingest", nn, out, "--layout", "nnunet")
    back = StoreReader(str(out))
    got_images, got_labels = back.read_block(0, 3)
    np.testing.assert_array_equal(got_images, image)
    np.testing.assert_array_equal(got_labels, labels)
    np.testing.assert_array_equal(back.read_meta("slice_index", 0, 3), [0, 1, 2])


def test_missing_dataset_json(tmp_path):
    nn, _, _ = converted(tmp_path)
    (nn / "dataset.json").unlink()
    out = tmp_path / "back.zarr"
    assert_clean_failure(run("ingest", nn, out, "--layout", "nnunet"), out, "dataset.json")


def test_bad_dataset_json(tmp_path):
    nn, _, _ = converted(tmp_path)
    spec = json.loads((nn / "dataset.json").read_text())
    out = tmp_path / "back.zarr"
    for key, value, needle in (
        ("labels", {"background": 0, "heart": [1, 2]}, "region"),
        ("labels", {"cavity": 1}, "background 0"),
        ("file_ending", ".dcm", "file_ending"),
        ("channel_names", {"1": "T1"}, "channel_names"),
    ):
        (nn / "dataset.json").write_text(json.dumps(spec | {key: value}))
        assert_clean_failure(run("ingest", nn, out, "--layout", "nnunet"), out, needle)
    (nn / "dataset.json").write_text("{not json")
    assert_clean_failure(run("ingest", nn, out, "--layout", "nnunet"), out, "dataset.json")


def test_label_missing_and_image_missing(tmp_path):
    nn, _, _ = converted(tmp_path)
    out = tmp_path / "back.zarr"
    (nn / "labelsTr" / "case_000002.nii.gz").unlink()
    assert_clean_failure(
        run("ingest", nn, out, "--layout", "nnunet"),
        out,
        "case_000002 has no label",
        "labelsTr/case_000002.nii.gz",
    )
    (nn / "imagesTr" / "case_000002_0000.nii.gz").unlink()
    (nn / "imagesTr" / "case_000003_0000.nii.gz").unlink()
    assert_clean_failure(
        run("ingest", nn, out, "--layout", "nnunet"), out, "labelsTr/case_000003.nii.gz has no image"
    )


def test_inconsistent_channel_counts(tmp_path):
    nn, _, _ = converted(tmp_path, channels=2)
    out = tmp_path / "back.zarr"
    (nn / "imagesTr" / "case_000001_0001.nii.gz").unlink()
    assert_clean_failure(
        run("ingest", nn, out, "--layout", "nnunet"),
        out,
        "Expected 2 channel file(s)",
        "case_000001 has _0000.",
    )
    spec = json.loads((nn / "dataset.json").read_text())
    (nn / "dataset.json").write_text(json.dumps(spec | {"channel_names": {"0": "a", "1": "b", "2": "c"}}))
    assert_clean_failure(run("ingest", nn, out, "--layout", "nnunet"), out, "Expected 3 channel file(s)")


def test_channel_files_of_different_shapes(tmp_path):
    nn, _, _ = converted(tmp_path, channels=2)
    out = tmp_path / "back.zarr"
    other = nn / "imagesTr" / "case_000001_0001.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((W, H + 1), np.uint8), np.eye(4)), other)
    assert_clean_failure(run("ingest", nn, out, "--layout", "nnunet"), out, "share shape", "case_000001_0001")


def test_a_broken_dicom_is_named_not_blamed_on_a_missing_label(tmp_path):
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    labels = disc_labels(2, H, W, seed=0)
    Image.fromarray((labels[0] * 50).astype(np.uint8)).save(pairs / "case1.png")
    Image.fromarray(labels[0]).save(pairs / "case1_gt.png")
    (pairs / "case0.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)  # the marker, and no image
    Image.fromarray(labels[1]).save(pairs / "case0_gt.png")
    out = tmp_path / "out.zarr"
    result = run("ingest", pairs, out, "--schema", "camus")
    assert_clean_failure(result, out, "case0.dcm", "not a DICOM image")
    assert "has no label" not in result.stderr
    # a DICOM label is named (labels are PNG, NIfTI, MHD or NumPy); without a suffix known by its marker
    (pairs / "case0.dcm").unlink()
    (pairs / "case0_gt.png").unlink()
    Image.fromarray((labels[1] * 50).astype(np.uint8)).save(pairs / "case0.png")
    (pairs / "case0_gt").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    assert_clean_failure(run("ingest", pairs, out, "--schema", "camus"), out, "case0_gt", "DICOM")
    # a lone DICOM image without its label says which label is missing
    only = tmp_path / "only"
    only.mkdir()
    (only / "IM0001.dcm").write_bytes(b"\0" * 132)
    assert_clean_failure(run("ingest", only, out), out, "IM0001")


def test_dicom_in_nnunet_folder(tmp_path):
    nn, _, _ = converted(tmp_path)
    out = tmp_path / "back.zarr"
    (nn / "imagesTr" / "case_000002_0000.nii.gz").rename(nn / "imagesTr" / "case_000002_0000.dcm")
    assert_clean_failure(
        run("ingest", nn, out, "--layout", "nnunet"),
        out,
        "imagesTr/case_000002_0000.dcm: DICOM is not read by this layout",
        "labelsTr/case_000002.nii.gz has no image",
    )
