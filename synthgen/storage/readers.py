"""Readers for the file formats labelled datasets come in: NIfTI, MetaImage, DICOM, PNG/TIFF, NumPy.

Every reader returns arrays in one order, whatever the format: ``(slices, rows, cols)`` for grey
images and label maps, ``(slices, channels, rows, cols)`` for RGB images. Rows run down the picture
as it is displayed. NIfTI stores ``(x, y, z)`` with x along the columns, so it is transposed;
SimpleITK (MetaImage, DICOM), Pillow and NumPy files are already in row order.

Orientation: NIfTI voxels are brought to RAS+ before slicing, as nibabel's ``as_closest_canonical``
does, except that the stored slice axis (the third, k) stays the slice axis (a short-axis stack is
never cut across its slices): each voxel axis is flipped to run towards the positive end of its
closest world axis (Right, Anterior, Superior; nibabel's ``io_orientation`` of the header's best
affine), and the two in-plane axes are swapped where needed so that columns follow the lower world
axis (R before A before S). For an axial volume this is exactly ``as_closest_canonical``; identity
affines (CAMUS, ACDC, what ``synthgen convert`` writes) are unchanged. A header with neither sform
nor qform keeps its voxel order. :func:`probe` reports the stored orientation (``LAS``...) in
``VolumeInfo.orientation`` and whether reading reorders the stored voxels in ``VolumeInfo.reoriented``.
MetaImage and DICOM keep their stored voxel order, which for DICOM is the order of display.

DICOM (``.dcm``, ``.dicom``, ``.ima``: a single file of one or several frames, images only; or a
folder, read as one DICOM series of one file per slice) is read in :mod:`synthgen.storage.dicom`,
which says what it accepts and refuses; this module dispatches to it. :class:`VolumeInfo`, the
read-failure message and the SimpleITK helpers MetaImage and DICOM share are in
:mod:`synthgen.storage.volume_info`.

Spacing is (row, col) in mm from the header (NIfTI ``pixdim``, MetaImage ``ElementSpacing``, DICOM
pixel spacing: a series' from its first slice), NaN where the header gives none (PNG, TIFF, .npy; a
MetaImage or DICOM without a spacing field; a non-positive NIfTI ``pixdim``).

:func:`probe` reads headers only (shape, dtype, spacing); :func:`read_volume` reads the data. Any
failure becomes an :class:`~synthgen.errors.InputDataError` naming the file.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthgen.errors import InputDataError
from synthgen.storage.dicom import has_dicom_marker, probe_dicom, probe_series, read_dicom, read_series
from synthgen.storage.volume_info import _NAN2, VolumeInfo, _fail, _sitk_array, _sitk_file_reader, _sitk_info

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
SUFFIXES = (".nii.gz", ".nii", ".mhd", ".mha", *DICOM_SUFFIXES, ".png", ".tif", ".tiff", ".npy")
READ_FORMATS = "NIfTI, MetaImage, DICOM (.dcm, or a folder of one series), PNG, TIFF and .npy"
_UNREAD_FORMATS = {".dcm": "DICOM", ".dicom": "DICOM", ".ima": "DICOM", ".nrrd": "NRRD", ".nhdr": "NRRD"}
_UNREAD_FORMATS |= {".mgz": "MGH", ".mgh": "MGH", ".mnc": "MINC", ".hdr": "Analyze", ".img": "Analyze"}
_UNREAD_FORMATS |= {".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".gif": "GIF", ".npz": "NumPy .npz"}
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, RuntimeError, SyntaxError, MemoryError)
ORIENTATION = (
    "NIfTI: RAS+ with the stored slice axis kept (each voxel axis flipped towards Right, Anterior or Superior, "
    "in-plane axes swapped so columns follow the lower of R, A, S; nibabel io_orientation of the best affine; "
    "as_closest_canonical for axial volumes); arrays (slices, rows, cols); MetaImage, DICOM, PNG, TIFF, .npy: "
    "voxel order as stored (a DICOM series: slices by Image Position along the slice normal)"
)


def file_suffix(path: str | Path) -> str | None:
    """The supported suffix of ``path`` (``.nii.gz`` counts as one), or None."""
    name = str(path).lower()
    return next((s for s in SUFFIXES if name.endswith(s)), None)


def strip_suffix(name: str) -> str:
    suffix = file_suffix(name)
    return name[: -len(suffix)] if suffix else name


def bare_name(name: str) -> str:
    """``name`` without its suffix, supported (``.nii.gz`` counts as one) or not."""
    suffix = file_suffix(name)
    if suffix:
        return name[: -len(suffix)]
    stem, dot, _ = name.rpartition(".")
    return stem if dot and stem else name


def unread_format(path: str | Path) -> str:
    """What a file no reader opens is, for messages: ``DICOM``, ``the .xyz format``... (DICOM also by
    its ``DICM`` magic where the name has no suffix)."""
    name = Path(path).name.lower()
    suffix = name[len(bare_name(name)) :]
    if suffix in _UNREAD_FORMATS:
        return _UNREAD_FORMATS[suffix]
    if has_dicom_marker(path):
        return "DICOM"
    return f"the {suffix} format" if suffix else "a file without a suffix"


def not_read(where: str, path: str | Path, reads: str = READ_FORMATS) -> str:
    """The message for a file skipped because the layout does not open it; ``reads``: what it does."""
    fmt = unread_format(path)
    bare = fmt == "DICOM" and file_suffix(path) is None and reads == READ_FORMATS
    hint = " without a .dcm suffix" if bare else ""
    return f"{where}: {fmt} is not read by this layout{hint} (not a readable image format here: it reads {reads})"


def _native(dtype: np.dtype) -> str:
    return np.dtype(dtype).newbyteorder("=").name


# -- NIfTI ---------------------------------------------------------------------------------------
def _nifti_xyz_shape(shape: tuple[int, ...], where: str) -> tuple[int, int, int]:
    if len(shape) == 2:
        return (shape[0], shape[1], 1)
    if len(shape) >= 3 and all(s == 1 for s in shape[3:]):
        return (shape[0], shape[1], shape[2])
    raise _fail(where, f"expected a 2D or 3D NIfTI (x, y[, z]), got shape {tuple(shape)}")


def _nifti_spacing(header) -> tuple[float, float]:
    zooms = header.get_zooms()
    if len(zooms) < 2:
        return _NAN2
    return tuple(float(z) if z > 0 else float("nan") for z in (zooms[1], zooms[0]))  # type: ignore[return-value]


@dataclass(frozen=True)
class _Plane:
    """How stored NIfTI voxel axes (i, j, k) reach the convention: flip each where set, then swap i and j."""

    flip: tuple[bool, bool, bool] = (False, False, False)
    swap: bool = False
    axcodes: str = ""  # the stored orientation, e.g. 'LAS'


def _nifti_plane(header) -> _Plane:
    """The reorientation of a NIfTI to RAS+ that keeps k the slice axis (see the module docstring)."""
    import nibabel as nib

    if int(header["sform_code"]) == 0 and int(header["qform_code"]) == 0:
        return _Plane()  # no orientation in the header (nibabel would assume ANALYZE's LAS): as stored
    ornt = nib.orientations.io_orientation(header.get_best_affine())
    if np.isnan(ornt[:2]).any():  # a degenerate in-plane axis: nothing to go by
        return _Plane()
    codes = "".join(c or "?" for c in nib.orientations.ornt2axcodes(ornt))
    flip = (bool(ornt[0, 1] < 0), bool(ornt[1, 1] < 0), bool(ornt[2, 1] < 0))  # NaN < 0 is False
    return _Plane(flip, bool(ornt[0, 0] > ornt[1, 0]), codes)


def _orient(xyz: np.ndarray, plane: _Plane) -> np.ndarray:
    """A NIfTI array (x, y, z) reoriented by ``plane``, then transposed to (slices, rows, cols)."""
    flips = tuple(slice(None, None, -1 if f else None) for f in plane.flip)
    xyz = xyz[flips]
    if plane.swap:
        xyz = xyz.transpose(1, 0, 2)
    return np.ascontiguousarray(xyz.transpose(2, 1, 0))


def _nifti_header(raw: bytes, where: str):
    """The NIfTI-1 or -2 header at the start of ``raw``, parsed without nibabel's slow fix-up checks."""
    import nibabel as nib

    if len(raw) < 348:
        raise _fail(where, f"expected a NIfTI header of 348 or 540 bytes, the file holds {len(raw)}")
    sizes = {int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big")}
    cls = nib.Nifti2Header if 540 in sizes else nib.Nifti1Header
    header = cls.from_fileobj(io.BytesIO(raw), check=False)
    if not sizes & {348, 540} or header["magic"].item() not in (b"n+1", b"n+2"):
        raise _fail(where, "expected a single-file NIfTI-1/2 image (magic 'n+1'), the header does not say so")
    dtype = header.get_data_dtype()
    if dtype.fields is not None:
        raise _fail(where, f"expected scalar voxels, got the compound NIfTI type {dtype}")
    return header


def _nifti_scaled(header) -> bool:
    slope, inter = header.get_slope_inter()
    return slope is not None and not (slope == 1 and (inter or 0) == 0)


def _probe_nifti(path: Path, where: str) -> VolumeInfo:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        header = _nifti_header(f.read(544), where)
    x, y, z = _nifti_xyz_shape(header.get_data_shape(), where)
    dtype = np.dtype(np.float32) if _nifti_scaled(header) else header.get_data_dtype()
    plane, spacing = _nifti_plane(header), _nifti_spacing(header)
    if plane.swap:
        x, y, spacing = y, x, spacing[::-1]
    reoriented = plane.swap or any(plane.flip)
    return VolumeInfo((z, y, x), 1, _native(dtype), spacing, plane.axcodes, reoriented)


def _read_nifti(path: Path, where: str) -> np.ndarray:
    raw = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        raw = gzip.decompress(raw)  # whole-file decompression: ~3x faster than nibabel's stream
    header = _nifti_header(raw, where)
    shape = header.get_data_shape()
    dtype, offset = header.get_data_dtype(), int(header.get_data_offset())
    count = int(np.prod(shape))
    if len(raw) < offset + count * dtype.itemsize:
        need = offset + count * dtype.itemsize
        raise _fail(where, f"it holds {len(raw)} bytes of NIfTI, the header needs {need} (truncated)")
    data = np.frombuffer(raw, dtype, count, offset).reshape(shape, order="F")
    if _nifti_scaled(header):
        slope, inter = header.get_slope_inter()
        data = data.astype(np.float32) * np.float32(slope) + np.float32(inter or 0)
    data = data.reshape(_nifti_xyz_shape(data.shape, where)).astype(_native(data.dtype), copy=False)
    if data.dtype.kind == "f" and data.dtype != np.float16:
        data = data.astype(np.float32, copy=False)
    return _orient(data, _nifti_plane(header))


# -- MetaImage (.mhd/.raw, .mha) via SimpleITK --------------------------------------------------
def _mhd_fields(path: Path) -> dict[str, str]:
    """The ``key = value`` header of a MetaImage (.mhd, or the text before an .mha's data)."""
    with open(path, "rb") as f:
        text = f.read(65536).decode("latin-1")
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            break
    return fields


def _check_raw_size(path: Path, fields: dict[str, str], info: VolumeInfo, itemsize: int, where: str) -> None:
    """A truncated .raw beside an .mhd is caught here, before ITK prints its own noise to stderr."""
    data_file = fields.get("ElementDataFile", "")
    if (
        fields.get("CompressedData", "False") == "True"
        or data_file in ("", "LOCAL", "LIST")
        or " " in data_file
    ):
        return
    raw = path.parent / data_file
    need = int(np.prod(info.shape)) * info.channels * itemsize
    have = raw.stat().st_size if raw.is_file() else -1
    if have < 0:
        raise _fail(where, f"its data file {data_file} is missing")
    if have < need:
        raise _fail(where, f"its data file {data_file} holds {have} bytes, expected {need} (truncated)")


def _probe_sitk(path: Path, where: str, kind: str) -> VolumeInfo:
    suffix = file_suffix(path)
    if suffix in DICOM_SUFFIXES:
        return probe_dicom(path, where, kind)
    reader = _sitk_file_reader(path)
    reader.ReadImageInformation()
    info = _sitk_info(reader, where)
    fields = _mhd_fields(path)
    if not {"ElementSpacing", "ElementSize"} & fields.keys():
        info = VolumeInfo(info.shape, info.channels, info.dtype)  # ITK's 1.0 where the header has none
    if suffix == ".mhd":
        _check_raw_size(path, fields, info, np.dtype(info.dtype).itemsize, where)
    return info


def _read_sitk(path: Path, where: str, kind: str) -> np.ndarray:
    if file_suffix(path) in DICOM_SUFFIXES:
        return read_dicom(path, where, kind)
    import SimpleITK as sitk

    return _sitk_array(sitk.ReadImage(str(path)))


# -- PNG / TIFF via Pillow -----------------------------------------------------------------------
_PIL_MODES = {"1": ("uint8", 1), "L": ("uint8", 1), "P": ("uint8", 1), "RGB": ("uint8", 3)}
_PIL_MODES |= {m: ("uint16", 1) for m in ("I;16", "I;16L", "I;16B", "I;16N")}
_PIL_MODES |= {"I": ("int32", 1), "F": ("float32", 1)}


def _pil_mode(img, where: str, kind: str) -> tuple[str, int]:
    if img.mode not in _PIL_MODES:
        raise _fail(where, f"expected a grey or RGB picture, got Pillow mode {img.mode!r}")
    if kind == "image" and img.mode == "P":
        raise _fail(where, "expected a grey or RGB image, got a palette image (convert it to grey first)")
    if kind == "label" and img.mode == "RGB":
        raise _fail(where, "expected a single-channel label map, got an RGB picture")
    return _PIL_MODES[img.mode]


def _probe_pil(path: Path, where: str, kind: str) -> VolumeInfo:
    from PIL import Image

    with Image.open(path) as img:
        dtype, channels = _pil_mode(img, where, kind)
        frames = getattr(img, "n_frames", 1)
        return VolumeInfo((frames, img.height, img.width), channels, dtype)


def _read_pil(path: Path, where: str, kind: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        dtype, channels = _pil_mode(img, where, kind)
        frames = []
        for f in range(getattr(img, "n_frames", 1)):
            img.seek(f)
            a = np.asarray(img).astype(dtype, copy=False)
            frames.append(a.transpose(2, 0, 1) if channels > 1 else a)
    return np.ascontiguousarray(np.stack(frames))


# -- NumPy ---------------------------------------------------------------------------------------
def _npy_shape(shape: tuple[int, ...], where: str) -> tuple[int, int, int]:
    if len(shape) == 2:
        return (1, *shape)
    if len(shape) == 3:
        return shape  # type: ignore[return-value]
    raise _fail(where, f"expected a (rows, cols) or (slices, rows, cols) array, got shape {shape}")


def _probe_npy(path: Path, where: str) -> VolumeInfo:
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    if arr.dtype.kind not in "biuf":
        raise _fail(where, f"expected a numeric array, got dtype {arr.dtype}")
    return VolumeInfo(_npy_shape(arr.shape, where), 1, _native(arr.dtype))


def _read_npy(path: Path, where: str) -> np.ndarray:
    arr = np.load(path, allow_pickle=False)
    arr = arr.reshape(_npy_shape(arr.shape, where))
    return np.ascontiguousarray(arr.astype(_native(arr.dtype), copy=False))


# -- dispatch ------------------------------------------------------------------------------------
def _dispatch(path: Path, where: str, kind: str, probing: bool):
    if path.is_dir():
        return probe_series(path, where, kind) if probing else read_series(path, where, kind)
    suffix = file_suffix(path)
    if suffix in (".nii", ".nii.gz"):
        return _probe_nifti(path, where) if probing else _read_nifti(path, where)
    if suffix in (".mhd", ".mha", *DICOM_SUFFIXES):
        return _probe_sitk(path, where, kind) if probing else _read_sitk(path, where, kind)
    if suffix in (".png", ".tif", ".tiff"):
        return _probe_pil(path, where, kind) if probing else _read_pil(path, where, kind)
    if suffix == ".npy":
        return _probe_npy(path, where) if probing else _read_npy(path, where)
    raise _fail(where, f"expected one of the suffixes {list(SUFFIXES)}")


def probe(path: str | Path, where: str, kind: str = "image") -> VolumeInfo:
    """Shape, channels, dtype and spacing of a file (or of a folder's DICOM series) from its header.
    ``kind`` is image or label."""
    try:
        return _dispatch(Path(path), where, kind, probing=True)
    except InputDataError:
        raise
    except _READ_ERRORS as e:
        raise _fail(where, e) from e
    except Exception as e:  # nibabel's ImageFileError and friends derive from Exception only
        if type(e).__module__.split(".")[0] in ("nibabel", "PIL"):
            raise _fail(where, e) from e
        raise


def read_volume(path: str | Path, where: str, kind: str = "image") -> np.ndarray:
    """The data of a file (or of a folder's DICOM series): (slices, rows, cols), or (slices, channels,
    rows, cols) for RGB images."""
    try:
        return _dispatch(Path(path), where, kind, probing=False)
    except InputDataError:
        raise
    except _READ_ERRORS as e:
        raise _fail(where, e) from e
    except Exception as e:
        if type(e).__module__.split(".")[0] in ("nibabel", "PIL"):
            raise _fail(where, e) from e
        raise


def probe_channels(paths: Sequence[Path], wheres: Sequence[str]) -> VolumeInfo:
    """:func:`probe` of one image stored as one single-channel file per channel (nnU-Net's ``_0000``,
    ``_0001``...); a single path is probed as it is."""
    infos = [probe(p, w, "image") for p, w in zip(paths, wheres, strict=True)]
    if len(infos) == 1:
        return infos[0]
    first = infos[0]
    for info, where in zip(infos, wheres, strict=True):
        if info.channels != 1:
            raise InputDataError(f"Expected one channel per file in {where}. Got {info.channels} instead.")
        if (info.shape, info.dtype) != (first.shape, first.dtype):
            raise InputDataError(
                f"Expected the channel files of one image to share shape and dtype. Got {first.shape} "
                f"{first.dtype} in {wheres[0]} and {info.shape} {info.dtype} in {where}."
            )
    return VolumeInfo(first.shape, len(infos), first.dtype, first.spacing)


def read_channels(paths: Sequence[Path], wheres: Sequence[str]) -> np.ndarray:
    """:func:`read_volume` of one image stored one file per channel: (slices, channels, rows, cols)."""
    if len(paths) == 1:
        return read_volume(paths[0], wheres[0], "image")
    return np.stack([read_volume(p, w, "image") for p, w in zip(paths, wheres, strict=True)], axis=1)
