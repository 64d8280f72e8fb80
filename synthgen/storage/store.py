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

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import zarr
import zarr.storage
from zarr.codecs import ZstdCodec

from synthgen import __version__
from synthgen.errors import (
    CorruptShardError,
    IncompleteShardError,
    StoreError,
    StoreExistsError,
    StoreFormatError,
    StoreNotFoundError,
)
from synthgen.schemas import ATTR_KEY, Intensity, StoreAttrs, StoreLayout
from synthgen.storage.integrity import (
    SCRATCH_SUFFIX,
    StoreFiles,
    digest_files,
    file_fingerprint,
    fingerprint_chunks,
    is_local,
    local_path,
    object_store_errors,
    shard_digest,
    shard_keys,
    storage_options,
)

COMPRESSION_LEVEL = 1  # zstd level 1: labels shrink ~30x, images ~2x, at ~8,000 pairs/s
CREATING_KEY = "synthgen_creating"  # the root attribute of a store being created (replaced when done)


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


def _zarr_store(url: str, *, read_only: bool) -> zarr.abc.store.Store:
    if is_local(url):
        return zarr.storage.LocalStore(local_path(url), read_only=read_only)
    try:
        return zarr.storage.FsspecStore.from_url(
            url, storage_options=storage_options(url), read_only=read_only
        )
    except (ImportError, ValueError) as e:
        raise StoreError(f"Cannot open store URL {url!r}: {e}. For s3:// install the 's3' extra.") from e


def store_exists(url: str) -> bool:
    """Whether anything Zarr-like (a root ``zarr.json``) is at ``url``."""
    if is_local(url):
        return os.path.exists(local_path(url))
    return StoreFiles(url).exists("zarr.json")


def store_state(url: str) -> str:
    """What is at ``url``: ``absent``, ``synthgen`` (a synthgen store), ``creating`` (a store whose
    creation was interrupted: it holds nothing) or ``other`` (anything else: never replaced)."""
    files = StoreFiles(url)
    if not files.exists():
        return "absent"
    try:
        attrs = json.loads(files.read("zarr.json")).get("attributes") or {}
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, ValueError, AttributeError):
        return "other"
    if ATTR_KEY in attrs:
        return "synthgen"
    return "creating" if CREATING_KEY in attrs else "other"


def delete_store(url: str) -> None:
    """Remove a synthgen store entirely (one this process created and failed to finish, or one being
    replaced). Refuses anything that is not a synthgen store."""
    if store_state(url) == "other":
        raise StoreExistsError(f"{url} is not a synthgen store: refusing to delete it.")
    StoreFiles(url).remove("", recursive=True)


SAMPLE_DIM = "sample"  # the first dimension of every array


def dimension_names(layout: StoreLayout) -> dict[str, tuple[str, ...]]:
    """The named dimensions of each array of a store, as its ``dimension_names`` record them (xarray
    reads them): ``images`` ``(sample, y, x)`` or ``(sample, channel, y, x)``, ``labels``
    ``(sample, y, x)``, and ``meta/<name>`` ``(sample, <name>_param)`` (``<name>_param<i>`` for each
    axis where a field has several). Stores written before synthgen recorded them read the same."""
    names = {
        "images": (SAMPLE_DIM, *(("channel",) if len(layout.image_shape) == 3 else ()), "y", "x"),
        "labels": (SAMPLE_DIM, "y", "x"),
    }
    for m in layout.meta:
        extra = (
            [f"{m.name}_param"] if len(m.shape) == 1 else [f"{m.name}_param{i}" for i in range(len(m.shape))]
        )
        names[f"meta/{m.name}"] = (SAMPLE_DIM, *extra)
    return names


def _array_specs(layout: StoreLayout) -> dict[str, dict[str, Any]]:
    s, c = layout.shard_size, layout.chunk_size
    specs: dict[str, dict[str, Any]] = {
        "images": {
            "shape": (layout.n, *layout.image_shape),
            "dtype": layout.image_dtype,
            "chunks": (c, *layout.image_shape),
            "shards": (s, *layout.image_shape),
            "compressors": ZstdCodec(level=COMPRESSION_LEVEL, checksum=True),
        },
        "labels": {
            "shape": (layout.n, *layout.label_shape),
            "dtype": "uint8",
            "chunks": (c, *layout.label_shape),
            "shards": (s, *layout.label_shape),
            "compressors": ZstdCodec(level=COMPRESSION_LEVEL, checksum=True),
        },
    }
    for m in layout.meta:
        # metadata is tiny: one plain chunk per shard, aligned with the image shards
        specs[f"meta/{m.name}"] = {
            "shape": (layout.n, *m.shape),
            "dtype": m.dtype,
            "chunks": (s, *m.shape),
            "shards": None,
            "compressors": ZstdCodec(level=COMPRESSION_LEVEL, checksum=True),
        }
    for name, dims in dimension_names(layout).items():
        specs[name]["dimension_names"] = dims
    return specs


class StoreWriter:
    """Creates a store, writes whole shards and records them as complete.

    ``write_shard`` may run in any process (each opens its own arrays); ``mark_complete`` is for the
    one coordinating process, which alone updates the root attributes.
    """

    def __init__(self, url: str, attrs: StoreAttrs) -> None:
        self.url = url
        self.attrs = attrs
        self._scratch_folder: tuple[str, dict[str, zarr.Array]] | None = None

    @classmethod
    def create(cls, url: str, attrs: StoreAttrs, *, overwrite: bool = False) -> StoreWriter:
        """Create an empty store. ``overwrite`` replaces a synthgen store (never anything else); a store
        whose creation was interrupted is replaced in any case. The root attributes are written last,
        so a store is a synthgen store only once it is whole."""
        state = store_state(url)
        if state == "other":
            raise StoreExistsError(
                f"Output {url} exists and is not a synthgen store: refusing to replace it. Choose another path."
            )
        if state == "synthgen" and not overwrite:
            raise StoreExistsError(
                f"Output {url} already exists. Choose another path or pass --overwrite to replace it."
            )
        if state != "absent":
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
            root = zarr.open_group(
                _zarr_store(url, read_only=False),
                mode="w",
                zarr_format=3,
                attributes={CREATING_KEY: {"started": _now()}},
            )
            root.create_group("meta")
            for name, spec in _array_specs(attrs.layout).items():
                root.create_array(name=name, fill_value=0, **spec)
            root.attrs.put({ATTR_KEY: attrs.to_dict()})
        except OSError as e:
            raise StoreError(f"Cannot create store {url}: {e}") from e
        return cls(url, attrs)

    @classmethod
    def open(cls, url: str) -> StoreWriter:
        """Open an existing store to add shards (resuming a build)."""
        return cls(url, StoreReader(url).attrs)

    def shard_attrs(self) -> dict[str, Any]:
        """What a shard writer of another process needs of the attributes (layout, schema, intensity,
        spacing), without the completion records, which grow with the store: pass it to
        :meth:`for_shards` instead of reading them there."""
        bare = dataclasses.replace(self.attrs, provenance={}, complete_shards=(), shard_digests={})
        return bare.to_dict()

    @classmethod
    def for_shards(cls, url: str, shard_attrs: Mapping[str, Any]) -> StoreWriter:
        """A writer of shards into the existing store ``url`` from :meth:`shard_attrs` of its
        coordinator (no read of the root attributes); it does not record completion."""
        return cls(url, StoreAttrs.from_dict(shard_attrs, url))

    def close(self) -> None:
        """Remove this writer's scratch folder now (it goes in any case when the writer does)."""
        if self._scratch_folder is not None:
            self._drop()
            self._scratch_folder = None

    def _scratch(self) -> tuple[str, dict[str, zarr.Array]]:
        """This writer's private folder holding a copy of the store's array metadata, where shards are
        encoded before their files move in. Removed when the writer is (a killed writer's is removed by
        the next build, which holds the lease: :func:`~synthgen.storage.integrity.clear_scratch`)."""
        if self._scratch_folder is not None:
            return self._scratch_folder
        if is_local(self.url):  # beside the store: the same file system, so files move by rename
            base = os.path.join(local_path(self.url).rstrip("/") + SCRATCH_SUFFIX, uuid.uuid4().hex)
        else:
            base = tempfile.mkdtemp(prefix="synthgen-shard-")
        files = StoreFiles(self.url)
        keys = [f"{name}/zarr.json" for name in ("meta", *_array_specs(self.attrs.layout))]
        try:
            os.makedirs(base, exist_ok=True)
            with open(os.path.join(base, "zarr.json"), "w") as f:  # the root's attributes are not needed
                json.dump({"zarr_format": 3, "node_type": "group", "attributes": {}}, f)
            for key in keys:
                os.makedirs(os.path.dirname(os.path.join(base, key)), exist_ok=True)
                with open(os.path.join(base, key), "wb") as f:
                    f.write(files.read(key))
            root = zarr.open_group(zarr.storage.LocalStore(base), mode="r+")
            arrays = {name: root[name] for name in _array_specs(self.attrs.layout)}
        except (OSError, KeyError) as e:
            _drop_scratch(base)
            raise StoreError(f"Cannot prepare writing to {self.url}: {e}") from e
        self._drop = weakref.finalize(self, _drop_scratch, base)
        self._scratch_folder = (base, arrays)
        return self._scratch_folder

    def write_shard(
        self,
        k: int,
        images: np.ndarray,
        labels: np.ndarray,
        meta: Mapping[str, np.ndarray] | None = None,
    ) -> str:
        """Write shard ``k`` whole: each of its files appears at once, never torn. Returns the shard's
        digest, for :meth:`mark_complete`. Does not mark it complete."""
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
        base, arrays = self._scratch()
        keys = shard_keys(layout, k)
        files = StoreFiles(self.url)
        try:
            for name, arr in data.items():
                arrays[name][start:stop] = arr
            fingerprints = {  # a file whose chunks are all fill value is not written
                key: file_fingerprint(os.path.join(base, key), chunks)
                for key, chunks in zip(keys, fingerprint_chunks(layout), strict=True)
                if os.path.exists(os.path.join(base, key))
            }
            for key in fingerprints:
                files.move_in(os.path.join(base, key), key)
            for key in set(keys) - set(fingerprints):
                if files.exists(key):  # left by an earlier write of this shard
                    files.remove(key)
        except OSError as e:
            raise StoreError(f"Writing shard {k} of {self.url} failed: {e}") from e
        return shard_digest(keys, fingerprints)

    def mark_complete(
        self,
        shards: Iterable[int],
        provenance: Mapping[str, Any] | None = None,
        digests: Mapping[int, str] | None = None,
        intensity: Intensity | None = None,
    ) -> StoreAttrs:
        """Record shards as complete, with their digests (from :meth:`write_shard`), and optionally
        merge provenance into the root attributes and record the images' ``intensity`` convention
        (where it is known only once every image is written), in the same write."""
        return self._update(set(shards), set(), provenance, digests or {}, intensity)

    def unmark(self, shards: Iterable[int]) -> StoreAttrs:
        """Unlist shards (``synthgen verify --repair``), so that resuming the build writes them again."""
        return self._update(set(), set(shards), None, {})

    def grow(self, n: int, provenance: Mapping[str, Any] | None = None) -> StoreAttrs:
        """Extend the store to ``n`` samples (more than it holds) and merge ``provenance`` into its
        attributes; the new samples are then written shard by shard like any others.

        The arrays grow first (their metadata only: readers go by the root attributes, which still
        hold the old size, so they see the old store). Then one write of the root attributes records
        ``n`` and unlists the old last shard where it was partial: it is to be written again whole,
        with the samples it lacked, and a reader must not count it until it is. A crash between the
        two leaves the old store as it was (with larger arrays: :meth:`fit_arrays`); growing again
        finishes the job. For the one coordinating process, under the store's lease."""
        root = zarr.open_group(_zarr_store(self.url, read_only=False), mode="r+")
        current = StoreAttrs.from_dict(root.attrs.get(ATTR_KEY), self.url)
        old = current.layout
        if n <= old.n:
            raise StoreError(f"Expected to grow {self.url} beyond its {old.n} samples. Got n = {n} instead.")
        grown = dataclasses.replace(old, n=n)
        self._resize(root, grown)
        partial = {old.num_shards - 1} if old.n % old.shard_size else set()
        done = tuple(k for k in current.complete_shards if k not in partial)
        prov = dict(current.provenance) | dict(provenance or {})
        prov.pop("completed", None)  # set again when the last shard of the grown store is recorded
        self.attrs = StoreAttrs(
            layout=grown,
            schema=current.schema,
            intensity=current.intensity,
            spacing=current.spacing,
            provenance=prov,
            complete_shards=done,
            shard_digests={k: v for k, v in current.shard_digests.items() if k in done},
        )
        root.attrs[ATTR_KEY] = self.attrs.to_dict()
        return self.attrs

    def fit_arrays(self) -> None:
        """Bring every array to the number of samples the root attributes record, where a growth
        killed before it recorded its new size (:meth:`grow`) left them larger; nothing is written
        where they match. Shrinking an array drops only files beyond the recorded samples, which no
        shard write reaches before the growth is recorded. Under the store's lease."""
        root = zarr.open_group(_zarr_store(self.url, read_only=False), mode="r+")
        self._resize(root, StoreAttrs.from_dict(root.attrs.get(ATTR_KEY), self.url).layout)

    @staticmethod
    def _resize(root: zarr.Group, layout: StoreLayout) -> None:
        for name, spec in _array_specs(layout).items():
            array = root[name]
            if array.shape != spec["shape"]:
                array.resize(spec["shape"])

    def _update(
        self,
        add: set[int],
        remove: set[int],
        provenance,
        digests: Mapping[int, str],
        intensity: Intensity | None = None,
    ) -> StoreAttrs:
        root = zarr.open_group(_zarr_store(self.url, read_only=False), mode="r+", zarr_format=3)
        current = StoreAttrs.from_dict(root.attrs.get(ATTR_KEY), self.url)
        done = (set(current.complete_shards) | {int(k) for k in add}) - {int(k) for k in remove}
        for k in done:
            self.attrs.layout.shard_bounds(k)  # range check
        prov = dict(current.provenance) | dict(provenance or {})
        if len(done) == current.layout.num_shards and "completed" not in prov:
            prov["completed"] = _now()
        if remove:
            prov.pop("completed", None)
        kept = dict(current.shard_digests) | {int(k): v for k, v in digests.items()}
        self.attrs = StoreAttrs(
            layout=current.layout,
            schema=current.schema,
            intensity=intensity or current.intensity,
            spacing=current.spacing,
            provenance=prov,
            complete_shards=tuple(sorted(done)),
            shard_digests={k: v for k, v in kept.items() if k in done},
        )
        root.attrs[ATTR_KEY] = self.attrs.to_dict()
        return self.attrs


class StoreReader:
    """Reads a synthgen store: single samples, blocks, whole shards, metadata. Complete shards only."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._files = StoreFiles(url)  # pickled with the reader: a remote one keeps its options
        try:
            with object_store_errors(url):  # format 3 only: no probing for format 2 keys (requests)
                root = zarr.open_group(_zarr_store(url, read_only=True), mode="r", zarr_format=3)
        except FileNotFoundError as e:
            raise StoreNotFoundError(f"No Zarr store at {url} (Zarr format 3).") from e
        except (ValueError, KeyError, TypeError, OSError) as e:
            raise StoreFormatError(f"Expected a Zarr format 3 store at {url}. Cannot read it: {e}") from e
        self.attrs = StoreAttrs.from_dict(root.attrs.get(ATTR_KEY), url)
        try:
            self._arrays = {name: root[name] for name in _array_specs(self.attrs.layout)}
        except KeyError as e:
            raise StoreFormatError(f"Expected array {e.args[0]!r} in store {url}. It is missing.") from e
        self._complete = np.zeros(self.layout.num_shards, bool)
        self._complete[list(self.attrs.complete_shards)] = True
        self._files_checked: set[int] = set()

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

    def array(self, name: str) -> zarr.Array:
        """The Zarr array ``name`` (``images``, ``labels`` or ``meta/<field>``) as it is, read-only: it
        spans every sample, also those of shards that are not complete (fill value or torn data), and
        its reads skip the checks this reader makes. Index it with :meth:`available_indices`."""
        try:
            return self._arrays[name]
        except KeyError:
            raise KeyError(f"Expected an array in {sorted(self._arrays)}. Got {name!r} instead.") from None

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
        for k in range(first, last + 1):
            if k not in self._files_checked:
                self.check_files(k)
                self._files_checked.add(k)

    def check_files(self, k: int) -> None:
        """Raise :class:`CorruptShardError` where a file of complete shard ``k`` that its digest lists is
        missing (a missing file would read as fill value: zeros)."""
        digest = self.attrs.shard_digests.get(k)
        if digest is None:  # written before synthgen recorded digests
            return
        files = self._files
        gone = [key for key in digest_files(shard_keys(self.layout, k), digest) if not files.exists(key)]
        if gone:
            raise CorruptShardError(
                f"Shard {k} of {self.url} is listed complete but its file(s) {gone} are missing. "
                f"Run 'synthgen verify {self.url} --repair', then rerun the command that built it."
            )

    def _read(self, name: str, start: int, stop: int) -> np.ndarray:
        self._check(start, stop)
        try:
            return self._arrays[name][start:stop]
        except (OSError, RuntimeError, ValueError) as e:
            shards = sorted({start // self.layout.shard_size, (stop - 1) // self.layout.shard_size})
            raise CorruptShardError(
                f"Cannot decode {name} of shard(s) {shards} of {self.url}: {e}. "
                f"Run 'synthgen verify {self.url}' to find every damaged shard."
            ) from e

    def read_block(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of samples ``start`` to ``stop`` (all in complete shards)."""
        return self._read("images", start, stop), self._read("labels", start, stop)

    def read_images(self, start: int, stop: int) -> np.ndarray:
        """Images only of samples ``start`` to ``stop`` (all in complete shards)."""
        return self._read("images", start, stop)

    def read_labels(self, start: int, stop: int) -> np.ndarray:
        """Labels only of samples ``start`` to ``stop`` (all in complete shards)."""
        return self._read("labels", start, stop)

    def read_sample(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        images, labels = self.read_block(i, i + 1)
        return images[0], labels[0]

    def read_shard(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.read_block(*self.layout.shard_bounds(k))

    def read_meta(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        self.layout.meta_field(name)
        stop = self.layout.n if stop is None else stop
        return self._read(f"meta/{name}", start, stop)

    def iter_shards(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        for k in self.complete_shards:
            images, labels = self.read_shard(k)
            yield k, images, labels


def _drop_scratch(base: str) -> None:
    shutil.rmtree(base, ignore_errors=True)
    with contextlib.suppress(OSError):  # the shared parent, once no writer uses it
        os.rmdir(os.path.dirname(base))


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
