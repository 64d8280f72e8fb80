"""DICOM series for ``synthgen ingest``: a folder of one DICOM file per slice is read as one volume
(SimpleITK's ImageSeriesReader, slices by Image Position) and pairs with a label volume named after the
folder; several series in one folder, or a label of another slice count, are refused in one line."""

import locale
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from click.testing import CliRunner
from helpers.cli import assert_clean_failure

from synthgen.cli import cli
from synthgen.storage.readers import probe, read_volume
from synthgen.storage.store import StoreReader

S, H, W = 4, 12, 10  # slices, rows, cols: none equal, so a wrong axis shows
SPACING = (0.9, 0.7)  # (row, col) mm
UID = "1.2.826.0.1.3680043.2.1125.7.1"


@pytest.fixture(autouse=True)
def caller_locale():
    """Writing DICOM here (SimpleITK's GDCM) sets the C locale process-wide: put it back after each
    test, so that it leaks into no other test."""
    saved = locale.setlocale(locale.LC_ALL)
    yield saved
    locale.setlocale(locale.LC_ALL, saved)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _series_values() -> np.ndarray:
    """int16 slices (S, H, W), CT-like with negative values, every value distinct."""
    return (np.arange(S * H * W, dtype=np.int16).reshape(S, H, W) * 7 - 300).astype(np.int16)


def _labels(slices: int = S) -> np.ndarray:
    """A distinct pattern per slice: class (z % 3) + 1 in a block starting at row z, col 2 * z."""
    labels = np.zeros((slices, H, W), np.uint8)
    for z in range(slices):
        labels[z, z : z + 4, 2 * z : 2 * z + 3] = z % 3 + 1
    return labels


def _write_series(folder: Path, volume: np.ndarray, uid: str = UID, suffix: str = ".dcm", first: int = 0):
    """One DICOM file per slice of ``volume`` (slices, rows, cols), slice z at z = 2.5 * z mm. The files are
    named in the reverse of their positions, so an order by name would show."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")  # also for names without a suffix
    n = len(volume)
    for z in range(n):
        img = sitk.GetImageFromArray(volume[z])
        img.SetSpacing((SPACING[1], SPACING[0]))
        tags = {
            "0008|0060": "MR",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",  # Study Instance UID
            "0020|000e": uid,  # Series Instance UID
            "0008|0018": f"{uid}.{z + 1}",  # SOP Instance UID
            "0020|0013": str(z + 1),  # Instance Number
            "0020|0032": f"0\\0\\{2.5 * z}",  # Image Position (Patient)
            "0020|0037": "1\\0\\0\\0\\1\\0",  # Image Orientation (Patient)
            "0028|0030": f"{SPACING[0]}\\{SPACING[1]}",  # Pixel Spacing (row, col)
            "0018|0050": "2.5",  # Slice Thickness
        }
        for tag, value in tags.items():
            img.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"IM{first + n - z:04d}{suffix}"))
        writer.Execute(img)


def _save_label(path: Path, labels: np.ndarray) -> None:
    """``labels`` (slices, rows, cols) as NIfTI (x, y, z) with a RAS+ affine, or as MetaImage."""
    if path.name.endswith(".nii.gz"):
        affine = np.diag([SPACING[1], SPACING[0], 2.5, 1.0])
        nib.save(nib.Nifti1Image(np.ascontiguousarray(labels.transpose(2, 1, 0)), affine), path)
    else:
        img = sitk.GetImageFromArray(labels)
        img.SetSpacing((SPACING[1], SPACING[0], 2.5))
        sitk.WriteImage(img, str(path))


@pytest.mark.parametrize(("suffix", "label_suffix"), [(".dcm", ".nii.gz"), ("", ".mha")])
def test_series_folder_is_one_volume_with_its_label(tmp_path, suffix, label_suffix):
    src = tmp_path / "src"
    values, labels = _series_values(), _labels()
    _write_series(src / "patient01", values, suffix=suffix)
    _save_label(src / f"patient01_gt{label_suffix}", labels)
    out = tmp_path / "out.zarr"
    result = run("ingest", src, out, "--schema", "camus")
    assert result.exit_code == 0, result.output

    reader = StoreReader(str(out))
    images, stored_labels = reader.read_block(0, reader.layout.n)
    assert reader.layout.n == S and reader.layout.image_dtype == "float32"  # one sample per slice; int16
    for z in range(S):  # slices by position although the file names run the other way
        np.testing.assert_array_equal(images[z], values[z])
        np.testing.assert_array_equal(stored_labels[z], labels[z])
    assert reader.read_meta("slice_index").tolist() == list(range(S))
    np.testing.assert_allclose(reader.read_meta("spacing"), [SPACING] * S, rtol=1e-6)
    assert reader.attrs.provenance["sources"] == ["patient01"]
    assert reader.attrs.provenance["label_sources"] == [f"patient01_gt{label_suffix}"]
    assert (reader.attrs.intensity.low, reader.attrs.intensity.high) == (values.min(), values.max())


def test_series_reader_sorts_by_position_and_reports_spacing(tmp_path):
    values = _series_values()
    _write_series(tmp_path / "s", values, suffix="")
    info = probe(tmp_path / "s", "s")
    assert (info.shape, info.channels, info.dtype) == ((S, H, W), 1, "int16")
    assert info.spacing == pytest.approx(SPACING)
    np.testing.assert_array_equal(read_volume(tmp_path / "s", "s"), values)


def test_reading_dicom_keeps_the_callers_locale(tmp_path, caller_locale):
    """GDCM sets the C locale for the whole process; after it, Python would read text as ASCII."""
    _write_series(tmp_path / "s", _series_values())
    locale.setlocale(locale.LC_ALL, caller_locale)  # the writing above changed it
    encoding = locale.getpreferredencoding(False)
    probe(tmp_path / "s", "s")
    read_volume(tmp_path / "s", "s")
    read_volume(next((tmp_path / "s").iterdir()), "one slice")  # a single DICOM file too
    assert locale.setlocale(locale.LC_ALL) == caller_locale
    assert locale.getpreferredencoding(False) == encoding


def test_two_series_in_one_folder_are_refused(tmp_path):
    src = tmp_path / "src"
    other = "1.2.826.0.1.3680043.2.1125.7.2"
    _write_series(src / "patient01", _series_values()[:2])
    _write_series(src / "patient01", _series_values()[2:], uid=other, first=10)
    _save_label(src / "patient01_gt.nii.gz", _labels())
    out = tmp_path / "out.zarr"
    assert_clean_failure(
        run("ingest", src, out, "--schema", "camus"),
        out,
        "Expected one DICOM series in the folder patient01. Got 2",
        UID,
        other,
        "move each series into a folder of its own",
    )


def test_label_with_another_slice_count_is_refused(tmp_path):
    src = tmp_path / "src"
    _write_series(src / "patient01", _series_values())
    _save_label(src / "patient01_gt.nii.gz", _labels(S - 1))
    out = tmp_path / "out.zarr"
    assert_clean_failure(
        run("ingest", src, out, "--schema", "camus"),
        out,
        f"Got {(S, H, W)} in patient01 and {(S - 1, H, W)} in patient01_gt.nii.gz",
    )


def test_label_that_reading_would_reorder_is_refused(tmp_path):
    src = tmp_path / "src"
    _write_series(src / "patient01", _series_values())
    lps = np.diag([-SPACING[1], -SPACING[0], 2.5, 1.0])  # what ITK writes for this series: read flipped
    nib.save(
        nib.Nifti1Image(np.ascontiguousarray(_labels().transpose(2, 1, 0)), lps), src / "patient01_gt.nii.gz"
    )
    out = tmp_path / "out.zarr"
    assert_clean_failure(
        run("ingest", src, out, "--schema", "camus"), out, "patient01_gt.nii.gz", "stored LPS", "as .mha"
    )


def test_series_folder_without_its_label_says_how_to_name_it(tmp_path):
    src = tmp_path / "src"
    _write_series(src / "patient01", _series_values())
    _save_label(src / "patient1_gt.nii.gz", _labels())  # a typo: not named after the folder
    out = tmp_path / "out.zarr"
    assert_clean_failure(
        run("ingest", src, out, "--schema", "camus"),
        out,
        "patient01/IM0001.dcm has no label",
        "name its label after the folder (patient01_gt.nii.gz beside it)",
    )
