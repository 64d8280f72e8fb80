"""Ingestion: a labelled dataset on disk -> a synthgen store of 2D image/label samples.

Three passes, each bounded in memory: :func:`discover` lists and pairs the files, :func:`scan` reads
their headers (slice counts, shapes, dtypes) so the store can be created with its final size, then
the files are read one pair at a time and written one whole shard at a time. A failure after the
store was created deletes it, so no half-written store remains.

Resampling (``size``): label maps by nearest neighbour (never a new value), images linearly, with a
Gaussian pre-filter along an axis that is shrunk (sigma = (factor - 1) / 2) against aliasing. Both
use the same pixel-centre grid, so image and label stay aligned.
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
from synthgen.kernels import resize_images, resize_labels
from synthgen.schemas import (
    Intensity,
    LabelSchema,
    MetaField,
    StoreAttrs,
    StoreLayout,
    get_schema,
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
from synthgen.storage.readers import VolumeInfo, probe, probe_channels, read_channels, read_volume

_STORE_DTYPE = {"uint8": "uint8", "bool": "uint8", "uint16": "uint16", "float16": "float16"}
_MARK_EVERY_S = 2.0  # record finished shards in the root attributes at most this often


@dataclass(frozen=True)
class IngestConfig:
    """Everything ``synthgen ingest`` needs. ``size`` is (H, W) or None for the native size."""

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
        parse_int(self.shard_size, "--shard-size", lo=1)
        parse_patterns(self.patterns)
        if self.limit is not None:
            parse_int(self.limit, "--limit", lo=1)

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
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IngestConfig:
        data = parse_mapping(data, "an ingest config")
        reject_unknown_keys(data, set(cls.__dataclass_fields__), "an ingest config")
        size = data.get("size")
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
    """Header of every image, checked against its label's header (same slices, rows and cols)."""
    infos = []
    for p in pairs:
        image = probe_channels([source / f for f in p.images], p.images)
        label = probe(source / p.label, p.label, "label")
        if image.shape != label.shape:
            raise InputDataError(
                f"Expected image and label of the same shape (slices, rows, cols). Got {image.shape} in "
                f"{p.image} and {label.shape} in {p.label}."
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
            h.update(f"{rel}\t{(source / rel).stat().st_size}\n".encode())
    return "sha256:" + h.hexdigest()


def meta_fields() -> tuple[MetaField, ...]:
    return (
        MetaField("source_index", "int32", (), "index into provenance 'sources' and 'label_sources'"),
        MetaField("slice_index", "int32", (), "slice of the source volume (0 for 2D files)"),
        MetaField("patient", "int32", (), "patient number from the file name; -1 where unknown"),
        MetaField("view", "uint8", (), "view code: " + ", ".join(f"{k} {v}" for k, v in VIEWS.items())),
        MetaField(
            "phase", "uint8", (), "cardiac phase code: " + ", ".join(f"{k} {v}" for k, v in PHASES.items())
        ),
        MetaField(
            "spacing",
            "float32",
            (2,),
            "(row, col) pixel spacing after resampling, from the source header (mm for NIfTI/MetaImage; "
            "1.0 may mean the header did not know); NaN for PNG/TIFF/.npy",
        ),
    )


def _samples(
    source: Path,
    pairs: Sequence[SourcePair],
    infos: Sequence[VolumeInfo],
    schema: LabelSchema,
    size: tuple[int, int],
    dtype: str,
) -> Iterator[tuple[np.ndarray, np.ndarray, tuple]]:
    """One (image, labels, meta) per 2D sample, reading one pair of files at a time."""
    for index, (p, info) in enumerate(zip(pairs, infos, strict=True)):
        image = read_channels([source / f for f in p.images], p.images)
        raw = read_volume(source / p.label, p.label, "label")
        expected = (info.shape[0], *((info.channels,) if info.channels > 1 else ()), *info.shape[1:])
        if image.shape != expected or raw.shape != info.shape:
            raise InputDataError(
                f"Expected data of shape {expected} as the header says. Got image {image.shape} in {p.image} "
                f"and label {raw.shape} in {p.label}."
            )
        if image.dtype.kind in "fc" and not np.isfinite(image).all():
            bad = int(np.size(image) - np.count_nonzero(np.isfinite(image)))
            raise InputDataError(
                f"Expected finite image values. Got {bad} NaN or infinite value(s) in {p.image}: fix or leave "
                "out that file."
            )
        labels = schema.encode_source(raw, p.label)
        native = info.shape[1:]
        spacing = (
            np.array(info.spacing, np.float32) * np.array(native, np.float32) / np.array(size, np.float32)
        )
        for z in range(info.shape[0]):
            img, lab = image[z], labels[z]
            if native != size:
                img, lab = resize_images(img, size), resize_labels(lab, size)
            yield img.astype(dtype, copy=False), lab, (index, z, p.patient, p.view, p.phase, spacing)


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
    hint = "Pass --size H W to resample (labels nearest, images linear)."
    native = [i.shape[1:] for i in infos]
    if config.size is None:
        _common([f"{h} x {w}" for h, w in native], pairs, "size", hint)
    size = tuple(config.size or native[0])
    channels = _common([i.channels for i in infos], pairs, "number of channels", "Convert them alike first.")
    dtype = _common(
        [store_image_dtype(i.dtype) for i in infos], pairs, "stored dtype", "Convert them alike first."
    )
    n = sum(i.shape[0] for i in infos)
    slices_per_size = Counter()
    for i in infos:
        slices_per_size[i.shape[1:]] += i.shape[0]
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
        "source_hash_of": "sha256 of 'path<TAB>bytes' lines of every image and label file, in order",
        "native_sizes": {f"{h}x{w}": c for (h, w), c in sorted(slices_per_size.items())},
        "resampling": (
            "none" if all(s == size for s in native) else "labels nearest; images linear, antialiased"
        ),
    }
    attrs = StoreAttrs(layout=store_layout, schema=schema, intensity=_intensity(dtype), provenance=provenance)
    aside = aside_url(config.out)
    try:
        clear_scratch(aside)  # what a killed ingest left
        writer = StoreWriter.create(aside, attrs, overwrite=True)  # a leftover aside store is ours
        try:
            image_range = _write_all(writer, _samples(source, pairs, infos, schema, size, dtype), progress)
        finally:
            writer.close()
        attrs = writer.mark_complete(
            [], {"image_range": image_range, "seconds": round(time.perf_counter() - t0, 2)}
        )
    except StoreExistsError:  # someone else's files are where the aside store would go: leave them
        raise
    except BaseException:  # remove what this run created; the output stays as it was
        delete_store(aside)
        raise
    swap_in(aside, config.out)
    return IngestResult(attrs, layout, time.perf_counter() - t0)


def _intensity(dtype: str) -> Intensity:
    if dtype in ("uint8", "uint16"):
        return Intensity.for_dtype(dtype)
    return Intensity(0.0, 1.0, "source values as stored, not rescaled: see provenance 'image_range'")


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
