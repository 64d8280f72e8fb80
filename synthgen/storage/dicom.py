"""The DICOM reader: single files and series folders, through SimpleITK/GDCM.

DICOM (``.dcm``, ``.dicom``, ``.ima``, read by SimpleITK/GDCM with rescale slope and intercept
applied): images only (a label map beside it comes in another format), a single file of one frame
or several frames (slices); ``MONOCHROME1`` (inverted grey) is refused. A folder is read as a DICOM
series (SimpleITK's ``ImageSeriesReader``): one single-frame file per slice, with or without a suffix,
every file carrying the ``DICM`` marker (a ``DICOMDIR`` aside), all of one Series Instance UID (a
folder holding several is refused, naming them), the slices stacked in the order GDCM sorts them (by
Image Position along the slice normal) and each kept in its stored (display) order; slices must share
rows, cols and pixel type and each position must appear once (several time points or echoes in one
series are refused).

Spacing is the (row, col) pixel spacing in mm (a series' from its first slice), NaN where the file
gives none. Arrays and :class:`~synthgen.storage.volume_info.VolumeInfo` follow the conventions of
:mod:`synthgen.storage.readers`, which dispatches here (a ``.dcm``, ``.dicom`` or ``.ima`` file, or a
folder) and turns any other failure into an :class:`~synthgen.errors.InputDataError` naming the file.
"""

from __future__ import annotations

import functools
import locale
from dataclasses import replace
from pathlib import Path

import numpy as np

from synthgen.errors import InputDataError
from synthgen.storage.volume_info import _NAN2, VolumeInfo, _fail, _sitk_array, _sitk_file_reader, _sitk_info

_DICOM_UNREAD = "not a DICOM image that SimpleITK (GDCM) reads: no pixel data, or a compression it lacks"
_DICOM_SPACING_TAGS = ("0028|0030", "0018|1164", "0018|2010")  # pixel, imager pixel, nominal scanned


def _keeps_locale(read):
    """GDCM (SimpleITK's DICOM input and output) sets the C locale for the whole process, after which
    Python reads text files as ASCII; put the caller's locale back when ``read`` returns."""

    @functools.wraps(read)
    def wrapper(*args, **kwargs):
        saved = locale.setlocale(locale.LC_ALL)
        try:
            return read(*args, **kwargs)
        finally:
            locale.setlocale(locale.LC_ALL, saved)

    return wrapper


def has_dicom_marker(path: str | Path) -> bool:
    """Whether ``path`` is a file that says it is DICOM: ``DICM`` at byte 128 (False where unreadable)."""
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _check_dicom(path: Path, where: str, kind: str, what: str = "DICOM") -> None:
    """DICOM is read for images only, and only a file that says it is DICOM (before GDCM guesses)."""
    if kind == "label":
        raise _fail(
            where,
            f"expected a label map in NIfTI, MetaImage, PNG, TIFF or .npy, got {what}: DICOM is read for images "
            "only (convert DICOM SEG or RTSTRUCT labels to a label map)",
        )
    if not path.is_dir() and not has_dicom_marker(path):
        raise _fail(where, "expected a DICOM file (the 'DICM' marker at byte 128), found none")


# -- one file ------------------------------------------------------------------------------------
def _dicom_header(path: Path, where: str, kind: str):
    """The :class:`VolumeInfo` of a DICOM file and the SimpleITK reader holding its header."""
    reader = _sitk_file_reader(path)
    _check_dicom(path, where, kind)
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise _fail(where, _DICOM_UNREAD) from e
    info = _sitk_info(reader, where)
    has = reader.HasMetaDataKey
    if has("0028|0004") and reader.GetMetaData("0028|0004").strip() == "MONOCHROME1":
        raise _fail(where, "expected MONOCHROME2 or RGB pixels, got MONOCHROME1 (inverted grey levels)")
    if info.spacing == (1.0, 1.0) and not any(has(tag) for tag in _DICOM_SPACING_TAGS):
        info = replace(info, spacing=_NAN2)  # GDCM's 1.0 where the file gives no pixel spacing
    return info, reader


@_keeps_locale
def probe_dicom(path: Path, where: str, kind: str) -> VolumeInfo:
    """Shape, channels, dtype and spacing of a single DICOM file from its header."""
    return _dicom_header(path, where, kind)[0]


@_keeps_locale
def read_dicom(path: Path, where: str, kind: str) -> np.ndarray:
    """The data of a single DICOM file: (slices, rows, cols), or (slices, channels, rows, cols) for RGB."""
    import SimpleITK as sitk

    _check_dicom(path, where, kind)
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise _fail(where, _DICOM_UNREAD) from e
    return _sitk_array(img)


# -- DICOM series: a folder of one file per slice ------------------------------------------------------
def _series_names(folder: Path, where: str, kind: str) -> tuple[str, ...]:
    """The files of the one series in ``folder``, in GDCM's order (by Image Position along the normal)."""
    import SimpleITK as sitk

    _check_dicom(folder, where, kind, "a folder of DICOM slices")
    files = sorted(
        f.name
        for f in folder.iterdir()
        if f.is_file() and not f.name.startswith(".") and f.name.upper() != "DICOMDIR"
    )
    if not files:
        raise _fail(where, "expected a folder of DICOM slices of one series, it holds no file")
    for name in files:
        if not has_dicom_marker(folder / name):
            raise _fail(
                f"{where}/{name}", "expected a DICOM slice (the 'DICM' marker at byte 128), found none"
            )
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if len(ids) > 1:
        raise InputDataError(
            f"Expected one DICOM series in the folder {where}. Got {len(ids)} (Series Instance UIDs "
            f"{', '.join(ids)}) instead: move each series into a folder of its own, with its label beside it."
        )
    names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0]) if ids else ()
    left_out = sorted(set(files) - {Path(n).name for n in names})
    if left_out:
        raise _fail(f"{where}/{left_out[0]}", _DICOM_UNREAD + " (as a slice of the series)")
    return tuple(names)


def _position(reader) -> tuple[float, ...] | None:
    """Image Position (Patient) of a slice's header, None where absent or unreadable."""
    if not reader.HasMetaDataKey("0020|0032"):
        return None
    try:
        return tuple(round(float(v), 3) for v in reader.GetMetaData("0020|0032").split("\\"))
    except ValueError:
        return None


@_keeps_locale
def probe_series(folder: Path, where: str, kind: str) -> VolumeInfo:
    """Shape, channels, dtype and spacing of the DICOM series in ``folder``, from its slices' headers."""
    names = _series_names(folder, where, kind)
    first, positions = None, set()
    for name in names:
        here = f"{where}/{Path(name).name}"
        info, reader = _dicom_header(Path(name), here, kind)
        if info.shape[0] != 1:
            raise _fail(
                here,
                f"expected one frame per file of a series folder, got {info.shape[0]}: move multi-frame files "
                "out of the folder (each is read as a volume of its own)",
            )
        first = first or (info, here)
        if (info.shape, info.channels, info.dtype) != (first[0].shape, first[0].channels, first[0].dtype):
            raise InputDataError(
                f"Expected the slices of the DICOM series {where} to share rows, cols and pixel type. Got "
                f"{info.shape[1:]} {info.dtype} in {here} and {first[0].shape[1:]} {first[0].dtype} in {first[1]}."
            )
        positions.add(_position(reader) or name)
    if len(positions) < len(names):
        raise InputDataError(
            f"Expected one file per slice position in the DICOM series {where}. Got {len(names)} files at "
            f"{len(positions)} positions instead (several time points or echoes in one series?): split them "
            "into one folder per volume."
        )
    info = first[0]
    return VolumeInfo((len(names), *info.shape[1:]), info.channels, info.dtype, info.spacing)


@_keeps_locale
def read_series(folder: Path, where: str, kind: str) -> np.ndarray:
    """The data of the DICOM series in ``folder``: its slices stacked in GDCM's order."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(_series_names(folder, where, kind))
    try:
        img = reader.Execute()
    except RuntimeError as e:
        raise _fail(where, _DICOM_UNREAD + " (as a series)") from e
    return _sitk_array(img)
