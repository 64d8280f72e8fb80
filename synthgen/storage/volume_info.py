"""What the readers share: :class:`VolumeInfo` (what a file's header says), the one read-failure
message (:func:`_fail`), and how a SimpleITK header or image becomes a :class:`VolumeInfo` or an array
in the readers' order, which MetaImage (:mod:`synthgen.storage.readers`) and DICOM
(:mod:`synthgen.storage.dicom`) both use. It imports neither, so both import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthgen.errors import InputDataError

_NAN2 = (float("nan"), float("nan"))


@dataclass(frozen=True)
class VolumeInfo:
    """What the header of a file says, after reorientation: ``shape`` is (slices, rows, cols); ``spacing``
    (row, col) in mm, NaN where unknown; ``orientation`` the stored NIfTI axis codes (``LAS``...), ''
    for other formats or a NIfTI header without sform or qform; ``reoriented`` whether reading
    reorders the stored voxels (a NIfTI not already in RAS+ order)."""

    shape: tuple[int, int, int]
    channels: int
    dtype: str
    spacing: tuple[float, float] = _NAN2
    orientation: str = ""
    reoriented: bool = False


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _fail(where: str, e: BaseException | str) -> InputDataError:
    reason = e if isinstance(e, str) else f"{type(e).__name__}: {_one_line(e)}"
    return InputDataError(
        f"Cannot read {where}: {reason}. Expected a complete, readable file: replace or remove it."
    )


# -- SimpleITK (MetaImage and DICOM) -------------------------------------------------------------
def _sitk_dtype(pixel_id: int) -> np.dtype:
    import SimpleITK as sitk

    for name in ("UInt8", "Int8", "UInt16", "Int16", "UInt32", "Int32", "UInt64", "Int64"):
        if pixel_id in (getattr(sitk, f"sitk{name}"), getattr(sitk, f"sitkVector{name}")):
            return np.dtype(name.lower())
    for name, np_name in (("Float32", "float32"), ("Float64", "float64")):
        if pixel_id in (getattr(sitk, f"sitk{name}"), getattr(sitk, f"sitkVector{name}")):
            return np.dtype(np_name)
    raise ValueError(f"unsupported pixel type {sitk.GetPixelIDValueAsString(pixel_id)}")


def _sitk_file_reader(path: Path):
    """A SimpleITK reader set to ``path``, its header not read yet (``ReadImageInformation``)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    return reader


def _sitk_info(reader, where: str) -> VolumeInfo:
    """The :class:`VolumeInfo` of the header a SimpleITK reader has read; spacing as the reader gives it."""
    size = reader.GetSize()
    if len(size) > 3 or (len(size) == 3 and size[2] < 1):
        raise _fail(where, f"expected a 2D or 3D image, got size {size}")
    dtype = _sitk_dtype(reader.GetPixelID())
    z = size[2] if len(size) == 3 else 1
    spacing = (float(reader.GetSpacing()[1]), float(reader.GetSpacing()[0]))
    return VolumeInfo((z, size[1], size[0]), reader.GetNumberOfComponents(), dtype.name, spacing)


def _sitk_array(img) -> np.ndarray:
    """A SimpleITK image as (slices, rows, cols) or (slices, channels, rows, cols), float64 as float32."""
    import SimpleITK as sitk

    data = sitk.GetArrayFromImage(img)  # (z, y, x[, c]) or (y, x[, c])
    if img.GetNumberOfComponentsPerPixel() > 1:
        data = data[None] if img.GetDimension() == 2 else data
        data = data.transpose(0, 3, 1, 2)
    elif data.ndim == 2:
        data = data[None]
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    return np.ascontiguousarray(data)
