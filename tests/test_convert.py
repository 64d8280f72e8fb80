"""``synthgen convert``: nnU-Net v2, NIfTI and PNG outputs read back equal the store; bad input leaves nothing."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from click.testing import CliRunner
from helpers.data import disc_labels
from PIL import Image

import synthgen.storage.convert as convert_module
from synthgen.cli import cli
from synthgen.schemas import CAMUS, LabelClass, LabelSchema
from synthgen.schemas.store_layout import Intensity, MetaField, StoreAttrs, StoreLayout
from synthgen.storage.convert import MARKER, case_id
from synthgen.storage.store import StoreReader, StoreWriter

H, W = 12, 16  # rows, cols: not square, so a missing or extra transpose shows
PATIENTS = np.array([7, 10, 10, 11, 20, 21, 30, 33, 40, 41], np.int32)  # tests: 10, 20, 30, 40


def make_store(
    url: Path,
    *,
    n: int = 10,
    dtype: str = "uint8",
    channels: int | None = None,
    spacing: tuple[float, float] | None = None,
    meta_spacing: np.ndarray | None = None,
    complete=None,
    schema: LabelSchema = CAMUS,
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A store of ``n`` samples (shards of 4) with meta/patient; returns its images and labels."""
    labels = disc_labels(n, H, W, seed=3) if labels is None else labels
    rng = np.random.default_rng(0)
    shape = (n, channels, H, W) if channels else (n, H, W)
    grey = labels[:, None] if channels else labels
    raw = grey * 50.0 + rng.uniform(0, 40, shape)
    images = (raw / 255.0 if dtype.startswith("float") else raw).astype(dtype)
    meta = [MetaField("patient", "int32")]
    if meta_spacing is not None:
        meta.append(MetaField("spacing", "float32", (2,)))
    image_shape = (channels, H, W) if channels else (H, W)
    layout = StoreLayout(n=n, image_shape=image_shape, image_dtype=dtype, shard_size=4, meta=tuple(meta))
    attrs = StoreAttrs(layout, schema, Intensity.for_dtype(dtype), spacing=spacing)
    writer = StoreWriter.create(str(url), attrs)
    shards = range(layout.num_shards) if complete is None else complete
    for k in shards:
        a, b = layout.shard_bounds(k)
        extra = {"patient": PATIENTS[a:b]}
        if meta_spacing is not None:
            extra["spacing"] = meta_spacing[a:b].astype(np.float32)
        writer.write_shard(k, images[a:b], labels[a:b], extra)
    writer.mark_complete(shards)
    return images, labels


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def ok(*args):
    result = run(*args, "--quiet")
    assert result.exit_code == 0, result.output
    return result


def assert_one_line_error(result, status: int, *needles: str) -> None:
    assert result.exit_code == status, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("synthgen: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def read_nifti(path: Path) -> np.ndarray:
    """A 2D NIfTI file as the store's (rows, cols) array (NIfTI indexes x = column first)."""
    return np.asanyarray(nib.load(path).dataobj).T


# -- nnU-Net ---------------------------------------------------------------------------------------
def test_nnunet_files_equal_the_store_and_dataset_json(tmp_path):
    images, labels = make_store(tmp_path / "s.zarr", spacing=(0.5, 0.25), complete=[0, 2])  # shard 1 not
    out = tmp_path / "nn"
    result = ok("convert", tmp_path / "s.zarr", out, "--to", "nnunet")
    kept = [0, 1, 2, 3, 8, 9]  # samples of complete shards only
    cases = [case_id(i, 10) for i in kept]
    assert cases[0] == "case_000000"
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [f"{c}_0000.nii.gz" for c in cases]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [f"{c}.nii.gz" for c in cases]
    assert not (out / "imagesTs").exists()
    for i, case in zip(kept, cases, strict=True):
        image_file, label_file = out / "imagesTr" / f"{case}_0000.nii.gz", out / "labelsTr" / f"{case}.nii.gz"
        image, label = nib.load(image_file), nib.load(label_file)
        np.testing.assert_array_equal(read_nifti(image_file), images[i])
        np.testing.assert_array_equal(read_nifti(label_file), labels[i])
        assert image.get_data_dtype() == np.uint8 and label.get_data_dtype() == np.uint8
        assert image.shape == label.shape == (W, H)
        np.testing.assert_array_equal(image.affine, label.affine)
        assert image.header.get_zooms() == (0.25, 0.5)  # (column, row) pixel size
        assert image.header.get_xyzt_units()[0] == "mm"
        # SimpleITK (nnU-Net's reader of these files) sees the store's array as it is, same geometry
        itk_image, itk_label = sitk.ReadImage(str(image_file)), sitk.ReadImage(str(label_file))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(itk_image), images[i])
        assert itk_image.GetSpacing() == itk_label.GetSpacing() == (0.25, 0.5)
        assert itk_image.GetOrigin() == itk_label.GetOrigin()
        assert itk_image.GetDirection() == itk_label.GetDirection()
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "image"}
    assert meta["labels"] == {"background": 0, "lv_cavity": 1, "lv_myocardium": 2, "left_atrium": 3}
    assert meta["numTraining"] == 6 and meta["file_ending"] == ".nii.gz"
    assert meta["overwrite_image_reader_writer"] == "SimpleITKIO"
    marker = json.loads((out / MARKER).read_text())
    assert marker["samples"] == 6 and marker["config"]["to"] == "nnunet"
    assert "Converted 6 samples (6 to imagesTr, 0 to imagesTs)" in result.output
    assert not list(tmp_path.glob("nn.*"))  # no scratch folder left


def test_nnunet_split_puts_exactly_the_test_patients_in_imagesTs(tmp_path):
    _, labels = make_store(tmp_path / "s.zarr")
    out = tmp_path / "nn"
    ok("convert", tmp_path / "s.zarr", out, "--to", "nnunet", "--split")
    test = [i for i, p in enumerate(PATIENTS) if p % 10 == 0]
    assert test == [1, 2, 4, 6, 8]
    names = {kind: sorted(p.name for p in (out / kind).iterdir()) for kind in ("imagesTs", "labelsTs")}
    assert names["imagesTs"] == [f"{case_id(i, 10)}_0000.nii.gz" for i in test]
    assert names["labelsTs"] == [f"{case_id(i, 10)}.nii.gz" for i in test]
    train = [i for i in range(10) if i not in test]
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [
        f"{case_id(i, 10)}_0000.nii.gz" for i in train
    ]
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == len(train)
    np.testing.assert_array_equal(read_nifti(out / "labelsTs" / f"{case_id(4, 10)}.nii.gz"), labels[4])


def test_nnunet_one_file_per_channel(tmp_path):
    images, _ = make_store(tmp_path / "s.zarr", n=4, dtype="float16", channels=2)
    out = tmp_path / "nn"
    ok("convert", tmp_path / "s.zarr", out, "--to", "nnunet")
    assert json.loads((out / "dataset.json").read_text())["channel_names"] == {
        "0": "channel_0",
        "1": "channel_1",
    }
    for c in range(2):
        path = out / "imagesTr" / f"{case_id(3, 4)}_{c:04d}.nii.gz"
        assert nib.load(path).get_data_dtype() == np.float32  # NIfTI has no float16: widened exactly
        np.testing.assert_array_equal(read_nifti(path), images[3, c].astype(np.float32))


def test_dataset_id_and_name_make_the_nnunet_dataset_folder(tmp_path):
    make_store(tmp_path / "s.zarr", n=4)
    raw = tmp_path / "nnUNet_raw"
    ok("convert", tmp_path / "s.zarr", raw, "--to", "nnunet", "--dataset-id", 7, "--name", "Tiny")
    assert [p.name for p in raw.iterdir()] == ["Dataset007_Tiny"]
    assert json.loads((raw / "Dataset007_Tiny" / "dataset.json").read_text())["name"] == "Tiny"
    result = run("convert", tmp_path / "s.zarr", raw, "--to", "nnunet", "--dataset-id", 7, "--name", "Other")
    assert_one_line_error(result, 1, "Dataset007_Tiny", "--dataset-id")
    assert_one_line_error(
        run("convert", tmp_path / "s.zarr", raw, "--to", "nnunet", "--name", "X"), 1, "together"
    )


def test_nnunet_integrity_check_accepts_the_output(tmp_path, monkeypatch):
    try:
        from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
        from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    except ImportError as e:
        pytest.skip(
            f"nnunetv2 is not importable ({e}): it is not in the dev extra, as installing it replaces torch "
            "with a CUDA build; 'pip install -c <(echo torch==2.13.0) nnunetv2' and rerun for nnU-Net's own check"
        )
    make_store(tmp_path / "s.zarr", spacing=(0.5, 0.25))
    raw = tmp_path / "nnUNet_raw"
    ok(
        "convert",
        tmp_path / "s.zarr",
        raw,
        "--to",
        "nnunet",
        "--split",
        "--dataset-id",
        501,
        "--name",
        "Tiny",
    )
    monkeypatch.setenv("nnUNet_raw", str(raw))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    assert maybe_convert_to_dataset_name(501) == "Dataset501_Tiny"
    verify_dataset_integrity(str(raw / "Dataset501_Tiny"), num_processes=1)  # raises on any problem


def test_nnunet_refuses_label_values_with_gaps(tmp_path):
    gappy = LabelSchema("gappy", (LabelClass("a", 1), LabelClass("b", 3)))
    labels = np.where(disc_labels(4, H, W) == 2, 3, disc_labels(4, H, W) == 1).astype(np.uint8)
    make_store(tmp_path / "s.zarr", n=4, schema=gappy, labels=labels)
    before = listing(tmp_path)
    result = run("convert", tmp_path / "s.zarr", tmp_path / "nn", "--to", "nnunet")
    assert_one_line_error(result, 1, "consecutive", "[1, 3]")
    assert listing(tmp_path) == before


# -- NIfTI and PNG ---------------------------------------------------------------------------------
def test_nifti_round_trip_and_ingest_back(tmp_path):
    spacing = np.tile([[0.7, 0.3]], (6, 1))
    spacing[5] = np.nan  # unknown for one sample: 1.0 written, and said
    images, labels = make_store(tmp_path / "s.zarr", n=6, meta_spacing=spacing)
    out = tmp_path / "nii"
    result = ok("convert", tmp_path / "s.zarr", out, "--to", "nifti")
    assert "1.0 where unknown (1 samples)" in result.output
    assert listing(out / "images") == [f"{case_id(i, 6)}.nii.gz" for i in range(6)]
    for i in range(6):
        case = case_id(i, 6)
        np.testing.assert_array_equal(read_nifti(out / "images" / f"{case}.nii.gz"), images[i])
        np.testing.assert_array_equal(read_nifti(out / "labels" / f"{case}.nii.gz"), labels[i])
    assert nib.load(out / "images" / f"{case_id(0, 6)}.nii.gz").header.get_zooms() == pytest.approx(
        (0.3, 0.7)
    )
    unknown = nib.load(out / "images" / f"{case_id(5, 6)}.nii.gz").header
    assert unknown.get_zooms() == (1.0, 1.0) and unknown.get_xyzt_units()[0] == "unknown"

    back = tmp_path / "back.zarr"
    pattern = "../labels/{name}"
    result = run("ingest", out, back, "--layout", "pairs", "--schema", "camus", "--pattern", pattern)
    assert result.exit_code == 0, result.output
    reader = StoreReader(str(back))
    got_images, got_labels = reader.read_block(0, 6)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    np.testing.assert_allclose(reader.read_meta("spacing")[:5], spacing[:5], rtol=1e-6)


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_nifti_keeps_the_store_dtype(tmp_path, dtype):
    images, _ = make_store(tmp_path / "s.zarr", n=4, dtype=dtype)
    ok("convert", tmp_path / "s.zarr", tmp_path / "nii", "--to", "nifti")
    path = tmp_path / "nii" / "images" / f"{case_id(1, 4)}.nii.gz"
    assert nib.load(path).get_data_dtype() == np.dtype(dtype)
    np.testing.assert_array_equal(read_nifti(path), images[1])


def test_multichannel_nifti_is_one_vector_file(tmp_path):
    images, _ = make_store(tmp_path / "s.zarr", n=4, channels=3)
    ok("convert", tmp_path / "s.zarr", tmp_path / "nii", "--to", "nifti")
    image = nib.load(tmp_path / "nii" / "images" / f"{case_id(2, 4)}.nii.gz")
    assert image.shape == (W, H, 1, 1, 3) and image.header.get_intent()[0] == "vector"
    np.testing.assert_array_equal(np.asanyarray(image.dataobj)[:, :, 0, 0, :].transpose(2, 1, 0), images[2])


def test_png_round_trip(tmp_path):
    images, labels = make_store(tmp_path / "s.zarr", n=5)
    out = tmp_path / "png"
    ok("convert", tmp_path / "s.zarr", out, "--to", "png")
    assert listing(out / "labels") == [f"{case_id(i, 5)}.png" for i in range(5)]
    for i in range(5):
        with Image.open(out / "images" / f"{case_id(i, 5)}.png") as image:
            assert image.mode == "L"
            np.testing.assert_array_equal(np.asarray(image), images[i])
        with Image.open(out / "labels" / f"{case_id(i, 5)}.png") as label:
            assert label.mode == "L"
            np.testing.assert_array_equal(np.asarray(label), labels[i])


def test_png_rgb_for_three_channels(tmp_path):
    images, _ = make_store(tmp_path / "s.zarr", n=4, channels=3)
    ok("convert", tmp_path / "s.zarr", tmp_path / "png", "--to", "png")
    with Image.open(tmp_path / "png" / "images" / f"{case_id(1, 4)}.png") as image:
        assert image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), images[1].transpose(1, 2, 0))


# -- bad input: one line, exit status, nothing left behind -----------------------------------------
def test_png_refuses_images_it_cannot_hold_exactly(tmp_path):
    make_store(tmp_path / "s.zarr", n=4, dtype="float32")
    before = listing(tmp_path)
    result = run("convert", tmp_path / "s.zarr", tmp_path / "png", "--to", "png")
    assert_one_line_error(result, 1, "uint8", "float32", "--to nifti")
    assert listing(tmp_path) == before


def test_bad_inputs_give_one_line_and_leave_nothing(tmp_path):
    make_store(tmp_path / "s.zarr", n=4)
    make_store(tmp_path / "empty.zarr", n=4, complete=[])
    before = listing(tmp_path)
    assert_one_line_error(
        run("convert", tmp_path / "missing.zarr", tmp_path / "o", "--to", "nifti"), 1, "missing.zarr"
    )
    assert_one_line_error(run("convert", tmp_path / "s.zarr", tmp_path / "o", "--to", "jpeg"), 2, "jpeg")
    assert_one_line_error(run("convert", tmp_path / "s.zarr", tmp_path / "o"), 2, "--to")
    assert_one_line_error(
        run("convert", tmp_path / "s.zarr", tmp_path / "o", "--to", "png", "--split"), 1, "--split"
    )
    assert_one_line_error(
        run("convert", tmp_path / "s.zarr", tmp_path / "s.zarr", "--to", "png"), 1, "overlaps"
    )
    result = run("convert", tmp_path / "empty.zarr", tmp_path / "o", "--to", "nifti")
    assert_one_line_error(result, 1, "complete shards")
    assert listing(tmp_path) == before


def test_existing_output_is_refused_and_overwrite_replaces_only_a_converted_one(tmp_path):
    make_store(tmp_path / "s.zarr", n=4)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    result = run("convert", tmp_path / "s.zarr", mine, "--to", "png")
    assert_one_line_error(result, 1, "already exists", "--overwrite")
    result = run("convert", tmp_path / "s.zarr", mine, "--to", "png", "--overwrite")
    assert_one_line_error(result, 1, "not written by 'synthgen convert'")
    assert listing(mine) == ["notes.txt"]

    out = tmp_path / "out"
    out.mkdir()  # an empty folder is fine
    ok("convert", tmp_path / "s.zarr", out, "--to", "png")
    assert_one_line_error(run("convert", tmp_path / "s.zarr", out, "--to", "nifti"), 1, "already exists")
    ok("convert", tmp_path / "s.zarr", out, "--to", "nifti", "--overwrite")
    assert (out / "images" / f"{case_id(0, 4)}.nii.gz").is_file() and not list(out.rglob("*.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "out", "s.zarr"]


def test_a_failure_midway_leaves_the_output_as_it_was(tmp_path, monkeypatch):
    make_store(tmp_path / "s.zarr", n=8)
    out = tmp_path / "deep" / "er" / "out"
    calls = []

    def failing(path, array):
        calls.append(path)
        if len(calls) == 5:
            raise OSError(28, "No space left on device", str(path))
        real(path, array)

    real = convert_module._write_png
    monkeypatch.setattr(convert_module, "_write_png", failing)
    assert_one_line_error(
        run("convert", tmp_path / "s.zarr", out, "--to", "png", "--quiet"), 1, "No space left"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]  # nor the parents it made

    monkeypatch.setattr(convert_module, "_write_png", real)
    ok("convert", tmp_path / "s.zarr", out, "--to", "png")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    calls.clear()
    monkeypatch.setattr(convert_module, "_write_png", failing)
    result = run("convert", tmp_path / "s.zarr", out, "--to", "png", "--overwrite", "--quiet")
    assert_one_line_error(result, 1, "No space left")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]
