"""Ingest geometry and intensity (issue 18): the recorded intensity convention is true to the stored
values for every dtype x geometry; --spacing and --pad-or-crop as MONAI's Spacingd / ResizeWithPadOrCrop;
NIfTI orientation brought to RAS+ and recorded; DICOM images read, with labels beside them."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from click.testing import CliRunner
from helpers.cli import assert_clean_failure
from helpers.data import disc_labels
from PIL import Image

from synthgen.cli import cli
from synthgen.errors import ConfigError
from synthgen.kernels import (
    pad_or_crop,
    resize_images,
    spacing_images,
    spacing_labels,
    spacing_shape,
    to_unit,
)
from synthgen.storage import LoaderConfig, StoreStream
from synthgen.storage.ingestion import IngestConfig, store_image_dtype
from synthgen.storage.readers import probe, read_volume
from synthgen.storage.store import StoreReader

H, W = 12, 16  # rows, cols: not square, so a missing or extra transpose shows


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _save_nifti(path: Path, rows_cols: np.ndarray, spacing=(1.0, 1.0), affine=None) -> None:
    """Save (rows, cols) or (slices, rows, cols) as NIfTI (x, y, z), x along the columns; ``spacing`` is
    (row, col) mm; ``affine`` replaces the default diagonal RAS one."""
    vol = rows_cols[None] if rows_cols.ndim == 2 else rows_cols
    if affine is None:
        affine = np.diag([spacing[1], spacing[0], 1.0, 1.0])
    nib.save(nib.Nifti1Image(np.ascontiguousarray(vol.transpose(2, 1, 0)), affine), path)


def _read_all(url: Path) -> tuple[np.ndarray, np.ndarray, StoreReader]:
    reader = StoreReader(str(url))
    images, labels = reader.read_block(0, reader.layout.n)
    return images, labels, reader


# -- 1. the intensity convention, every source dtype x geometry ---------------------------------------
_VALUES = {  # (low, high) of the source values: MR-like raw ranges, negative and fractional where they can be
    "uint8": (0, 255),
    "uint16": (0, 2515),
    "int16": (-200, 2515),
    "float32": (5.5, 1200.25),  # strictly positive: padding adds a 0 the range must then hold
}
_GEOMETRIES = {
    "native": (),
    "size": ("--size", 20, 10),
    "spacing": ("--spacing", 0.75, 0.6),
    "pad_or_crop": ("--pad-or-crop", 16, 12),
    "spacing_then_pad": ("--spacing", 0.6, 1.3, "--pad-or-crop", 14, 14),
}


def _intensity_source(root: Path, dtype: str) -> list[np.ndarray]:
    root.mkdir()
    lo, hi = _VALUES[dtype]
    images = []
    for i in range(2):
        rng = np.random.default_rng(i)
        labels = disc_labels(1, H, W, seed=i)[0]
        image = rng.uniform(lo, hi, (H, W))
        image.flat[[0, -1]] = (lo, hi) if i == 0 else (hi, lo)  # the extremes are in the data
        image = image.astype(dtype) if dtype == "float32" else np.rint(image).astype(dtype)
        _save_nifti(root / f"case{i}.nii.gz", image, spacing=(1.0, 0.8))
        _save_nifti(root / f"case{i}_gt.nii.gz", labels, spacing=(1.0, 0.8))
        images.append(image)
    return images


@pytest.mark.parametrize("geometry", sorted(_GEOMETRIES))
@pytest.mark.parametrize("dtype", sorted(_VALUES))
def test_recorded_intensity_is_true_to_the_stored_values(tmp_path, dtype, geometry):
    sources = _intensity_source(tmp_path / "src", dtype)
    out = tmp_path / "out.zarr"
    result = run("ingest", tmp_path / "src", out, "--schema", "camus", *_GEOMETRIES[geometry])
    assert result.exit_code == 0, result.output
    images, _, reader = _read_all(out)
    stored_dtype = store_image_dtype(dtype)
    assert images.dtype == np.dtype(stored_dtype)
    low, high = reader.attrs.intensity.low, reader.attrs.intensity.high
    values = images.astype(np.float64)
    assert low <= values.min() and values.max() <= high  # nothing the convention would clip
    if stored_dtype in ("uint8", "uint16"):
        assert (low, high) == (0.0, float(np.iinfo(stored_dtype).max))
    else:  # float stores: the range of what is stored, exactly (the old bug recorded [0, 1] here)
        assert (low, high) == (values.min(), values.max())
        assert high >= 1000
        if dtype == "float32":  # positive sources: a 0 only where padding added it
            assert (low == 0.0) == (geometry in ("pad_or_crop", "spacing_then_pad"))
    if geometry == "native":
        np.testing.assert_array_equal(images, np.stack(sources).astype(stored_dtype))
    if geometry == "size":
        expected = resize_images(np.stack(sources), (20, 10)).astype(stored_dtype)
        np.testing.assert_allclose(images, expected, rtol=1e-6, atol=1e-3)

    # the loader's normalisation maps low..high to [0, 1] and clips nothing
    batch = next(iter(StoreStream(str(out), LoaderConfig(batch_size=reader.layout.n, shuffle=False))))
    unit = batch["image"].numpy()[:, 0].astype(np.float64)
    order = batch["index"].numpy()
    assert unit.min() >= 0.0 and unit.max() <= 1.0 + 1e-6
    if stored_dtype == "float32":  # the whole range is used (uint16 keeps 0..65535: 12-bit MR is a sliver)
        assert unit.max() == pytest.approx(1.0) and unit.min() == 0.0
    np.testing.assert_allclose(low + unit * (high - low), values[order], atol=1e-5 * (high - low))
    # and so does the [-1, 1] mapping of the trainers (it clips outside low..high)
    back = (to_unit(images, reader.attrs.intensity).astype(np.float64) + 1) / 2 * (high - low) + low
    np.testing.assert_allclose(back, values, atol=1e-5 * (high - low))


# -- 2. --spacing and --pad-or-crop ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "spacing", "target"),
    [
        ((12, 16), (1.0, 0.8), (0.73, 1.13)),
        ((9, 13), (1.5, 1.5), (1.07, 2.0)),
        ((10, 7), (0.9, 1.3), (0.9, 1.3)),
    ],
)
def test_spacing_resampling_matches_monai_spacingd(shape, spacing, target):
    """Ratios chosen so that no label position falls halfway between two pixels: MONAI resolves those ties
    either way, by the float rounding of its normalised grid."""
    torch = pytest.importorskip("torch")
    monai = pytest.importorskip("monai.transforms")
    from monai.data import MetaTensor

    rng = np.random.default_rng(0)
    image = (rng.random(shape) * 100).astype(np.float32)
    labels = rng.integers(0, 4, shape).astype(np.uint8)
    affine = torch.diag(torch.tensor([spacing[0], spacing[1], 1.0, 1.0], dtype=torch.float64))
    data = {
        "image": MetaTensor(torch.from_numpy(image)[None], affine=affine),
        "label": MetaTensor(torch.from_numpy(labels.astype(np.float32))[None], affine=affine),
    }
    expected = monai.Spacingd(["image", "label"], pixdim=target, mode=("bilinear", "nearest"))(data)
    got_image, got_labels = spacing_images(image, spacing, target), spacing_labels(labels, spacing, target)
    assert got_image.shape == tuple(expected["image"].shape[1:]) == spacing_shape(shape, spacing, target)
    np.testing.assert_allclose(got_image, expected["image"][0].numpy(), atol=1e-3)
    np.testing.assert_array_equal(got_labels, expected["label"][0].numpy().astype(np.uint8))
    if spacing == target:  # unchanged, bit for bit
        np.testing.assert_array_equal(got_image, image)


@pytest.mark.parametrize("size", [(8, 20), (15, 5), (13, 16), (12, 17)])
def test_pad_or_crop_matches_monai(size):
    torch = pytest.importorskip("torch")
    monai = pytest.importorskip("monai.transforms")
    array = np.random.default_rng(1).random((1, 12, 17)).astype(np.float32)
    expected = monai.ResizeWithPadOrCropd(["x"], size)({"x": torch.from_numpy(array)})["x"]
    np.testing.assert_array_equal(pad_or_crop(array[0], size), np.asarray(expected)[0])


def _disc(shape, spacing, radius_mm, offset_mm=(3.0, -4.0)):
    """A label disc of ``radius_mm``, its centre ``offset_mm`` (rows down, cols right) from the image
    centre (off-centre, so that a flip shows), drawn in mm."""
    rows = (np.arange(shape[0]) - (shape[0] - 1) / 2) * spacing[0] - offset_mm[0]
    cols = (np.arange(shape[1]) - (shape[1] - 1) / 2) * spacing[1] - offset_mm[1]
    return ((rows[:, None] ** 2 + cols[None, :] ** 2) <= radius_mm**2).astype(np.uint8)


def test_spacing_makes_physical_sizes_equal_then_pad_or_crop(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    geometry = {"a": ((48, 30), (0.5, 0.8)), "b": ((20, 20), (1.2, 1.0))}  # (rows, cols), (row, col) mm
    native_areas = []
    for name, (shape, spacing) in geometry.items():
        labels = _disc(shape, spacing, 7.0)
        native_areas.append(int(labels.sum()))
        _save_nifti(src / f"{name}.nii.gz", (labels * 100 + 20).astype(np.uint8), spacing)
        _save_nifti(src / f"{name}_gt.nii.gz", labels, spacing)
    assert max(native_areas) > 2 * min(native_areas)  # as stored, the same disc differs in pixels

    out = tmp_path / "out.zarr"
    # --spacing alone leaves different sizes: refused, pointing at --pad-or-crop
    assert_clean_failure(
        run("ingest", src, out, "--schema", "camus", "--spacing", 1, 1), out, "--pad-or-crop"
    )
    result = run("ingest", src, out, "--schema", "camus", "--spacing", 1, 1, "--pad-or-crop", 32, 30)
    assert result.exit_code == 0, result.output
    images, labels, reader = _read_all(out)
    assert reader.layout.image_shape == (32, 30)
    assert reader.attrs.spacing == (1.0, 1.0)
    np.testing.assert_array_equal(reader.read_meta("spacing"), [[1.0, 1.0], [1.0, 1.0]])
    areas = labels.reshape(2, -1).sum(1)
    assert np.all(np.abs(areas - np.pi * 49) < 0.15 * np.pi * 49), areas  # 7 mm disc in 1 mm pixels
    for lab in labels:  # round and where it was: as tall as wide, 3 mm below and 4 mm left of the centre
        rows, cols = np.flatnonzero(lab.any(1)), np.flatnonzero(lab.any(0))
        assert abs(len(rows) - len(cols)) <= 1
        assert abs((rows[0] + rows[-1]) / 2 - 18.5) <= 1 and abs((cols[0] + cols[-1]) / 2 - 10.5) <= 1
    inside = images > 0  # the resampled field of view; padding outside it
    assert ((images > 70) == (labels == 1))[inside].mean() > 0.97  # image and labels aligned
    assert not labels[~inside].any()
    prov = reader.attrs.provenance
    assert "--spacing" in prov["resampling"] and "--pad-or-crop" in prov["resampling"]
    assert IngestConfig.from_dict(prov["config"]).spacing == (1.0, 1.0)


def test_pad_or_crop_alone_keeps_pixels_and_spacing(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    image, labels = (
        (disc_labels(1, H, W, seed=3)[0] * 60 + 5).astype(np.uint8),
        disc_labels(1, H, W, seed=3)[0],
    )
    _save_nifti(src / "a.nii.gz", image, (0.9, 0.7))
    _save_nifti(src / "a_gt.nii.gz", labels, (0.9, 0.7))
    out = tmp_path / "out.zarr"
    assert run("ingest", src, out, "--schema", "camus", "--pad-or-crop", H + 3, W - 5).exit_code == 0
    images, stored_labels, reader = _read_all(out)
    # rows padded 1 before and 2 after, cols cropped from 16 // 2 - 11 // 2 = 3
    np.testing.assert_array_equal(images[0, 1 : H + 1], image[:, 3 : 3 + W - 5])
    assert not images[0, 0].any() and not images[0, H + 1 :].any()
    np.testing.assert_array_equal(stored_labels[0, 1 : H + 1], labels[:, 3 : 3 + W - 5])
    np.testing.assert_allclose(reader.read_meta("spacing")[0], [0.9, 0.7])
    assert reader.attrs.spacing is None  # not resampled: per-sample spacing only


def test_geometry_options_refuse_bad_values(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    image, labels = (disc_labels(1, H, W)[0] * 60).astype(np.uint8), disc_labels(1, H, W)[0]
    _save_nifti(src / "a.nii.gz", image)
    _save_nifti(src / "a_gt.nii.gz", labels)
    out = tmp_path / "out.zarr"
    cases = [
        (("--spacing", 0, 1), "--spacing MM MM to be a positive"),
        (("--spacing", "-1.5", 1), "--spacing MM MM to be a positive"),
        (("--spacing", "nan", 1), "finite"),
        (("--pad-or-crop", 0, 4), "--pad-or-crop H W"),
        (("--size", 8, 8, "--pad-or-crop", 8, 8), "Expected --size alone"),
        (("--size", 8, 8, "--spacing", 1, 1), "Expected --size alone"),
    ]
    for args, needle in cases:
        assert_clean_failure(run("ingest", src, out, "--schema", "camus", *args), out, needle)
    with pytest.raises(ConfigError, match="positive"):
        IngestConfig(source="s", out="o", spacing=(1.0, 0.0))

    png = tmp_path / "png"
    png.mkdir()
    Image.fromarray(image).save(png / "a.png")
    Image.fromarray(labels).save(png / "a_gt.png")
    assert_clean_failure(
        run("ingest", png, out, "--schema", "camus", "--spacing", 1, 1),
        out,
        "Expected a pixel spacing in the header of a.png for --spacing",
    )


# -- 3. NIfTI orientation -----------------------------------------------------------------------------
def test_flipped_and_swapped_nifti_come_out_in_one_orientation(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    labels = disc_labels(3, H, W, seed=7)
    labels[:, :3, :4] = 3  # a corner marker: a flip or transpose cannot go unseen
    image = (labels * 50 + np.arange(W)[None, None, :]).astype(np.int16)
    xyz, xyz_labels = image.transpose(2, 1, 0), labels.transpose(2, 1, 0)
    spacing = np.diag([0.8, 0.6, 2.0, 1.0])  # x = cols 0.8 mm, y = rows 0.6 mm
    flip_x = spacing @ np.diag([-1.0, 1, 1, 1])
    flip_x[0, 3] = 0.8 * (W - 1)
    swap = np.array([[0, 0.8, 0, 0], [0.6, 0, 0, 0], [0, 0, -2.0, 4.0], [0, 0, 0, 1.0]])  # and z flipped
    files = {
        "ras": (xyz, spacing),
        "las": (np.ascontiguousarray(xyz[::-1]), flip_x),
        "swapped": (np.ascontiguousarray(xyz.transpose(1, 0, 2)[:, :, ::-1]), swap),
    }
    for name, (data, affine) in files.items():
        nib.save(nib.Nifti1Image(data, affine), src / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(xyz_labels, spacing), src / f"{name}_gt.nii.gz")  # labels as RAS
    out = tmp_path / "out.zarr"
    result = run("ingest", src, out, "--schema", "camus")
    assert result.exit_code == 0, result.output
    images, stored_labels, reader = _read_all(out)
    assert reader.layout.image_shape == (H, W)
    for k in range(3):  # las, ras, swapped (sorted by name): each equal to the canonical volume
        np.testing.assert_array_equal(images[3 * k : 3 * k + 3], image)
        np.testing.assert_array_equal(stored_labels[3 * k : 3 * k + 3], labels)
        np.testing.assert_allclose(reader.read_meta("spacing")[3 * k], [0.6, 0.8])
    prov = reader.attrs.provenance
    assert prov["source_orientations"] == {"ARI": 1, "LAS": 1, "RAS": 1}
    assert prov["orientation"].startswith("NIfTI: RAS+")


def test_reorientation_equals_as_closest_canonical_for_axial_volumes(tmp_path):
    volume = np.random.default_rng(2).integers(0, 300, (5, 6, 4)).astype(np.int16)  # x, y, z
    lps = np.array([[-0.7, 0, 0, 3], [0, -0.9, 0, 4], [0, 0, 2.0, 0], [0, 0, 0, 1.0]])
    oblique = np.array([[0.1, 0.88, 0, 0], [-0.69, 0.12, 0, 0], [0, 0, -2.0, 0], [0, 0, 0, 1.0]])
    for affine in (lps, oblique):
        img = nib.Nifti1Image(volume, affine)
        nib.save(img, tmp_path / "v.nii.gz")
        canonical = nib.as_closest_canonical(img)
        expected = np.asarray(canonical.dataobj).transpose(2, 1, 0)
        np.testing.assert_array_equal(read_volume(tmp_path / "v.nii.gz", "v"), expected)
        info = probe(tmp_path / "v.nii.gz", "v")
        zooms = canonical.header.get_zooms()
        assert info.shape == expected.shape and info.spacing == pytest.approx((zooms[1], zooms[0]))
    # a header without sform or qform keeps its voxel order (nibabel alone would assume LAS)
    nib.save(nib.Nifti1Image(volume, None), tmp_path / "bare.nii.gz")
    np.testing.assert_array_equal(read_volume(tmp_path / "bare.nii.gz", "b"), volume.transpose(2, 1, 0))
    assert probe(tmp_path / "bare.nii.gz", "b").orientation == ""


# -- 4. DICOM -----------------------------------------------------------------------------------------
def _save_dicom(path: Path, rows_cols: np.ndarray, spacing=(0.9, 0.7)) -> None:
    """A DICOM of one frame (rows, cols) or several (slices, rows, cols); ``spacing`` (row, col) mm."""
    img = sitk.GetImageFromArray(rows_cols)
    img.SetSpacing((spacing[1], spacing[0], *([2.0] if rows_cols.ndim == 3 else [])))
    sitk.WriteImage(img, str(path))


def test_dicom_images_with_labels_beside_them(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    truth = []
    for i in range(2):
        labels = disc_labels(1, H, W, seed=i)[0]
        image = (labels.astype(np.int16) * 600 - 100 + np.arange(W)[None, :] * (i + 1)).astype(
            np.int16
        )  # CT-like, negative
        _save_dicom(src / f"case{i}.dcm", image)
        Image.fromarray(labels).save(src / f"case{i}_gt.png")
        truth.append((image, labels))
    out = tmp_path / "out.zarr"
    result = run("ingest", src, out, "--schema", "camus")
    assert result.exit_code == 0, result.output
    images, labels, reader = _read_all(out)
    assert reader.layout.image_dtype == "float32"  # int16 is stored as float32
    for k, (image, lab) in enumerate(truth):
        np.testing.assert_array_equal(images[k], image)
        np.testing.assert_array_equal(labels[k], lab)
    np.testing.assert_allclose(reader.read_meta("spacing"), [[0.9, 0.7], [0.9, 0.7]])
    assert (reader.attrs.intensity.low, reader.attrs.intensity.high) == (images.min(), images.max())
    assert images.min() < 0

    # --spacing from the DICOM pixel spacing; the PNG labels follow the image's grid
    again = tmp_path / "again.zarr"
    assert run("ingest", src, again, "--schema", "camus", "--spacing", 0.45, 0.7).exit_code == 0
    images, labels, reader = _read_all(again)
    assert reader.layout.image_shape == spacing_shape((H, W), (0.9, 0.7), (0.45, 0.7)) == (23, W)
    np.testing.assert_array_equal(labels[0], spacing_labels(truth[0][1], (0.9, 0.7), (0.45, 0.7)))
    np.testing.assert_allclose(images[0], spacing_images(truth[0][0], (0.9, 0.7), (0.45, 0.7)))


def test_multiframe_dicom_with_nifti_label_is_sliced(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    labels = disc_labels(3, H, W, seed=5)
    image = (labels.astype(np.uint16) * 700 + 40).astype(np.uint16)
    _save_dicom(src / "stack.dcm", image)
    _save_nifti(src / "stack_gt.nii.gz", labels)
    out = tmp_path / "out.zarr"
    assert run("ingest", src, out, "--schema", "camus").exit_code == 0
    images, stored_labels, reader = _read_all(out)
    assert reader.layout.image_dtype == "uint16" and reader.layout.n == 3
    np.testing.assert_array_equal(images, image)
    np.testing.assert_array_equal(stored_labels, labels)
    assert reader.read_meta("slice_index").tolist() == [0, 1, 2]


def test_unreadable_dicom_and_other_formats_say_so(tmp_path):
    labels = disc_labels(1, H, W)[0]
    image = (labels * 60).astype(np.uint8)
    out = tmp_path / "out.zarr"

    def folder(name: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        return path

    # a DICOM label: read for images only
    src = folder("dicom_label")
    _save_dicom(src / "a.dcm", image)
    _save_dicom(src / "a_gt.dcm", labels)
    assert_clean_failure(
        run("ingest", src, out, "--schema", "camus"), out, "a_gt.dcm", "DICOM is read for images only"
    )
    # a .dcm that is not DICOM, and one that says DICM but holds nothing GDCM reads
    src = folder("not_dicom")
    (src / "a.dcm").write_bytes(b"\0" * 200)
    Image.fromarray(labels).save(src / "a_gt.png")
    assert_clean_failure(run("ingest", src, out, "--schema", "camus"), out, "a.dcm", "'DICM' marker")
    (src / "a.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    assert_clean_failure(run("ingest", src, out, "--schema", "camus"), out, "a.dcm", "not a DICOM image")
    # a DICOM without a suffix, beside its label: named, not blamed on a missing image
    (src / "a.dcm").unlink()
    _save_dicom(src / "a.dcm", image)
    (src / "a.dcm").rename(src / "a")
    result = run("ingest", src, out, "--schema", "camus")
    assert_clean_failure(result, out, "a: DICOM is not read by this layout without a .dcm suffix")
    assert "not a readable image format" in result.stderr
    # a folder of nothing readable
    src = folder("jpeg")
    (src / "x.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    assert_clean_failure(run("ingest", src, out), out, "x.jpg: JPEG", "not a readable image format")
