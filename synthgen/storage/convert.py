"""Converting a store into files that the field's tools read: an nnU-Net v2 raw dataset, NIfTI or PNG.

Only samples of complete shards are converted, read a block at a time (never the whole store). Every
file is written into a scratch folder beside the output, which is renamed to the output only once
all are written; any failure removes it, so the output is either whole or as it was. An existing,
non-empty output is refused unless ``overwrite`` is given, and even then only an earlier output of
this converter (it holds :data:`MARKER`) is replaced.

Case identifiers are ``case_`` and the store's sample index, zero padded (``case_000042``).

``nnunet`` (nnU-Net v2 raw layout): ``imagesTr/{case}_0000.nii.gz`` (one file per channel: ``_0000``,
``_0001``...), ``labelsTr/{case}.nii.gz`` and ``dataset.json`` (``channel_names``, ``labels`` by name
with background 0, ``numTraining``, ``file_ending``). The output folder is the dataset folder itself,
or, with a dataset id and name, ``OUT/DatasetXXX_NAME`` (OUT then plays nnU-Net's ``nnUNet_raw``).
With ``split`` the held-out test patients (:func:`~synthgen.storage.splits.split_indices`) go to
``imagesTs/`` and ``labelsTs/``: nnU-Net never trains on them (it reads neither folder); they are there
for prediction and ``nnUNetv2_evaluate_folder``. nnU-Net needs consecutive label values (0, 1, 2...):
a schema with gaps is refused, not remapped.

``nifti``: ``images/{case}.nii.gz`` and ``labels/{case}.nii.gz``; ``synthgen ingest OUT NEW --layout
pairs --schema S --pattern '../labels/{name}'`` reads them back. ``png``: ``images/{case}.png`` (8-bit
grey, or RGB for 3 channels) and ``labels/{case}.png`` (8-bit, the label values). Other image dtypes and
channel counts are refused, not rescaled: PNG could not hold them exactly; use ``nifti``.

Geometry: each slice is a 2D NIfTI file, nnU-Net v2's native 2D input (its SimpleITKIO reads 2D NIfTI
and adds the dummy axis itself; the old pseudo-3D files are no longer needed, and ``dataset.json``
names that reader). The NIfTI data array is indexed (x = column, y = row), as NIfTI and synthgen's own
reader expect: nibabel returns the store's array transposed, SimpleITK the store's array as it is. The
pixel size (mm) goes to the header: the store's ``spacing`` attribute, else the per-sample
``meta/spacing`` that ``synthgen ingest`` records; where neither is known 1.0 is written, the units are
left unknown and the result says so. Multi-channel images in ``nifti`` are one file of shape
(x, y, 1, 1, C) (NIfTI's vector convention); float16 images are written as float32 (NIfTI has no
float16), every other dtype as it is.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import re
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthgen import __version__
from synthgen.errors import ConfigError, SchemaError, StoreError, StoreExistsError, StoreNotFoundError
from synthgen.schemas import LabelSchema, parse_bool, parse_int, parse_mapping, parse_str, reject_unknown_keys
from synthgen.storage.integrity import is_local, local_path
from synthgen.storage.splits import split_indices
from synthgen.storage.store import StoreReader, store_exists

FORMATS = ("nnunet", "nifti", "png")
MARKER = ".synthgen_convert.json"  # written into every output: what it was converted from, and how
NIFTI_ENDING = ".nii.gz"
READER_WRITER = "SimpleITKIO"  # the nnU-Net reader of 2D NIfTI (its NibabelIO reads 3D only)
DEFAULT_BLOCK = 64  # samples read at a time
PNG_COMPRESS_LEVEL = 1  # lossless at any level; 1 is the fastest
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class ConvertConfig:
    """Everything ``synthgen convert`` needs. ``dataset_id`` and ``name`` (nnunet only) go together."""

    store: str
    out: str
    to: str
    split: bool = False
    dataset_id: int | None = None
    name: str | None = None
    overwrite: bool = False
    block_size: int = DEFAULT_BLOCK

    def __post_init__(self) -> None:
        parse_str(self.store, "the STORE to convert")
        parse_str(self.out, "the output folder OUT")
        if not is_local(self.out):
            raise ConfigError(f"Expected a local folder for OUT. Got the URL {self.out!r} instead.")
        if self.to not in FORMATS:
            raise ConfigError(f"Expected --to in {FORMATS}. Got {self.to!r} instead.")
        parse_bool(self.split, "split")
        parse_bool(self.overwrite, "overwrite")
        parse_int(self.block_size, "the block size (samples read at a time)", lo=1)
        if self.to != "nnunet" and (self.split or self.dataset_id is not None or self.name is not None):
            raise ConfigError(
                f"Expected --split, --dataset-id and --name with --to nnunet only. Got them with --to {self.to}."
            )
        if (self.dataset_id is None) != (self.name is None):
            raise ConfigError(
                "Expected --dataset-id and --name together (for OUT/DatasetXXX_NAME), or neither "
                "(OUT is the dataset folder)."
            )
        if self.dataset_id is not None:
            parse_int(self.dataset_id, "the nnU-Net dataset id", lo=1, hi=999)
        if self.name is not None and not _NAME.match(self.name):
            raise ConfigError(
                f"Expected a dataset name of letters, digits, '_' and '-'. Got {self.name!r} instead."
            )

    @property
    def folder(self) -> Path:
        """The folder that receives the files: OUT, or OUT/DatasetXXX_NAME."""
        out = Path(local_path(self.out))
        return out / f"Dataset{self.dataset_id:03d}_{self.name}" if self.dataset_id is not None else out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConvertConfig:
        data = parse_mapping(data, "a convert config")
        reject_unknown_keys(data, set(cls.__dataclass_fields__), "a convert config")
        return cls(**data)


@dataclass(frozen=True)
class ConvertResult:
    folder: str
    to: str
    train: int  # samples written (to imagesTr for nnunet)
    test: int  # samples written to imagesTs (nnunet with split), else 0
    spacing: str  # where the pixel size in the headers came from
    seconds: float

    def lines(self) -> list[str]:
        where = f"{self.train} to imagesTr, {self.test} to imagesTs" if self.to == "nnunet" else "all"
        total = self.train + self.test
        rate = total / self.seconds if self.seconds > 0 else float("nan")
        return [
            f"Converted {total} samples ({where}) to {self.to} in {self.folder} in {self.seconds:.1f} s "
            f"({rate:.0f} samples/s).",
            f"pixel spacing: {self.spacing}",
        ]


def case_id(index: int, n: int) -> str:
    """The case identifier of sample ``index`` of a store of ``n`` samples."""
    return f"case_{index:0{max(6, len(str(n - 1)))}d}"


def nnunet_labels(schema: LabelSchema) -> dict[str, int]:
    """``dataset.json``'s ``labels``: background 0 and each class by name, in value order."""
    classes = sorted(schema.classes, key=lambda c: c.value)
    values = [c.value for c in classes]
    if values != list(range(1, len(values) + 1)):
        raise SchemaError(
            f"Expected consecutive label values 1..{len(values)} for nnU-Net (it needs 0, 1, 2...). "
            f"Schema {schema.name!r} has {values}: remap the store to such a schema first."
        )
    return {"background": 0} | {c.name: c.value for c in classes}


def dataset_json(reader: StoreReader, name: str, train: int, spacing: str) -> dict[str, Any]:
    """nnU-Net v2's ``dataset.json`` for a store with ``train`` training cases."""
    channels = reader.layout.image_shape[0] if len(reader.layout.image_shape) == 3 else 1
    names = {"0": "image"} if channels == 1 else {str(c): f"channel_{c}" for c in range(channels)}
    return {
        "channel_names": names,  # any name but 'CT': nnU-Net z-scores each image
        "labels": nnunet_labels(reader.schema),
        "numTraining": train,
        "file_ending": NIFTI_ENDING,
        "overwrite_image_reader_writer": READER_WRITER,
        "name": name,
        "description": f"Converted by synthgen {__version__} from {reader.url}; pixel spacing: {spacing}.",
    }


def nifti_bytes(array: np.ndarray, spacing: tuple[float, float], known: bool) -> bytes:
    """A single-file NIfTI-1 image (uncompressed) of an (H, W) or (C, H, W) array, data indexed
    (x = column, y = row[, 1, 1, C]). That order, x fastest, is the array's own C order: the data bytes
    are the array's bytes, after a header made once per shape, dtype and spacing."""
    if array.dtype == np.float16:
        array = array.astype(np.float32)
    spacing = (float(spacing[0]), float(spacing[1]))
    return (
        _nifti_header(array.shape, array.dtype.str, spacing, bool(known))
        + np.ascontiguousarray(array).tobytes()
    )


@functools.lru_cache(maxsize=64)
def _nifti_header(shape: tuple[int, ...], dtype: str, spacing: tuple[float, float], known: bool) -> bytes:
    import nibabel as nib

    array = np.zeros(shape, dtype)
    data = array.T if array.ndim == 2 else array.transpose(2, 1, 0)[:, :, None, None, :]
    affine = np.diag([spacing[1], spacing[0], 1.0, 1.0])
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm" if known else "unknown")
    if array.ndim == 3:
        image.header.set_intent("vector")
    raw = image.to_bytes()
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw))
    offset = int(header.get_data_offset())
    slope, inter = header.get_slope_inter()
    if len(raw) != offset + array.nbytes or slope not in (None, 1) or inter not in (None, 0):
        raise StoreError(
            f"Cannot write {dtype} images of shape {shape} as NIfTI: nibabel would rescale them."
        )
    return raw[:offset]


def _write_nifti(path: Path, array: np.ndarray, spacing: tuple[float, float], known: bool) -> None:
    path.write_bytes(gzip.compress(nifti_bytes(array, spacing, known), compresslevel=1, mtime=0))


def _check_png(reader: StoreReader) -> None:
    layout = reader.layout
    channels = layout.image_shape[0] if len(layout.image_shape) == 3 else 1
    if layout.image_dtype != "uint8":
        raise ConfigError(
            f"Expected uint8 images for --to png (8-bit PNG holds them exactly). {reader.url} holds "
            f"{layout.image_dtype}: use --to nifti, which keeps the values."
        )
    if channels not in (1, 3):
        raise ConfigError(
            f"Expected 1 (grey) or 3 (RGB) channels for --to png. {reader.url} has {channels}: use --to nifti."
        )


def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    if array.ndim == 3:
        array = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


class _Spacing:
    """The (row, col) pixel size of each sample and where it comes from."""

    def __init__(self, reader: StoreReader) -> None:
        self.reader = reader
        self.fixed = tuple(float(s) for s in reader.attrs.spacing[-2:]) if reader.attrs.spacing else None
        self.per_sample = self.fixed is None and "spacing" in {m.name for m in reader.layout.meta}
        self.unknown = 0

    def block(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, 2) spacings and (n,) whether each is known; 1.0 where not."""
        n = stop - start
        if self.fixed is not None:
            return np.tile(np.asarray(self.fixed, np.float64), (n, 1)), np.ones(n, bool)
        if self.per_sample:
            values = self.reader.read_meta("spacing", start, stop).astype(np.float64).reshape(n, -1)[:, -2:]
            known = np.isfinite(values).all(1) & (values > 0).all(1)
        else:
            values, known = np.ones((n, 2)), np.zeros(n, bool)
        self.unknown += int((~known).sum())
        return np.where(known[:, None], values, 1.0), known

    def note(self, to: str) -> str:
        if to == "png":
            return "not written (PNG has no pixel size)"
        if self.fixed is not None:
            return f"the store's spacing attribute, (row, col) = {self.fixed} mm"
        if self.per_sample:
            unknown = f"; 1.0 where unknown ({self.unknown} samples)" if self.unknown else ""
            return f"per-sample meta/spacing (mm){unknown}"
        return "unknown to the store: 1.0 written, units unknown"


def _blocks(reader: StoreReader, size: int) -> Iterator[tuple[int, int]]:
    for k in reader.complete_shards:
        start, stop = reader.layout.shard_bounds(k)
        for a in range(start, stop, size):
            yield a, min(a + size, stop)


def _check_target(folder: Path, overwrite: bool) -> None:
    if not folder.exists():
        return
    if not folder.is_dir():
        raise StoreExistsError(f"Output {folder} exists and is not a folder. Choose another path.")
    if not any(folder.iterdir()):
        return
    if not overwrite:
        raise StoreExistsError(
            f"Output {folder} already exists and is not empty. Choose another path or pass --overwrite."
        )
    if not (folder / MARKER).is_file():
        raise StoreExistsError(
            f"Output {folder} was not written by 'synthgen convert' (no {MARKER}): refusing to replace it. "
            "Choose another path."
        )


def _check_paths(config: ConvertConfig) -> None:
    if not store_exists(config.store):
        raise StoreNotFoundError(f"Expected a synthgen store at {config.store}. Nothing is there.")
    folder = config.folder.resolve()
    if is_local(config.store):
        store = Path(local_path(config.store)).resolve()
        if folder == store or store in folder.parents or folder in store.parents:
            raise StoreExistsError(f"Output {folder} overlaps the store {store}: choose another path.")
    _check_target(folder, config.overwrite)
    if config.dataset_id is not None and folder.parent.is_dir():
        prefix = f"Dataset{config.dataset_id:03d}_"
        others = [p.name for p in folder.parent.iterdir() if p.name.startswith(prefix) and p != folder]
        if others:
            raise StoreExistsError(
                f"Expected dataset id {config.dataset_id} to be free in {folder.parent}. {others[0]} has it "
                "(nnU-Net finds datasets by id): choose another --dataset-id."
            )


def _swap_in(scratch: Path, folder: Path) -> None:
    """Rename ``scratch`` to ``folder``, replacing what is there (already checked to be replaceable)."""
    aside = folder.with_name(f"{folder.name}.old-{uuid.uuid4().hex[:8]}") if folder.exists() else None
    if aside is not None:
        folder.rename(aside)
    try:
        scratch.rename(folder)
    except OSError:
        if aside is not None:
            aside.rename(folder)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _made_parents(folder: Path) -> list[Path]:
    """Create the missing parents of ``folder``; returns them, deepest first (to remove on failure)."""
    missing = [p for p in folder.parents if not p.exists()]
    folder.parent.mkdir(parents=True, exist_ok=True)
    return missing


def convert_store(config: ConvertConfig, *, progress: bool = True) -> ConvertResult:
    """Convert the complete shards of ``config.store`` into ``config.to`` files in ``config.folder``."""
    from tqdm import tqdm

    started = time.perf_counter()
    _check_paths(config)
    reader = StoreReader(config.store)
    n = reader.layout.n
    if not reader.complete_shards:
        raise StoreError(f"Expected complete shards to convert in {reader.url}. It has none.")
    if config.to == "png":
        _check_png(reader)
    if config.to == "nnunet":
        nnunet_labels(reader.schema)  # refuse a schema nnU-Net cannot take before writing anything
    is_test = np.zeros(n, bool)
    if config.split:
        is_test[split_indices(reader, "test")] = True
    spacing = _Spacing(reader)
    if config.to == "nnunet":
        subfolders = ("imagesTr", "labelsTr", *(("imagesTs", "labelsTs") if config.split else ()))
    else:
        subfolders = ("images", "labels")
    folder = config.folder.resolve()
    made = _made_parents(folder)
    scratch = folder.with_name(f"{folder.name}.partial-{uuid.uuid4().hex[:8]}")
    counts = {False: 0, True: 0}
    try:
        for sub in subfolders:
            (scratch / sub).mkdir(parents=True)
        with tqdm(
            total=reader.num_available, desc=f"convert {config.to}", unit="sample", disable=not progress
        ) as bar:
            for a, b in _blocks(reader, config.block_size):
                images, labels = reader.read_block(a, b)
                reader.schema.check_labels(labels, f"samples [{a}, {b}) of {reader.url}")
                sizes, known = spacing.block(a, b)
                for j, i in enumerate(range(a, b)):
                    case, test = case_id(i, n), bool(is_test[i])
                    _write_sample(scratch, config.to, case, images[j], labels[j], sizes[j], known[j], test)
                    counts[test] += 1
                bar.update(b - a)
        note = spacing.note(config.to)
        if config.to == "nnunet":
            text = json.dumps(
                dataset_json(reader, config.name or reader.schema.name, counts[False], note), indent=2
            )
            (scratch / "dataset.json").write_text(text + "\n")
        marker = {
            "synthgen_version": __version__,
            "config": config.to_dict(),
            "samples": counts[False] + counts[True],
            "test_samples": counts[True],
            "spacing": note,
        }
        (scratch / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        _swap_in(scratch, folder)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        for p in made:
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        raise
    return ConvertResult(
        str(folder), config.to, counts[False], counts[True], note, time.perf_counter() - started
    )


def _write_sample(
    root: Path,
    to: str,
    case: str,
    image: np.ndarray,
    label: np.ndarray,
    spacing: np.ndarray,
    known: bool,
    test: bool,
) -> None:
    rc = (float(spacing[0]), float(spacing[1]))
    if to == "png":
        _write_png(root / "images" / f"{case}.png", image)
        _write_png(root / "labels" / f"{case}.png", label)
        return
    if to == "nifti":
        _write_nifti(root / "images" / f"{case}{NIFTI_ENDING}", image, rc, known)
        _write_nifti(root / "labels" / f"{case}{NIFTI_ENDING}", label, rc, known)
        return
    kind = "Ts" if test else "Tr"
    for c, channel in enumerate(image if image.ndim == 3 else image[None]):
        _write_nifti(root / f"images{kind}" / f"{case}_{c:04d}{NIFTI_ENDING}", channel, rc, known)
    _write_nifti(root / f"labels{kind}" / f"{case}{NIFTI_ENDING}", label, rc, known)
