"""A store for the field's tools: its arrays and what they mean (:func:`open_store`), dask arrays with one
chunk per shard (:meth:`StoreContents.to_dask`), and a map-style dataset of dictionaries in the MONAI and
TorchIO convention (:class:`StoreDataset`).

Everything reads through :class:`~synthgen.storage.store.StoreReader`, so only samples of complete
shards are served and a shard listed complete whose files are gone raises rather than reading as zeros.
Importing this module imports neither torch nor dask: :class:`StoreDataset` imports torch when made.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from synthgen.schemas import Intensity, LabelSchema, StoreLayout
from synthgen.storage.store import StoreReader, fast_codecs_in_use, use_fast_codecs

if TYPE_CHECKING:
    import dask.array


@dataclass(frozen=True, eq=False)
class StoreContents:
    """A synthgen store opened for reading: its arrays, label schema, intensity convention and the
    samples that hold data.

    ``images`` ((N, H, W) or (N, C, H, W)), ``labels`` ((N, H, W) uint8) and ``meta`` (``name`` ->
    (N, ...)) are the store's Zarr arrays, read-only and over every sample: only the samples listed in
    ``indices`` (those of complete shards, ascending) hold data, so index the arrays with ``indices``,
    or use :meth:`to_dask`, which covers exactly those samples. ``reader`` reads checked blocks.
    """

    url: str
    reader: StoreReader
    layout: StoreLayout
    images: zarr.Array
    labels: zarr.Array
    meta: Mapping[str, zarr.Array]
    schema: LabelSchema
    intensity: Intensity  # stored values from intensity.low (black) to intensity.high (white)
    spacing: tuple[float, ...] | None  # pixel spacing where known
    complete_shards: tuple[int, ...]
    indices: np.ndarray  # sample indices in complete shards, ascending

    def to_dask(self, name: str = "images") -> dask.array.Array:
        """Array ``name`` (``images``, ``labels`` or ``meta/<field>``) of the samples in complete shards
        as a dask array with one chunk per shard: row ``r`` is sample ``indices[r]`` (every sample, in
        order, when the store is complete). Each chunk is one checked read of a whole shard; task names
        depend only on the store's URL, the array and the shards' digests."""
        import dask.array as da
        from dask.base import tokenize

        array = self.reader.array(name)
        if name == "images":
            read = self.reader.read_images
        elif name == "labels":
            read = self.reader.read_labels
        else:
            read = functools.partial(self.reader.read_meta, name.removeprefix("meta/"))
        bounds = [self.layout.shard_bounds(k) for k in self.complete_shards]
        if not bounds:
            return da.zeros((0, *array.shape[1:]), dtype=array.dtype)
        digests = {k: self.reader.attrs.shard_digests.get(k) for k in self.complete_shards}
        key = f"synthgen-{name.replace('/', '-')}-{tokenize(self.url, name, bounds, digests)}"
        rest = (0,) * (array.ndim - 1)
        graph = {(key, j, *rest): (read, a, b) for j, (a, b) in enumerate(bounds)}
        chunks = (tuple(b - a for a, b in bounds), *((s,) for s in array.shape[1:]))
        return da.Array(graph, key, chunks, dtype=array.dtype)


def open_store(url: str) -> StoreContents:
    """Open the synthgen store at ``url`` (a path or any fsspec URL) for reading."""
    reader = StoreReader(url)
    return StoreContents(
        url=url,
        reader=reader,
        layout=reader.layout,
        images=reader.array("images"),
        labels=reader.array("labels"),
        meta={m.name: reader.array(f"meta/{m.name}") for m in reader.layout.meta},
        schema=reader.schema,
        intensity=reader.attrs.intensity,
        spacing=reader.attrs.spacing,
        complete_shards=reader.complete_shards,
        indices=reader.available_indices(),
    )


class StoreDataset:
    """A map-style dataset over a store, for torch's or MONAI's ``DataLoader`` and MONAI or TorchIO
    dictionary transforms. Item ``i`` is sample ``indices[i]`` of the store, as a dictionary:

    - ``image``: float32 tensor (C, H, W), C = 1 for grey images: the stored values mapped linearly
      from the store's intensity convention (``low`` to ``high``) to [0, 1], as :class:`StoreStream`
      maps them (values outside the convention stay outside [0, 1]: nothing is clipped);
    - ``label``: int64 tensor (1, H, W) of the store's label schema (``schema``);
    - ``index``: the sample's index in the store (int);
    - ``patient``: its patient number (int, -1 where unknown), where the store has ``meta/patient``.

    ``transform`` (a MONAI ``Compose`` of dictionary transforms, say) is applied to each item.
    ``indices`` keeps those store samples (all in complete shards); by default every sample of the
    complete shards, less those the plausibility gate gave up on unless ``include_flagged``: the
    samples :class:`StoreStream` would serve. ``indices`` is ascending.

    Each item is one read of one sample: random access costs more per sample than the sequential
    blocks of :class:`StoreStream`. The store is opened again in each worker process; where the
    zarrs codec pipeline is in use (``use_fast_codecs``), start workers with ``spawn``.
    """

    def __init__(
        self,
        url: str,
        *,
        indices=None,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        include_flagged: bool = False,
    ) -> None:
        from synthgen.storage.loader import LoaderConfig, plan_stream

        reader = StoreReader(url)
        plan = plan_stream([reader], LoaderConfig(include_flagged=include_flagged), indices=indices)
        keep = plan.keep[0]
        self.url = url
        self.schema = reader.schema
        self.indices = reader.available_indices() if keep is None else np.flatnonzero(keep)
        self.transform = transform
        self._scale = plan.scales[0]
        self._has_patient = "patient" in {m.name for m in reader.layout.meta}
        self._fast_codecs = fast_codecs_in_use()  # worker processes follow this one
        self._reader: tuple[int, StoreReader] | None = (os.getpid(), reader)

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_reader"] = None  # each process opens its own store
        return state

    def _open(self) -> StoreReader:
        if self._reader is None or self._reader[0] != os.getpid():
            if self._fast_codecs:
                use_fast_codecs()
            self._reader = (os.getpid(), StoreReader(self.url))
        return self._reader[1]

    def __getitem__(self, i: int) -> Any:
        import torch

        if not -len(self) <= i < len(self):
            raise IndexError(f"Expected an item index in [0, {len(self)}). Got {i} instead.")
        s = int(self.indices[i])
        reader = self._open()
        image, label = reader.read_sample(s)
        low, high = self._scale
        image = (image.astype(np.float32) - np.float32(low)) * np.float32(1.0 / (high - low))
        item: dict[str, Any] = {
            "image": torch.from_numpy(image[None] if image.ndim == 2 else image),
            "label": torch.from_numpy(label[None].astype(np.int64)),
            "index": s,
        }
        if self._has_patient:
            item["patient"] = int(reader.read_meta("patient", s, s + 1)[0])
        return item if self.transform is None else self.transform(item)
