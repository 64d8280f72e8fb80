"""Streaming PyTorch datasets over synthgen stores.

Reads stay sequential: the sample order is shuffled by *blocks* (contiguous runs inside complete shards)
and then within a window of a few blocks, never sample by sample across the store. Blocks are dealt out
across distributed ranks and DataLoader workers so that every sample of an epoch is seen exactly once,
and each epoch has a new order derived from ``SeedSequence([seed, epoch])``.

``indices`` keeps a subset of a store (the training patients, say): blocks are then runs of kept samples,
read as one contiguous range and filtered. ``set_epoch(epoch, start_batch=k)`` starts the next
iteration at batch *k* of that epoch without reading the batches before it, with the same bytes from
there on as an iteration from the start (the augmentation of batch *k* draws from its own seed), so a
training run resumes exactly where it stopped.

Several stores mix at given ratios (``real.zarr:0.3,synth.zarr:0.7``): each yielded sample comes from
store *j* with probability ``ratio_j``; a store that runs out within an epoch starts a fresh pass.
A :class:`MixSchedule` moves those ratios linearly over the batches of a run instead (a synthetic share
that rises or falls over training): batch *g* of the run (counted over epochs, and over DataLoader workers
and ranks, which take turns) draws from the ratios of step *g*.

Per-image intensity normalisation (``LoaderConfig.normalise``, :func:`normalise_images`) is the last
step of a batch, after the scaling to [0, 1], resizing and augmentation (whose intensity changes work
in [0, 1]): ``percentile`` clips each image (each channel) to its [0.5, 99.5] percentiles and scales
that range to [0, 1]; ``zscore`` subtracts the image's mean and divides by its standard deviation, as
nnU-Net does for MR. Evaluation applies it at the same point: to the images at the model's size.

Stores are opened lazily inside each worker (the zarrs codec pipeline is not fork-safe): use
:func:`make_loader`, which starts workers with ``spawn``. Workers use the zarrs pipeline when the process
that made the stream did (:func:`~synthgen.storage.store.use_fast_codecs`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from synthgen.errors import ConfigError, SchemaError
from synthgen.kernels import resize_images, resize_labels
from synthgen.schemas import LabelSchema, remap_table
from synthgen.seeding import augment_rng, block_order_rng, epoch_rngs
from synthgen.storage.store import StoreReader, fast_codecs_in_use, use_fast_codecs

NORMALISATIONS = ("none", "percentile", "zscore")
PERCENTILES = (0.5, 99.5)  # the clipping range of "percentile" normalisation


def check_normalise(method: str, where: str = "normalise") -> str:
    """``method`` if it names one of :data:`NORMALISATIONS`; a :class:`ConfigError` otherwise."""
    if method not in NORMALISATIONS:
        raise ConfigError(f"Expected {where} in {NORMALISATIONS}. Got {method!r} instead.")
    return method


def normalise_images(images: np.ndarray, method: str) -> np.ndarray:
    """Per-image intensity normalisation of (..., H, W) images, each (H, W) plane on its own: ``none``
    (as float32), ``percentile`` (clip to the plane's [0.5, 99.5] percentiles, scale them to [0, 1])
    or ``zscore`` ((x - mean) / std). A constant plane becomes zeros. Returns a new float32 array."""
    check_normalise(method)
    x = np.asarray(images)
    if method == "none" or x.size == 0:
        return x.astype(np.float32)
    flat = x.reshape(*x.shape[:-2], -1).astype(np.float64)
    if method == "percentile":
        low, high = np.percentile(flat, PERCENTILES, axis=-1)
        span = high - low
        scale = np.divide(1.0, span, out=np.zeros_like(span), where=span > 0)
        out = (np.clip(flat, low[..., None], high[..., None]) - low[..., None]) * scale[..., None]
    else:
        mean, std = flat.mean(-1), flat.std(-1)
        scale = np.divide(1.0, std, out=np.zeros_like(std), where=std > 1e-8)
        out = (flat - mean[..., None]) * scale[..., None]
    return out.astype(np.float32).reshape(x.shape)


@dataclass(frozen=True)
class StoreMix:
    """One store of a mix and its share of the samples."""

    url: str
    ratio: float = 1.0

    def __post_init__(self) -> None:
        if not self.ratio > 0:
            raise ConfigError(f"Expected a positive mixing ratio for {self.url}. Got {self.ratio} instead.")


def parse_mix(text: str | Sequence[str | StoreMix]) -> tuple[StoreMix, ...]:
    """``"a.zarr:0.3,b.zarr:0.7"`` or a list of URLs / :class:`StoreMix` -> normalised mix.

    A ratio is the text after the last ``:`` when that text is a number, so ``s3://b/x.zarr`` needs none.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    mix: list[StoreMix] = []
    for item in items:
        if isinstance(item, StoreMix):
            mix.append(item)
            continue
        item = item.strip()
        url, _, tail = item.rpartition(":")
        try:
            ratio = float(tail) if url and "/" not in tail else None
        except ValueError:
            ratio = None
        mix.append(StoreMix(url, ratio) if ratio is not None else StoreMix(item))
    if not mix or any(not m.url for m in mix):
        raise ConfigError(f"Expected store URLs like 'real.zarr:0.3,synth.zarr:0.7'. Got {text!r} instead.")
    total = sum(m.ratio for m in mix)
    return tuple(StoreMix(m.url, m.ratio / total) for m in mix)


@dataclass(frozen=True)
class MixSchedule:
    """Mixing ratios (one per store of the mix, each set summing to 1) that move linearly from ``start``
    at batch 0 to ``end`` at batch ``batches - 1`` of a run, and stay at ``end`` after it."""

    start: tuple[float, ...]
    end: tuple[float, ...]
    batches: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", tuple(float(r) for r in self.start))
        object.__setattr__(self, "end", tuple(float(r) for r in self.end))
        if len(self.start) != len(self.end) or self.batches < 1:
            raise ConfigError(
                f"Expected start and end ratios of one length and batches >= 1. Got {len(self.start)} and "
                f"{len(self.end)} ratios over {self.batches} batches instead."
            )
        for ratios in (self.start, self.end):
            if min(ratios) < 0 or abs(sum(ratios) - 1) > 1e-9:
                raise ConfigError(f"Expected non-negative ratios summing to 1. Got {list(ratios)} instead.")

    def ratios(self, batch: int) -> np.ndarray:
        """The ratios of batch ``batch`` of the run."""
        t = min(batch / max(self.batches - 1, 1), 1.0)
        mixed = (1 - t) * np.asarray(self.start) + t * np.asarray(self.end)
        return mixed / mixed.sum()


@dataclass(frozen=True)
class LoaderConfig:
    """How a :class:`StoreStream` walks its stores."""

    batch_size: int = 32
    block_size: int = 256  # contiguous samples read at once (a whole shard at most)
    window: int = 4  # blocks shuffled together
    as_float: bool = True  # False: images stay in the store dtype (4x less to move from workers)
    shuffle: bool = True
    seed: int = 0
    samples_per_epoch: int | None = None  # default: all available samples (the sum over a mix)
    drop_last: bool = False
    drop_unmatched: bool = False  # remapping to a schema: classes it lacks become background
    rank: int = 0  # this process among world_size distributed ranks
    world_size: int = 1
    include_flagged: bool = False  # also serve samples whose gate attempts ran out (meta/plausibility != 0)
    channel_first_labels: bool = False  # labels as int64 (B, 1, H, W), as MONAI's losses take them
    normalise: str = "none"  # per-image intensity normalisation: one of NORMALISATIONS

    def __post_init__(self) -> None:
        for name in ("batch_size", "block_size", "window"):
            if getattr(self, name) < 1:
                raise ConfigError(f"Expected {name} >= 1. Got {getattr(self, name)} instead.")
        check_normalise(self.normalise)
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(
                f"Expected 0 <= rank < world_size. Got rank {self.rank}, world size {self.world_size}."
            )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoaderConfig:
        return cls(**dict(data))


class Block(NamedTuple):
    """Samples read together: the range [start, stop) of one shard, or only ``rows`` of it."""

    start: int
    stop: int
    rows: np.ndarray | None = None  # store indices kept in [start, stop); None: all

    def __len__(self) -> int:
        return self.stop - self.start if self.rows is None else len(self.rows)

    def index(self) -> np.ndarray:
        return np.arange(self.start, self.stop) if self.rows is None else self.rows

    def read(self, reader: StoreReader) -> tuple[np.ndarray, np.ndarray]:
        images, labels = reader.read_block(self.start, self.stop)
        if self.rows is None:
            return images, labels
        return images[self.rows - self.start], labels[self.rows - self.start]


@dataclass(frozen=True, eq=False)
class StreamPlan:
    """What a :class:`StoreStream` walks, per store of its mix (in mix order); fixed when it is made."""

    schema: LabelSchema  # the labels every batch is in
    tables: tuple[np.ndarray | None, ...]  # store label -> schema label; None: no remapping needed
    scales: tuple[tuple[float, float], ...]  # the intensity (low, high) that maps to [0, 1]
    keep: tuple[np.ndarray | None, ...]  # boolean mask over the store's samples; None: all available
    blocks: tuple[tuple[Block, ...], ...]  # the blocks of kept samples in complete shards
    image_shape: tuple[int, ...]  # of one yielded image, after resizing
    size: tuple[int, int] | None  # (H, W) every sample is resized to; None: as stored
    samples_per_epoch: int


def plan_stream(
    readers: Sequence[StoreReader],
    config: LoaderConfig,
    *,
    schema: LabelSchema | None = None,
    size: tuple[int, int] | None = None,
    indices=None,
) -> StreamPlan:
    """Plan the stream over the stores ``readers`` hold open (their attributes, and ``meta/plausibility``
    where a store has it: samples the gate gave up on are left out unless ``config.include_flagged``).

    ``schema`` is the label schema of the batches (default: the one all stores share); ``size`` the
    (H, W) samples are resized to; ``indices`` the sample subsets kept (see :class:`StoreStream`).
    """
    schemas = {r.schema.name: r.schema for r in readers}
    if schema is None and len({s.to_dict().__repr__() for s in schemas.values()}) > 1:
        raise SchemaError(
            f"Expected stores of one label schema. Got {sorted(schemas)}: pass schema= to remap them."
        )
    target = schema or readers[0].schema
    size = None if size is None else (int(size[0]), int(size[1]))
    shapes = {r.layout.image_shape[:-2] + (size or r.layout.image_shape[-2:]) for r in readers}
    if len(shapes) > 1:
        raise ConfigError(f"Expected stores with one image shape. Got {sorted(shapes)}.")
    keep = _keep_masks(indices, readers)
    if not config.include_flagged:
        keep = [_without_flagged(r, k) for r, k in zip(readers, keep, strict=True)]
    available = [r.num_available if k is None else int(k.sum()) for r, k in zip(readers, keep, strict=True)]
    if not all(available):
        empty = [r.url for r, n in zip(readers, available, strict=True) if not n]
        raise ConfigError(f"Expected stores with complete shards. Got none in {empty}.")
    return StreamPlan(
        schema=target,
        tables=tuple(_remap_table(r.schema, target, config.drop_unmatched) for r in readers),
        scales=tuple((r.attrs.intensity.low, r.attrs.intensity.high) for r in readers),
        keep=tuple(keep),
        blocks=tuple(
            tuple(_blocks_of(r, min(config.block_size, r.layout.shard_size), k))
            for r, k in zip(readers, keep, strict=True)
        ),
        image_shape=shapes.pop(),
        size=size,
        samples_per_epoch=(sum(available) if config.samples_per_epoch is None else config.samples_per_epoch),
    )


def _remap_table(source: LabelSchema, target: LabelSchema, drop_unmatched: bool) -> np.ndarray | None:
    """The lookup table from ``source`` labels to ``target`` labels; None where it changes nothing."""
    table = remap_table(source, target, drop_unmatched=drop_unmatched)
    values = np.array([0, *source.values])
    return None if np.array_equal(table[values], values) else table


class _Source(NamedTuple):
    """A store opened in this process, with its planned blocks."""

    reader: StoreReader
    blocks: tuple[Block, ...]
    scale: tuple[float, float]


def _blocks_of(reader: StoreReader, block_size: int, keep: np.ndarray | None) -> list[Block]:
    """Blocks of at most ``block_size`` samples over complete shards (only samples where ``keep``)."""
    blocks = []
    for k in reader.complete_shards:
        start, stop = reader.layout.shard_bounds(k)
        if keep is None:
            blocks += [Block(s, min(s + block_size, stop)) for s in range(start, stop, block_size)]
            continue
        rows = start + np.flatnonzero(keep[start:stop])
        for s in range(0, len(rows), block_size):
            run = rows[s : s + block_size]
            blocks.append(Block(int(run[0]), int(run[-1]) + 1, run))
    return blocks


def _without_flagged(reader: StoreReader, keep: np.ndarray | None) -> np.ndarray | None:
    """``keep`` less the samples flagged in ``meta/plausibility`` (kept although the gate rejected them)."""
    if "plausibility" not in {m.name for m in reader.layout.meta}:
        return keep
    flagged = np.zeros(reader.layout.n, bool)
    for k in reader.complete_shards:
        start, stop = reader.layout.shard_bounds(k)
        flagged[start:stop] = reader.read_meta("plausibility", start, stop) != 0
    if not flagged.any():
        return keep
    if keep is None:
        keep = np.zeros(reader.layout.n, bool)
        keep[reader.available_indices()] = True
    return keep & ~flagged


def _keep_masks(indices, readers: list[StoreReader]) -> list[np.ndarray | None]:
    """``indices`` (one array for a single store, or one array or None per store) -> boolean masks."""
    if indices is None:
        return [None] * len(readers)
    if not _is_list_of_subsets(indices):
        if len(readers) > 1:
            raise ConfigError(
                f"Expected one index subset (or None) per store ({len(readers)}). Got one array."
            )
        indices = [indices]
    per_store = list(indices)
    if len(per_store) != len(readers):
        raise ConfigError(f"Expected one index subset per store ({len(readers)}). Got {len(per_store)}.")
    masks: list[np.ndarray | None] = []
    for r, idx in zip(readers, per_store, strict=True):
        if idx is None:
            masks.append(None)
            continue
        idx = np.asarray(idx, np.int64)
        mask = np.zeros(r.layout.n, bool)
        if idx.size and not (0 <= idx.min() and idx.max() < r.layout.n):
            raise ConfigError(f"Expected sample indices in [0, {r.layout.n}) for {r.url}. Some lie outside.")
        mask[idx] = True
        available = np.zeros(r.layout.n, bool)
        available[r.available_indices()] = True
        if (mask & ~available).any():
            raise ConfigError(f"Expected sample indices in complete shards of {r.url}. Some are not.")
        masks.append(mask)
    return masks


def _is_list_of_subsets(indices) -> bool:
    return isinstance(indices, (list, tuple)) and any(i is None or np.ndim(i) == 1 for i in indices)


class StoreStream(IterableDataset):
    """Yields batches ``{"image": float32 (B, C, H, W) in [0, 1], "label": uint8 (B, H, W), ...}``
    (images normalised per image instead with ``config.normalise``: see the module docstring).

    Labels stay uint8 (8x less to move between processes than int64): call ``.long()`` for a loss, or
    set ``config.channel_first_labels`` for int64 (B, 1, H, W) labels (MONAI's convention).

    Images are scaled from each store's intensity convention (``low``..``high``) to [0, 1]. With
    ``schema`` given, labels of every store are remapped to it by class name (``config.drop_unmatched``
    sends classes it lacks to background); otherwise all stores must share one schema.
    ``augment`` is a callable ``(images, labels, rng) -> (images, labels)`` on NumPy batches.
    With ``size=(H, W)`` every store's samples are resized to H x W before batching (images bilinear,
    antialiased; labels nearest), so stores of different sizes mix; without it they must share one shape.
    ``indices`` keeps only those store sample indices: an array for a single store, or a list with an
    array (or None: all) per store. What an epoch walks is planned once, here (:func:`plan_stream`).
    ``schedule`` (a :class:`MixSchedule`, one ratio per store) replaces the mix's fixed ratios.
    """

    def __init__(
        self,
        stores: str | Sequence[str | StoreMix],
        config: LoaderConfig | None = None,
        *,
        schema: LabelSchema | None = None,
        size: tuple[int, int] | None = None,
        indices=None,
        augment=None,
        schedule: MixSchedule | None = None,
    ) -> None:
        super().__init__()
        self.mix = parse_mix(stores)
        self.config = config or LoaderConfig()
        self.augment = augment
        if schedule is not None and len(schedule.start) != len(self.mix):
            raise ConfigError(
                f"Expected one scheduled ratio per store of the mix ({len(self.mix)}). "
                f"Got {len(schedule.start)} instead."
            )
        self.schedule = schedule
        readers = [StoreReader(m.url) for m in self.mix]  # attributes only, no array data
        dtypes = {r.layout.image_dtype for r in readers}
        converts = size is not None or augment is not None or self.config.normalise != "none"
        if not self.config.as_float and (len(dtypes) > 1 or converts):
            raise ConfigError(
                f"Expected as_float=True to mix image dtypes {sorted(dtypes)}, resize, augment or normalise. "
                "Got as_float=False."
            )
        self.plan = plan_stream(readers, self.config, schema=schema, size=size, indices=indices)
        self._fast_codecs = fast_codecs_in_use()  # DataLoader workers follow this process
        self.epoch = 0
        self._epoch_set = False
        self._start_batch = 0
        self._iterations = 0  # epochs advance by themselves where set_epoch is not called
        self._sources: list[_Source] | None = None

    @property
    def schema(self) -> LabelSchema:
        return self.plan.schema

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.plan.image_shape

    @property
    def size(self) -> tuple[int, int] | None:
        return self.plan.size

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_sources"] = None  # each process opens its own stores
        return state

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Choose the epoch whose order the next iteration follows (call before each epoch).

        ``start_batch`` makes the next iteration begin at that batch of the epoch (counted per
        DataLoader worker and rank), skipping the ones before without reading them.
        """
        if start_batch < 0:
            raise ConfigError(f"Expected start_batch >= 0. Got {start_batch} instead.")
        self.epoch = int(epoch)
        self._epoch_set = True
        self._start_batch = int(start_batch)

    @property
    def samples_per_epoch(self) -> int:
        return self.plan.samples_per_epoch

    def __len__(self) -> int:
        """Batches per epoch for this rank, summed over its workers (approximate with several workers)."""
        per_rank = self.samples_per_epoch // self.config.world_size
        b = self.config.batch_size
        return per_rank // b if self.config.drop_last else -(-per_rank // b)

    # -- iteration -------------------------------------------------------------------------
    def _open(self) -> list[_Source]:
        if self._sources is None:
            if self._fast_codecs and get_worker_info() is not None:
                use_fast_codecs()
            plan = self.plan
            self._sources = [
                _Source(StoreReader(m.url), blocks, scale)
                for m, blocks, scale in zip(self.mix, plan.blocks, plan.scales, strict=True)
            ]
        return self._sources

    def _worker_slot(self) -> tuple[int, int]:
        info = get_worker_info()
        workers, wid = (info.num_workers, info.id) if info is not None else (1, 0)
        return self.config.rank * workers + wid, self.config.world_size * workers

    def _windows(
        self, j: int, epoch: int, slot: int, slots: int, rng: np.random.Generator, passes: int | None
    ) -> Iterator[_Window]:
        """Shuffled windows of source ``j`` for this slot (None passes: endless), read when first used.

        The block order of a pass is the same in every slot (it derives from the seed, the epoch, the
        source and the pass only), so dealing blocks out by slot splits the pass exactly.
        """
        src = self._open()[j]
        cfg = self.config
        done = 0
        while passes is None or done < passes:
            shared = block_order_rng(cfg.seed, epoch, j, done)
            order = shared.permutation(len(src.blocks)) if cfg.shuffle else np.arange(len(src.blocks))
            mine = [src.blocks[b] for b in order[slot::slots]]
            if not mine and passes is None:  # more slots than blocks: share the store rather than starve
                mine = [src.blocks[b] for b in order]
            for w in range(0, len(mine), cfg.window):
                window = mine[w : w + cfg.window]
                index = np.concatenate([block.index() for block in window])
                perm = rng.permutation(len(index)) if cfg.shuffle else np.arange(len(index))
                yield _Window(src.reader, window, index, perm)
            done += 1
            if not mine:
                return

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        slot, slots = self._worker_slot()
        cfg = self.config
        epoch = self.epoch if self._epoch_set else self._iterations
        self._iterations += 1
        start, self._start_batch = self._start_batch, 0
        rngs = epoch_rngs(cfg.seed, epoch, slot, len(self.mix) + 1)
        pick_rng = rngs[-1]
        # one store and no fixed epoch size: exactly one pass, every sample once across all slots
        one_pass = len(self.mix) == 1 and cfg.samples_per_epoch is None
        takers = [
            _Taker(
                self._windows(j, epoch, slot, slots, rngs[j], 1 if one_pass else None), self.plan.tables[j]
            )
            for j in range(len(self.mix))
        ]
        ratios = np.array([m.ratio for m in self.mix])
        total = self.samples_per_epoch
        share = total // slots + (1 if slot < total % slots else 0)
        done = number = 0
        per_slot = max(share // cfg.batch_size, 1)  # batches of this slot in one epoch
        while one_pass or done < share:
            b = cfg.batch_size if one_pass else min(cfg.batch_size, share - done)
            if self.schedule is not None:  # batch g of the run: slots take turns, epoch after epoch
                ratios = self.schedule.ratios((epoch * per_slot + number) * slots + slot)
            counts = pick_rng.multinomial(b, ratios) if len(takers) > 1 else np.array([b])
            if number < start:  # skipped: the same draws, nothing read
                n = sum(takers[j].skip(int(c)) for j, c in enumerate(counts) if c)
            else:
                parts = [(j, *takers[j].take(int(c))) for j, c in enumerate(counts) if c]
                n = sum(len(p[3]) for p in parts)
            if n == 0 or (n < cfg.batch_size and cfg.drop_last):
                return
            if number >= start:
                yield self._collate(parts, augment_rng(cfg.seed, epoch, slot, number))
            done += n
            number += 1
            if n < b:
                return

    def _collate(self, parts: list[tuple], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        sources = self._open()
        images = []
        for j, im, _, _ in parts:
            if self.config.as_float:
                lo, hi = sources[j].scale
                im = (im.astype(np.float32) - np.float32(lo)) * np.float32(1.0 / (hi - lo))
            images.append(im)
        labels = [p[2] for p in parts]
        if self.size is not None:
            images, labels = zip(*map(self._resize, images, labels), strict=True)
        images = np.concatenate(images) if len(images) > 1 else images[0]
        labels = np.concatenate(labels) if len(labels) > 1 else labels[0]
        if self.augment is not None:
            images, labels = self.augment(images, labels, rng)
        if self.config.normalise != "none":
            images = normalise_images(images, self.config.normalise)
        if images.ndim == 3:
            images = images[:, None]
        if self.config.channel_first_labels:
            labels = labels[:, None].astype(np.int64)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(images)),
            "label": torch.from_numpy(np.ascontiguousarray(labels)),
            "index": torch.from_numpy(np.concatenate([p[3] for p in parts]).astype(np.int64)),
            "store": torch.from_numpy(np.concatenate([np.full(len(p[3]), p[0], np.int64) for p in parts])),
        }

    def _resize(self, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return resize_images(images, self.size), resize_labels(labels, self.size)


class _Window:
    """A few blocks shuffled together; read on first use, never concatenated (batches are gathered
    through ``perm``, one copy per sample)."""

    def __init__(self, reader: StoreReader, blocks: list[Block], index: np.ndarray, perm: np.ndarray) -> None:
        self.reader, self.blocks = reader, blocks
        self.index = index  # store index of each window row
        self.perm = perm  # the shuffled order of window rows
        self.starts = np.cumsum([0] + [len(block) for block in blocks])  # row offset of each block
        self.images: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.images:
            self.images, self.labels = map(
                list, zip(*(b.read(self.reader) for b in self.blocks), strict=True)
            )
        block = np.searchsorted(self.starts, rows, side="right") - 1
        images = np.empty((len(rows), *self.images[0].shape[1:]), self.images[0].dtype)
        labels = np.empty((len(rows), *self.labels[0].shape[1:]), self.labels[0].dtype)
        for b in np.unique(block):
            at = np.flatnonzero(block == b)
            offsets = rows[at] - self.starts[b]
            images[at] = self.images[b][offsets]
            labels[at] = self.labels[b][offsets]
        return images, labels, self.index[rows]


class _Taker:
    """Takes runs of k samples from a stream of shuffled windows, across window boundaries."""

    def __init__(self, windows: Iterator[_Window], table: np.ndarray | None) -> None:
        self.windows = windows
        self.table = table  # None: labels need no remapping
        self.current: _Window | None = None
        self.pos = 0

    def _runs(self, k: int) -> Iterator[np.ndarray]:
        """The window rows of the next ``k`` samples (fewer at the end of the stream), run by run."""
        while k > 0:
            if self.current is None or self.pos >= len(self.current.perm):
                self.current, self.pos = next(self.windows, None), 0
                if self.current is None:
                    return
            stop = min(self.pos + k, len(self.current.perm))
            yield self.current.perm[self.pos : stop]
            k -= stop - self.pos
            self.pos = stop

    def skip(self, k: int) -> int:
        """Pass over the next ``k`` samples without reading them; how many there were."""
        return sum(len(rows) for rows in self._runs(k))

    def take(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = [self.current.gather(rows) for rows in self._runs(k)]
        if not out:
            return np.zeros(0), np.zeros(0, np.uint8), np.zeros(0, np.int64)
        images, labels, index = (
            (np.concatenate(p) for p in zip(*out, strict=True)) if len(out) > 1 else out[0]
        )
        if self.table is not None:
            labels = self.table[labels]
        return images, labels, index


def make_loader(dataset: StoreStream, num_workers: int = 0, **kwargs: Any) -> DataLoader:
    """A DataLoader over a :class:`StoreStream` (batches come whole from the dataset), spawn-started.

    With ``persistent_workers=True`` the workers keep their own copy of the dataset, so
    :meth:`StoreStream.set_epoch` no longer reaches them; the order still changes every epoch, because
    each new iteration of a dataset copy advances its epoch by itself.
    """
    extra: dict[str, Any] = {}
    if num_workers > 0:
        extra = {"multiprocessing_context": "spawn", "prefetch_factor": 4}
    return DataLoader(dataset, batch_size=None, num_workers=num_workers, **(extra | kwargs))
