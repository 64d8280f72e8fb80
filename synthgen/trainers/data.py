"""Training pairs for the GAN trainers: read from a store, normalised, resized, batched, augmented.

:class:`TrainingStream` streams the pairs of a split through :class:`~synthgen.storage.loader.StoreStream`
(shuffled epochs, nothing held in memory) and resumes at any step without reading what came before.
:func:`load_training_pairs` holds a whole split in memory, for evaluation (every pair, in order).

Intensities map to [-1, 1] by the store's intensity convention (``attrs.intensity``: low -> -1,
high -> 1), whatever the dtype (uint8, uint16, float); :func:`from_unit` inverts it. Label values
map to class indices 0..K-1 in schema order (background first).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from synthgen.errors import StoreError
from synthgen.kernels import resize_images, resize_labels, to_unit
from synthgen.models import Batch, onehot
from synthgen.schemas import DataShape, LabelSchema, label_lut
from synthgen.storage import LoaderConfig, StoreReader, StoreStream, split_indices
from synthgen.trainers.augment import AugmentConfig, apply, sample_params


def labels_to_indices(labels: np.ndarray, schema: LabelSchema, where: str) -> np.ndarray:
    """uint8 label values -> class indices, checking every value against the schema."""
    schema.check_labels(labels, where)
    return label_lut(schema)[labels]


def unit_pairs(
    images: np.ndarray, labels: np.ndarray, reader: StoreReader, channels: int, size: int, where: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Store images and label maps -> images (N, C, S, S) in [-1, 1] and class indices (N, S, S) uint8,
    resized to ``size`` x ``size`` (images antialiased linear, labels nearest neighbour)."""
    indices = labels_to_indices(labels, reader.schema, where)
    x = to_unit(images, reader.attrs.intensity).reshape(len(images), channels, *labels.shape[-2:])
    x, y = resize_images(x, (size, size)), resize_labels(indices, (size, size))
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))


@dataclass
class PairData:
    """The training set in memory: images (N, C, S, S) in [-1, 1], class indices (N, S, S) uint8."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: np.ndarray  # store sample index of each pair
    shape: DataShape

    def __len__(self) -> int:
        return len(self.indices)


def load_training_pairs(
    reader: StoreReader, image_size: int, split: str, limit: int | None = None
) -> PairData:
    """Every pair of ``split`` in the store, resized to ``image_size``, held in memory."""
    wanted = split_indices(reader, split)
    if limit is not None:
        wanted = wanted[:limit]
    if wanted.size == 0:
        raise StoreError(f"Expected training pairs in split {split!r} of {reader.url}. Found none.")
    layout, schema = reader.layout, reader.schema
    channels = 1 if len(layout.image_shape) == 2 else layout.image_shape[0]
    images, labels = [], []
    wanted_set = np.zeros(layout.n, bool)
    wanted_set[wanted] = True
    for k in reader.complete_shards:
        start, stop = layout.shard_bounds(k)
        keep = wanted_set[start:stop]
        if not keep.any():
            continue
        im, lab = reader.read_shard(k)
        x, y = unit_pairs(im[keep], lab[keep], reader, channels, image_size, f"shard {k} of {reader.url}")
        images.append(x)
        labels.append(y)
    shape = DataShape(num_classes=schema.num_classes, channels=channels, image_size=image_size)
    return PairData(torch.cat(images), torch.cat(labels), wanted, shape)


def has_foreground(reader: StoreReader, indices: np.ndarray) -> np.ndarray:
    """Whether each sample of ``indices`` has a label other than background (labels read shard by shard)."""
    out = np.zeros(len(indices), bool)
    shard = indices // reader.layout.shard_size
    for k in np.unique(shard):
        at = np.flatnonzero(shard == k)
        start, stop = reader.layout.shard_bounds(int(k))
        labels = reader.read_labels(start, stop)[indices[at] - start]
        out[at] = labels.reshape(len(at), -1).any(axis=1)
    return out


class TrainingStream:
    """Shuffled batches of the pairs of ``split`` in a store, resized to ``image_size``, streamed.

    Epochs follow each other; batch ``step`` of the run is batch ``step % batches_per_epoch`` of epoch
    ``step // batches_per_epoch``, and :meth:`batches` starts at any step without reading the earlier
    ones, so a resumed training run sees exactly the batches an uninterrupted one would have.
    Every batch is full (the remainder of an epoch is dropped).
    """

    def __init__(
        self,
        reader: StoreReader,
        image_size: int,
        split: str,
        batch_size: int,
        seed: int,
        *,
        foreground_only: bool = False,
    ) -> None:
        wanted = split_indices(reader, split)
        if foreground_only:
            wanted = wanted[has_foreground(reader, wanted)]
        if wanted.size < batch_size:
            what = "label maps with foreground" if foreground_only else "training pairs"
            raise StoreError(
                f"Expected at least one batch ({batch_size}) of {what} in split {split!r} of "
                f"{reader.url}. Found {wanted.size}."
            )
        self.reader, self.indices = reader, wanted
        channels = 1 if len(reader.layout.image_shape) == 2 else reader.layout.image_shape[0]
        self.shape = DataShape(reader.schema.num_classes, channels, image_size)
        # blocks of 32 in windows of 8: reads stay contiguous, each epoch mixes 256 pairs at a time
        config = LoaderConfig(batch_size=batch_size, block_size=32, window=8, seed=seed, drop_last=True)
        self.stream = StoreStream(reader.url, config, indices=wanted, size=(image_size, image_size))
        self.batches_per_epoch = wanted.size // batch_size

    def __len__(self) -> int:
        return int(self.indices.size)

    def to_batch(self, images: torch.Tensor, labels: np.ndarray, where: str) -> Batch:
        """Loader output (images in [0, 1], label values) -> a :class:`Batch` (one-hot classes, [-1, 1])."""
        classes = torch.from_numpy(labels_to_indices(labels, self.reader.schema, where))
        return Batch(onehot(classes, self.shape.num_classes), (images * 2 - 1).clamp_(-1, 1))

    def batches(self, start_step: int = 0) -> Iterator[Batch]:
        """Batches from training step ``start_step`` on, endlessly."""
        epoch, skip = divmod(start_step, self.batches_per_epoch)
        while True:
            self.stream.set_epoch(epoch, start_batch=skip)
            for b in self.stream:
                yield self.to_batch(b["image"], b["label"].numpy(), f"epoch {epoch} of {self.reader.url}")
            epoch, skip = epoch + 1, 0

    def class_maps(self, batch_size: int = 256) -> Iterator[torch.Tensor]:
        """Every label map of the split once, in store order, as class indices (B, S, S) uint8."""
        size = (self.shape.image_size,) * 2
        config = LoaderConfig(batch_size=batch_size, shuffle=False)
        for b in StoreStream(self.reader.url, config, indices=self.indices, size=size):
            yield torch.from_numpy(labels_to_indices(b["label"].numpy(), self.reader.schema, self.reader.url))

    def pick(self, count: int) -> Batch:
        """``count`` pairs evenly spaced through the split, in store order (for sample grids)."""
        which = self.indices[np.linspace(0, len(self) - 1, min(count, len(self))).astype(int)]
        images, labels = zip(*(self.reader.read_sample(int(i)) for i in which), strict=True)
        x, y = unit_pairs(
            np.stack(images),
            np.stack(labels),
            self.reader,
            self.shape.channels,
            self.shape.image_size,
            self.reader.url,
        )
        return Batch(onehot(y, self.shape.num_classes), x)


def augment_batch(batch: Batch, config: AugmentConfig, gen: torch.Generator) -> Batch:
    """``batch`` through the paired augmentation: parameters drawn once per sample from ``gen``, the
    same warp for image and labels (outside: black, background), on the batch's device."""
    params = sample_params(gen, batch.images.shape[0], config)
    images, classes = apply((batch.images + 1) / 2, batch.labels.argmax(1), params)
    return Batch(onehot(classes, batch.labels.shape[1], batch.labels.dtype), images * 2 - 1)
