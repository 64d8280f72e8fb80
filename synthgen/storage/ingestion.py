"""Ingestion: a labelled dataset on disk -> a synthgen store of 2D image/label samples.

Three passes, each bounded in memory: :func:`discover` lists and pairs the files, :func:`scan` reads
their headers (slice counts, shapes, dtypes) so the store can be created with its final size, then
the files are read one pair at a time and written one whole shard at a time. A failure after the
store was created deletes it, so no half-written store remains.

Geometry, in this order: NIfTI files come reoriented to one convention (RAS+, the slice axis kept:
see :mod:`synthgen.storage.readers`); ``spacing`` then resamples each image to that (row, col) pixel
size in mm, from the spacing its header gives, as MONAI's ``Spacing`` does (output size
``round((n - 1) * old / new) + 1``, the first pixel centres kept in place, images linear, labels
nearest, samples beyond the last pixel taking its value); ``pad_or_crop`` then pads (0: black,
background) or crops symmetrically about the centre to H x W, keeping the aspect ratio, as MONAI's
``ResizeWithPadOrCrop`` does (the kernels of :mod:`synthgen.kernels.resize`). Labels follow their
image's grid and spacing. A DICOM image (a file, or a folder's series) keeps its stored voxel order,
so a NIfTI label that reading would turn to RAS+ is refused beside it (:func:`scan`). ``size`` instead
stretches every slice to H x W (labels by nearest neighbour, never a new value; images linear,
antialiased when shrinking): it does not combine with ``spacing`` or ``pad_or_crop``.

Intensity convention (the store's ``intensity``): uint8 and uint16 images keep their dtype's range
(0..255, 0..65535); images stored as float (float16, and float32 for every other source dtype:
int16, int32, float32, float64...) record the lowest and highest value the store holds, taken from the
shards as they are written (padding's 0 included) and recorded when the store is marked complete,
before it takes the output's place. Readers that map
``low..high`` to [0, 1] therefore neither clip nor squash what was ingested, with or without
resampling.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthgen.errors import ConfigError, InputDataError, StoreExistsError
from synthgen.kernels import (
    pad_or_crop,
    resize_images,
    resize_labels,
    spacing_images,
    spacing_labels,
    spacing_shape,
)
from synthgen.schemas import (
    Intensity,
    LabelSchema,
    MetaField,
    StoreAttrs,
    StoreLayout,
    get_schema,
    parse_float,
    parse_int,
    parse_mapping,
    parse_str,
    reject_unknown_keys,
)
from synthgen.storage.integrity import aside_url, clear_scratch, is_local, recover, store_lease, swap_in
from synthgen.storage.layouts import (
    DEFAULT_PATTERNS,
    LAYOUTS,
    PHASES,
    VIEWS,
    SourcePair,
    discover,
    nnunet_dataset,
    parse_patterns,
)
from synthgen.storage.readers import (
    DICOM_SUFFIXES,
    ORIENTATION,
    VolumeInfo,
    file_suffix,
    probe,
    probe_channels,
    read_channels,
    read_volume,
)
from synthgen.storage.splits import SplitRule

_STORE_DTYPE = {"uint8": "uint8", "bool": "uint8", "uint16": "uint16", "float16": "float16"}
_MARK_EVERY_S = 2.0  # record finished shards in the root attributes at most this often


@dataclass(frozen=True)
class IngestConfig:
    """Everything ``synthgen ingest`` needs. ``size`` is (H, W) to stretch to, or None for the native
    size; ``spacing`` the (row, col) pixel size in mm to resample to; ``pad_or_crop`` the (H, W) to
    pad or crop to about the centre (see the module docstring for the order)."""

    source: str
    out: str
    layout: str | None = None
    schema: str | None = None
    size: tuple[int, int] | None = None
    shard_size: int = 256
    overwrite: bool = False
    patterns: tuple[str, ...] = DEFAULT_PATTERNS
    include: tuple[str, ...] = ()
    limit: int | None = None
    spacing: tuple[float, float] | None = None
    pad_or_crop: tuple[int, int] | None = None
    test_remainder: int = 0  # test patients: number % 10 == this (recorded as provenance 'split_rule')

    def __post_init__(self) -> None:
        parse_str(self.source, "SOURCE")
        parse_str(self.out, "OUT")
        if self.layout is not None and self.layout not in LAYOUTS:
            raise ConfigError(f"Expected a layout in {LAYOUTS}. Got {self.layout!r} instead.")
        if self.size is not None:
            if len(self.size) != 2:
                raise ConfigError(f"Expected --size H W. Got {self.size!r} instead.")
            for s in self.size:
                parse_int(s, "each of --size H W", lo=1, hi=65536)
        if self.pad_or_crop is not None:
            if len(self.pad_or_crop) != 2:
                raise ConfigError(f"Expected --pad-or-crop H W. Got {self.pad_or_crop!r} instead.")
            for s in self.pad_or_crop:
                parse_int(s, "each of --pad-or-crop H W", lo=1, hi=65536)
        if self.spacing is not None:
            if len(self.spacing) != 2:
                raise ConfigError(f"Expected --spacing MM MM (row, col). Got {self.spacing!r} instead.")
            for s in self.spacing:
                if parse_float(s, "each of --spacing MM MM") <= 0:
                    raise ConfigError(
                        f"Expected each of --spacing MM MM to be a positive size in mm. Got {s}."
                    )
        if self.size is not None and (self.spacing is not None or self.pad_or_crop is not None):
            raise ConfigError(
                "Expected --size alone, or --spacing and/or --pad-or-crop. Got --size with them: --size stretches "
                "every slice to H x W; for a fixed size that keeps the aspect ratio use --pad-or-crop H W."
            )
        parse_int(self.shard_size, "--shard-size", lo=1)
        parse_patterns(self.patterns)
        if self.limit is not None:
            parse_int(self.limit, "--limit", lo=1)
        SplitRule(test=parse_int(self.test_remainder, "--test-remainder", lo=0, hi=9))

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "out": self.out,
            "layout": self.layout,
            "schema": self.schema,
            "size": list(self.size) if self.size is not None else None,
            "shard_size": self.shard_size,
            "overwrite": self.overwrite,
            "patterns": list(self.patterns),
            "include": list(self.include),
            "limit": self.limit,
            "spacing": list(self.spacing) if self.spacing is not None else None,
            "pad_or_crop": list(self.pad_or_crop) if self.pad_or_crop is not None else None,
            "test_remainder": self.test_remainder,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IngestConfig:
        data = parse_mapping(data, "an ingest config")
        reject_unknown_keys(data, set(cls.__dataclass_fields__), "an ingest config")
        size, spacing, pad = data.get("size"), data.get("spacing"), data.get("pad_or_crop")
        return cls(
            source=data.get("source"),  # type: ignore[arg-type]
            out=data.get("out"),  # type: ignore[arg-type]
            layout=data.get("layout"),
            schema=data.get("schema"),
            size=tuple(size) if size is not None else None,  # type: ignore[arg-type]
            shard_size=data.get("shard_size", 256),
            overwrite=bool(data.get("overwrite", False)),
            patterns=tuple(data.get("patterns", DEFAULT_PATTERNS)),
            include=tuple(data.get("include", ())),
            limit=data.get("limit"),
            spacing=tuple(spacing) if spacing is not None else None,  # type: ignore[arg-type]
            pad_or_crop=tuple(pad) if pad is not None else None,  # type: ignore[arg-type]
            test_remainder=data.get("test_remainder", 0),
        )


@dataclass(frozen=True)
class IngestResult:
    attrs: StoreAttrs
    layout: str
    seconds: float


def store_image_dtype(dtype: str) -> str:
    """The store dtype for source images of ``dtype``: uint8/uint16/float16 kept, the rest float32."""
    return _STORE_DTYPE.get(dtype, "float32")


# -- passes ---------------------------------------------------------------------------------------
def scan(source: Path, pairs: Sequence[SourcePair]) -> list[VolumeInfo]:
    """Header of every image, checked against its label's header (same slices, rows and cols; a DICOM
    image, kept in its stored order, with a label that reading does not reorder)."""
    infos = []
    for p in pairs:
        image = probe_channels([source / f for f in p.images], p.images)
        label = probe(source / p.label, p.label, "label")
        if image.shape != label.shape:
            raise InputDataError(
                f"Expected image and label of the same shape (slices, rows, cols). Got {image.shape} in "
                f"{p.image} and {label.shape} in {p.label}."
            )
        dicom = (source / p.image).is_dir() or file_suffix(p.image) in DICOM_SUFFIXES
        if dicom and label.reoriented:
            raise InputDataError(
                f"Expected the label of the DICOM image {p.image} in the image's stored voxel order. Got "
                f"{p.label}, a NIfTI stored {label.orientation} that is read turned to RAS+ while DICOM keeps its "
                "order, so the two would not line up: save the label as .mha on the image's voxel grid."
            )
        infos.append(image)
    return infos


def _common(values: Sequence[Any], pairs: Sequence[SourcePair], what: str, hint: str) -> Any:
    seen: dict[Any, str] = {}
    for v, p in zip(values, pairs, strict=True):
        seen.setdefault(v, p.image)
    if len(seen) > 1:
        listed = "; ".join(f"{v} ({f})" for v, f in list(seen.items())[:3]) + (
            "; ..." if len(seen) > 3 else ""
        )
        raise InputDataError(
            f"Expected all images to share one {what}. Got {len(seen)} different: {listed}. {hint}"
        )
    return next(iter(seen))


def _source_hash(source: Path, pairs: Sequence[SourcePair]) -> str:
    h = hashlib.sha256()
    for p in pairs:
        for rel in (*p.images, p.label):
            path = source / rel
            if path.is_dir():  # a DICOM series: each file of the folder
                for f in sorted(path.iterdir()):
                    if f.is_file() and not f.name.startswith("."):
                        h.update(f"{rel}/{f.name}\t{f.stat().st_size}\n".encode())
            else:
                h.update(f"{rel}\t{path.stat().st_size}\n".encode())
    return "sha256:" + h.hexdigest()


def meta_fields() -> tuple[MetaField, ...]:
    return (
        MetaField("source_index", "int32", (), "index into provenance 'sources' and 'label_sources'"),
        MetaField(
            "slice_index",
            "int32",
            (),
            "slice of the source volume (0 for 2D files; NIfTI: after reorientation)",
        ),
        MetaField("patient", "int32", (), "patient number from the file name; -1 where unknown"),
        MetaField("view", "uint8", (), "view code: " + ", ".join(f"{k} {v}" for k, v in VIEWS.items())),
        MetaField(
            "phase", "uint8", (), "cardiac phase code: " + ", ".join(f"{k} {v}" for k, v in PHASES.items())
        ),
        MetaField(
            "spacing",
            "float32",
            (2,),
            "(row, col) pixel spacing in mm as stored: --spacing where given, else from the source header "
            "(NIfTI/MetaImage/DICOM; a NIfTI 1.0 may mean the header did not know), scaled by --size; NaN where "
            "unknown (PNG/TIFF/.npy)",
        ),
    )


# -- geometry: --spacing, then --pad-or-crop; or --size (the kernels of synthgen.kernels.resize) -----
@dataclass(frozen=True)
class _Geometry:
    """What ingestion does to the slices of one source file (see the module docstring for the order)."""

    native_spacing: tuple[float, float]  # (row, col) mm from the header, NaN where unknown
    target_spacing: tuple[float, float] | None  # --spacing
    pad_or_crop: bool  # to ``shape``; else ``shape`` is stretched to where it differs
    shape: tuple[int, int]  # as stored
    spacing: tuple[float, float]  # (row, col) of the stored pixels, NaN where unknown

    def images(self, images: np.ndarray) -> np.ndarray:
        if self.target_spacing is not None:
            images = spacing_images(images, self.native_spacing, self.target_spacing)
        if self.pad_or_crop:
            return pad_or_crop(images, self.shape)
        return resize_images(images, self.shape)

    def labels(self, labels: np.ndarray) -> np.ndarray:
        if self.target_spacing is not None:
            labels = spacing_labels(labels, self.native_spacing, self.target_spacing)
        if self.pad_or_crop:
            return pad_or_crop(labels, self.shape)
        return resize_labels(labels, self.shape)


def plan_geometry(info: VolumeInfo, config: IngestConfig) -> _Geometry:
    native = info.shape[1:]
    spacing = tuple(float(s) for s in info.spacing)
    resampled = native
    if config.spacing is not None:
        resampled, spacing = spacing_shape(native, info.spacing, config.spacing), tuple(config.spacing)
    shape = tuple(config.pad_or_crop or config.size or resampled)
    if config.size is not None:
        spacing = tuple(s * n / t for s, n, t in zip(spacing, resampled, shape, strict=True))
    return _Geometry(
        tuple(float(s) for s in info.spacing),  # type: ignore[arg-type]
        config.spacing,
        config.pad_or_crop is not None,
        shape,  # type: ignore[arg-type]
        spacing,  # type: ignore[arg-type]
    )


def _check_finite(image: np.ndarray, where: str) -> None:
    if image.dtype.kind in "fc" and not np.isfinite(image).all():
        bad = int(np.size(image) - np.count_nonzero(np.isfinite(image)))
        raise InputDataError(
            f"Expected finite image values. Got {bad} NaN or infinite value(s) in {where}: fix or leave "
            "out that file."
        )


def _images(source: Path, pair: SourcePair, info: VolumeInfo) -> np.ndarray:
    """The image volume of ``pair``, checked against its header: (slices, [channels,] rows, cols)."""
    image = read_channels([source / f for f in pair.images], pair.images)
    expected = (info.shape[0], *((info.channels,) if info.channels > 1 else ()), *info.shape[1:])
    if image.shape != expected:
        raise InputDataError(
            f"Expected data of shape {expected} as the header says. Got {image.shape} in {pair.image}."
        )
    _check_finite(image, pair.image)
    return image


def _samples(
    source: Path,
    pairs: Sequence[SourcePair],
    infos: Sequence[VolumeInfo],
    geometries: Sequence[_Geometry],
    schema: LabelSchema,
    dtype: str,
) -> Iterator[tuple[np.ndarray, np.ndarray, tuple]]:
    """One (image, labels, meta) per 2D sample, reading one pair of files at a time."""
    for index, (p, info, geometry) in enumerate(zip(pairs, infos, geometries, strict=True)):
        image = _images(source, p, info)
        raw = read_volume(source / p.label, p.label, "label")
        if raw.shape != info.shape:
            raise InputDataError(
                f"Expected data of shape {info.shape} as the header says. Got {raw.shape} in {p.label}."
            )
        labels = schema.encode_source(raw, p.label)
        spacing = np.array(geometry.spacing, np.float32)
        for z in range(info.shape[0]):
            img = geometry.images(image[z]).astype(dtype, copy=False)
            yield img, geometry.labels(labels[z]), (index, z, p.patient, p.view, p.phase, spacing)


def image_intensity(dtype: str, image_range: Sequence[float | None]) -> Intensity:
    """The store's intensity convention for images stored as ``dtype`` (see the module docstring): float
    stores record the lowest and highest value written (``image_range``, from the shards as written)."""
    if dtype in ("uint8", "uint16"):
        return Intensity.for_dtype(dtype)
    lo, hi = image_range
    if lo is None:  # no finite value at all (ingest refuses non-finite images before this)
        lo, hi = 0.0, 1.0
    if hi <= lo:  # one value throughout: a range of 1 holding it
        hi = lo + 1.0
    return Intensity(
        lo,
        hi,
        f"source values as stored, not rescaled: {lo:g} is the lowest stored value, {hi:g} the highest",
    )


def _check_output(config: IngestConfig, source: Path) -> None:
    from synthgen.storage.store import store_state

    state = store_state(config.out)
    if state == "absent":
        return
    if state == "other":
        raise StoreExistsError(
            f"Output {config.out} exists and is not a synthgen store: refusing to replace it. Choose another path."
        )
    if state == "synthgen" and not config.overwrite:
        raise StoreExistsError(
            f"Output {config.out} already exists. Choose another path or pass --overwrite to replace it."
        )
    if is_local(config.out):
        out = Path(config.out.removeprefix("file://")).resolve()
        if out == source or out in source.parents:
            raise StoreExistsError(f"Output {out} holds SOURCE {source}: refusing to overwrite it.")


def ingest(config: IngestConfig, *, progress: bool | None = None) -> IngestResult:
    """Ingest ``config.source`` into a new store at ``config.out``. ``progress`` None: only on a TTY.

    The store is written aside (``OUT.synthgen-new``) and moved into place when complete, under the
    output's lease: a failed or killed ingest leaves ``OUT`` as it was (absent, or the old store)."""
    with store_lease(config.out, "ingest"):
        recover(config.out)  # a swap that a killed ingest --overwrite left half done
        return _ingest(config, progress)


def _ingest(config: IngestConfig, progress: bool | None) -> IngestResult:
    from synthgen.storage.store import StoreWriter, delete_store

    t0 = time.perf_counter()
    source = Path(config.source).resolve()
    _check_output(config, source)
    exclude = Path(config.out).resolve() if is_local(config.out) else None
    layout, pairs = discover(
        source,
        config.layout,
        patterns=config.patterns,
        include=config.include,
        limit=config.limit,
        exclude=exclude,
    )
    if config.schema is None and layout == "pairs":
        raise ConfigError("Expected --schema NAME or a schema file for the 'pairs' layout. Got none.")
    if config.schema is None and layout == "nnunet":
        schema = nnunet_dataset(source).schema()
    else:
        schema = get_schema(config.schema or layout)
    infos = scan(source, pairs)
    if config.spacing is not None:
        _check_spacing_known(pairs, infos)
    geometries = [plan_geometry(i, config) for i in infos]
    hint = (
        "Pass --pad-or-crop H W for one size (aspect ratio kept), or --size H W to stretch."
        if config.spacing is not None
        else "Pass --size H W to resample (labels nearest, images linear), or --pad-or-crop H W."
    )
    _common([f"{h} x {w}" for h, w in (g.shape for g in geometries)], pairs, "size", hint)
    size = geometries[0].shape
    channels = _common([i.channels for i in infos], pairs, "number of channels", "Convert them alike first.")
    dtype = _common(
        [store_image_dtype(i.dtype) for i in infos], pairs, "stored dtype", "Convert them alike first."
    )
    n = sum(i.shape[0] for i in infos)
    slices_per_size, orientations = Counter(), Counter()
    for i in infos:
        slices_per_size[i.shape[1:]] += i.shape[0]
        orientations[i.orientation or "as stored"] += 1
    store_layout = StoreLayout(
        n=n,
        image_shape=(channels, *size) if channels > 1 else size,
        image_dtype=dtype,
        shard_size=config.shard_size,
        meta=meta_fields(),
    )
    provenance = {
        "tool": "synthgen ingest",
        "config": config.to_dict(),
        "layout": layout,
        "source_root": str(source),
        "sources": [p.image for p in pairs],
        "label_sources": [p.label for p in pairs],
        "source_hash": _source_hash(source, pairs),
        "source_hash_of": "sha256 of 'path<TAB>bytes' lines of every image and label file (each file of a "
        "DICOM series folder), in order",
        "native_sizes": {f"{h}x{w}": c for (h, w), c in sorted(slices_per_size.items())},
        "orientation": ORIENTATION,
        "source_orientations": dict(sorted(orientations.items())),
        "resampling": _resampling(config, infos, size),
        "split_rule": SplitRule(test=config.test_remainder).to_dict(),
    }
    attrs = StoreAttrs(
        layout=store_layout,
        schema=schema,
        intensity=image_intensity(dtype, (None, None)),  # float stores: recorded from what is written
        spacing=tuple(config.spacing) if config.spacing is not None else None,
        provenance=provenance,
    )
    aside = aside_url(config.out)
    try:
        clear_scratch(aside)  # what a killed ingest left
        writer = StoreWriter.create(aside, attrs, overwrite=True)  # a leftover aside store is ours
        try:
            image_range = _write_all(
                writer, _samples(source, pairs, infos, geometries, schema, dtype), progress
            )
        finally:
            writer.close()
        attrs = writer.mark_complete(
            [],
            {"image_range": image_range, "seconds": round(time.perf_counter() - t0, 2)},
            intensity=image_intensity(dtype, image_range),
        )
    except StoreExistsError:  # someone else's files are where the aside store would go: leave them
        raise
    except BaseException:  # remove what this run created; the output stays as it was
        delete_store(aside)
        raise
    swap_in(aside, config.out)
    return IngestResult(attrs, layout, time.perf_counter() - t0)


def _check_spacing_known(pairs: Sequence[SourcePair], infos: Sequence[VolumeInfo]) -> None:
    for p, info in zip(pairs, infos, strict=True):
        if not np.isfinite(info.spacing).all():
            raise InputDataError(
                f"Expected a pixel spacing in the header of {p.image} for --spacing. It gives none (PNG, TIFF and "
                ".npy never do): leave out --spacing, or convert the images to NIfTI with their spacing."
            )


def _resampling(config: IngestConfig, infos: Sequence[VolumeInfo], size: tuple[int, int]) -> str:
    steps = []
    if config.spacing is not None:
        steps.append(
            f"--spacing to {config.spacing[0]:g} x {config.spacing[1]:g} mm as MONAI Spacingd (images linear, "
            "labels nearest, border)"
        )
    if config.pad_or_crop is not None:
        steps.append("--pad-or-crop about the centre as MONAI ResizeWithPadOrCrop (padding 0)")
    elif any(i.shape[1:] != size for i in infos):
        steps.append("--size: labels nearest; images linear, antialiased")
    return ", then ".join(steps) or "none"


def _write_all(writer, samples: Iterator, progress: bool | None) -> list[float | None]:
    """Buffer one shard at a time, write it whole, record finished shards; return the image range."""
    from tqdm import tqdm

    layout = writer.attrs.layout
    lo, hi = np.inf, -np.inf
    pending: dict[int, str] = {}
    last_mark = time.monotonic()
    with tqdm(
        total=layout.n, unit="sample", desc="ingest", disable=None if progress is None else not progress
    ) as bar:
        for k in range(layout.num_shards):
            start, stop = layout.shard_bounds(k)
            images = np.empty((stop - start, *layout.image_shape), layout.image_dtype)
            labels = np.empty((stop - start, *layout.label_shape), np.uint8)
            meta = {m.name: np.empty((stop - start, *m.shape), m.dtype) for m in layout.meta}
            for j in range(stop - start):
                images[j], labels[j], values = next(samples)
                for m, v in zip(layout.meta, values, strict=True):
                    meta[m.name][j] = v
                bar.update(1)
            finite = images[np.isfinite(images)] if images.dtype.kind == "f" else images
            if finite.size:
                lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
            pending[k] = writer.write_shard(k, images, labels, meta)
            if time.monotonic() - last_mark >= _MARK_EVERY_S:
                writer.mark_complete(pending, digests=pending)
                pending, last_mark = {}, time.monotonic()
    if pending:
        writer.mark_complete(pending, digests=pending)
    return [lo, hi] if lo <= hi else [None, None]
