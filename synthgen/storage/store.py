"""Reading and writing synthgen Zarr stores (format 3, sharded), at any fsspec URL.

Writes go a whole shard at a time: one writer owns a shard, buffers it and writes it once, then the
coordinating process records it in the root attributes (:meth:`StoreWriter.mark_complete`). Readers
only serve samples of shards recorded as complete, so a crash never exposes half a shard as data.

The ``zarrs`` codec pipeline (Rust, a drop-in for zarr-python's) is much faster than zarr-python's own
(``bench/store.py``), but it is zarr's setting for the whole process, so importing this module leaves it
alone: :func:`use_fast_codecs` switches it on, and synthgen's own entry points (the CLI commands, the
build's coordinator and shard tasks, the loader's workers) call it. ``SYNTHGEN_CODEC_PIPELINE=python``
keeps zarr-python's. It is not fork-safe: open stores inside each worker process, and start workers
with ``spawn``.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import zarr
import zarr.storage
from zarr.codecs import ZstdCodec

from synthgen import __version__
from synthgen.errors import (
    IncompleteShardError,
    StoreError,
    StoreExistsError,
    StoreFormatError,
    StoreNotFoundError,
)
from synthgen.schemas import ATTR_KEY, StoreAttrs, StoreLayout

COMPRESSION_LEVEL = 1  # zstd level 1: labels shrink ~30x, images ~2x, at ~8,000 pairs/s


ZARRS_PIPELINE = "zarrs.ZarrsCodecPipeline"  # zarr's ``codec_pipeline.path`` for the zarrs pipeline


def use_fast_codecs() -> str:
    """Switch zarr, in this whole process, to the zarrs codec pipeline where it is installed.

    Returns the pipeline in use afterwards: ``"zarrs"``, or ``"python"`` where zarrs is not installed or
    ``SYNTHGEN_CODEC_PIPELINE=python`` is set (zarr's configuration is then left as it is). Calling it
    again changes nothing. Call it before opening stores, in each process that opens them.
    """
    if os.environ.get("SYNTHGEN_CODEC_PIPELINE", "zarrs") == "python":
        return "zarrs" if fast_codecs_in_use() else "python"
    try:
        import zarrs  # noqa: F401
    except ImportError:
        return "python"
    zarr.config.set({"codec_pipeline.path": ZARRS_PIPELINE})
    return "zarrs"


def fast_codecs_in_use() -> bool:
    """Whether zarr uses the zarrs codec pipeline in this process."""
    return zarr.config.get("codec_pipeline.path") == ZARRS_PIPELINE


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _local_path(url: str) -> str:
    return url.removeprefix("file://")


def _zarr_store(url: str, *, read_only: bool) -> zarr.abc.store.Store:
    if is_local(url):
        return zarr.storage.LocalStore(_local_path(url), read_only=read_only)
    try:
        return zarr.storage.FsspecStore.from_url(url, read_only=read_only)
    except (ImportError, ValueError) as e:
        raise StoreError(f"Cannot open store URL {url!r}: {e}. For s3:// install the 's3' extra.") from e


def store_exists(url: str) -> bool:
    """Whether anything Zarr-like (a root ``zarr.json``) is at ``url``."""
    if is_local(url):
        return os.path.exists(_local_path(url))
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    return fs.exists(f"{path.rstrip('/')}/zarr.json")


def delete_store(url: str) -> None:
    """Remove a store entirely (used to clean up a store this process created and failed to finish)."""
    if is_local(url):
        import shutil

        shutil.rmtree(_local_path(url), ignore_errors=True)
        return
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def _array_specs(layout: StoreLayout) -> dict[str, dict[str, Any]]:
    s, c = layout.shard_size, layout.chunk_size
    specs = {
        "images": {
            "shape": (layout.n, *layout.image_shape),
            "dtype": layout.image_dtype,
            "chunks": (c, *layout.image_shape),
            "shards": (s, *layout.image_shape),
            "compressors": ZstdCodec(level=COMPRESSION_LEVEL),
        },
        "labels": {
            "shape": (layout.n, *layout.label_shape),
            "dtype": "uint8",
            "chunks": (c, *layout.label_shape),
            "shards": (s, *layout.label_shape),
            "compressors": ZstdCodec(level=COMPRESSION_LEVEL),
        },
    }
    for m in layout.meta:
        # metadata is tiny: one plain chunk per shard, aligned with the image shards
        specs[f"meta/{m.name}"] = {
            "shape": (layout.n, *m.shape),
            "dtype": m.dtype,
            "chunks": (s, *m.shape),
            "shards": None,
            "compressors": ZstdCodec(level=COMPRESSION_LEVEL),
        }
    return specs


class StoreWriter:
    """Creates a store, writes whole shards and records them as complete.

    ``write_shard`` may run in any process (each opens its own arrays); ``mark_complete`` is for the
    one coordinating process, which alone updates the root attributes.
    """

    def __init__(self, url: str, attrs: StoreAttrs) -> None:
        self.url = url
        self.attrs = attrs
        self._arrays: dict[str, zarr.Array] | None = None

    @classmethod
    def create(cls, url: str, attrs: StoreAttrs, *, overwrite: bool = False) -> StoreWriter:
        if store_exists(url):
            if not overwrite:
                raise StoreExistsError(
                    f"Output {url} already exists. Choose another path or pass --overwrite to replace it."
                )
            delete_store(url)
        provenance = {"synthgen_version": __version__, "created": _now(), **attrs.provenance}
        attrs = StoreAttrs(
            layout=attrs.layout,
            schema=attrs.schema,
            intensity=attrs.intensity,
            spacing=attrs.spacing,
            provenance=provenance,
            complete_shards=(),
        )
        try:
            root = zarr.open_group(_zarr_store(url, read_only=False), mode="w", zarr_format=3)
            root.attrs[ATTR_KEY] = attrs.to_dict()
            root.create_group("meta")
            for name, spec in _array_specs(attrs.layout).items():
                root.create_array(name=name, fill_value=0, **spec)
        except OSError as e:
            raise StoreError(f"Cannot create store {url}: {e}") from e
        return cls(url, attrs)

    @classmethod
    def open(cls, url: str) -> StoreWriter:
        """Open an existing store to add shards (resuming a build)."""
        return cls(url, StoreReader(url).attrs)

    def _open_arrays(self) -> dict[str, zarr.Array]:
        if self._arrays is None:
            root = zarr.open_group(_zarr_store(self.url, read_only=False), mode="r+")
            self._arrays = {name: root[name] for name in _array_specs(self.attrs.layout)}
        return self._arrays

    def write_shard(
        self,
        k: int,
        images: np.ndarray,
        labels: np.ndarray,
        meta: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Write shard ``k`` in one go. Does not mark it complete."""
        layout = self.attrs.layout
        start, stop = layout.shard_bounds(k)
        n = stop - start
        expected = {
            "images": ((n, *layout.image_shape), np.dtype(layout.image_dtype)),
            "labels": ((n, *layout.label_shape), np.dtype(np.uint8)),
        }
        meta = dict(meta or {})
        missing = sorted({m.name for m in layout.meta} - set(meta))
        extra = sorted(set(meta) - {m.name for m in layout.meta})
        if missing or extra:
            raise StoreError(
                f"Expected metadata fields {[m.name for m in layout.meta]}. Missing {missing}, extra {extra}."
            )
        for m in layout.meta:
            expected[f"meta/{m.name}"] = ((n, *m.shape), np.dtype(m.dtype))
        data = {"images": images, "labels": labels} | {f"meta/{k_}": v for k_, v in meta.items()}
        for name, (shape, dtype) in expected.items():
            arr = np.asarray(data[name])
            if arr.shape != shape or arr.dtype != dtype:
                raise StoreError(
                    f"Expected {name} of shard {k} as {shape} {dtype}. Got {arr.shape} {arr.dtype} instead."
                )
            data[name] = arr
        arrays = self._open_arrays()
        try:
            for name, arr in data.items():
                arrays[name][start:stop] = arr
        except OSError as e:
            raise StoreError(f"Writing shard {k} of {self.url} failed: {e}") from e

    def mark_complete(self, shards: Iterable[int], provenance: Mapping[str, Any] | None = None) -> StoreAttrs:
        """Record shards as complete (and optionally merge provenance) in the root attributes."""
        root = zarr.open_group(_zarr_store(self.url, read_only=False), mode="r+")
        current = StoreAttrs.from_dict(root.attrs.get(ATTR_KEY), self.url)
        done = set(current.complete_shards) | {int(k) for k in shards}
        for k in done:
            self.attrs.layout.shard_bounds(k)  # range check
        prov = dict(current.provenance) | dict(provenance or {})
        if len(done) == current.layout.num_shards and "completed" not in prov:
            prov["completed"] = _now()
        self.attrs = StoreAttrs(
            layout=current.layout,
            schema=current.schema,
            intensity=current.intensity,
            spacing=current.spacing,
            provenance=prov,
            complete_shards=tuple(sorted(done)),
        )
        root.attrs[ATTR_KEY] = self.attrs.to_dict()
        return self.attrs


class StoreReader:
    """Reads a synthgen store: single samples, blocks, whole shards, metadata. Complete shards only."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            root = zarr.open_group(_zarr_store(url, read_only=True), mode="r")
        except FileNotFoundError as e:
            raise StoreNotFoundError(f"No Zarr store at {url}.") from e
        except (ValueError, KeyError, TypeError) as e:
            raise StoreFormatError(f"Expected a Zarr format 3 store at {url}. Cannot read it: {e}") from e
        self.attrs = StoreAttrs.from_dict(root.attrs.get(ATTR_KEY), url)
        try:
            self._arrays = {name: root[name] for name in _array_specs(self.attrs.layout)}
        except KeyError as e:
            raise StoreFormatError(f"Expected array {e.args[0]!r} in store {url}. It is missing.") from e
        self._complete = np.zeros(self.layout.num_shards, bool)
        self._complete[list(self.attrs.complete_shards)] = True

    @property
    def layout(self) -> StoreLayout:
        return self.attrs.layout

    @property
    def schema(self):  # -> LabelSchema
        return self.attrs.schema

    @property
    def complete_shards(self) -> tuple[int, ...]:
        return self.attrs.complete_shards

    @property
    def num_available(self) -> int:
        """Number of samples in complete shards."""
        return int(sum(b - a for a, b in map(self.layout.shard_bounds, self.complete_shards)))

    def available_indices(self) -> np.ndarray:
        """Sample indices that lie in complete shards, ascending."""
        parts = [np.arange(*self.layout.shard_bounds(k)) for k in self.complete_shards]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def _check(self, start: int, stop: int) -> None:
        if not 0 <= start < stop <= self.layout.n:
            raise IndexError(f"Expected 0 <= start < stop <= {self.layout.n}. Got [{start}, {stop}) instead.")
        first, last = start // self.layout.shard_size, (stop - 1) // self.layout.shard_size
        missing = [k for k in range(first, last + 1) if not self._complete[k]]
        if missing:
            raise IncompleteShardError(
                f"Samples [{start}, {stop}) of {self.url} lie in shard(s) {missing[:5]} that are not complete."
            )

    def read_block(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of samples ``start`` to ``stop`` (all in complete shards)."""
        self._check(start, stop)
        return self._arrays["images"][start:stop], self._arrays["labels"][start:stop]

    def read_labels(self, start: int, stop: int) -> np.ndarray:
        """Labels only of samples ``start`` to ``stop`` (all in complete shards)."""
        self._check(start, stop)
        return self._arrays["labels"][start:stop]

    def read_sample(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        images, labels = self.read_block(i, i + 1)
        return images[0], labels[0]

    def read_shard(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.read_block(*self.layout.shard_bounds(k))

    def read_meta(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        self.layout.meta_field(name)
        stop = self.layout.n if stop is None else stop
        self._check(start, stop)
        return self._arrays[f"meta/{name}"][start:stop]

    def iter_shards(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        for k in self.complete_shards:
            images, labels = self.read_shard(k)
            yield k, images, labels


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
