"""Tiny GAN training set-ups shared by the trainer, CycleGAN and checkpoint tests: a disc store and configs."""

from __future__ import annotations

import numpy as np

from helpers.data import disc_labels
from synthgen.models.registry import default_model_config
from synthgen.schemas import CAMUS
from synthgen.schemas.store_layout import Intensity, MetaField, StoreAttrs, StoreLayout
from synthgen.storage.store import StoreWriter
from synthgen.trainers.config import TrainConfig

TINY = {
    "spade": {
        "width": 4,
        "max_width": 8,
        "depth": 2,
        "hidden": 4,
        "style_dim": 4,
        "disc_width": 4,
        "disc_layers": 2,
    },
    "pix2pix": {"width": 4, "max_width": 8, "depth": 3, "disc_width": 4, "disc_layers": 2},
    "cyclegan": {
        "width": 4,
        "blocks": 1,
        "downsamples": 1,
        "disc_width": 4,
        "disc_layers": 2,
        "noise_fields": 2,
        "intensity_slots": 4,
    },
}


def make_store(
    path,
    *,
    n: int = 12,
    size: int = 16,
    dtype: str = "uint8",
    shard: int = 8,
    levels: tuple[float, ...] = (0.1, 0.3, 0.8, 0.5),
) -> str:
    """A store of disc label maps (CAMUS schema) whose images are per-class grey ``levels`` plus noise,
    patients 1..n."""
    labels = disc_labels(n, size, size, seed=1)
    rng = np.random.default_rng(0)
    intensity = Intensity.for_dtype(dtype)
    level = np.array(levels)[labels] + rng.normal(0, 0.05, labels.shape)
    images = (np.clip(level, 0, 1) * intensity.high).astype(dtype)
    layout = StoreLayout(n, (size, size), dtype, shard, meta=(MetaField("patient", "int32"),))
    writer = StoreWriter.create(str(path), StoreAttrs(layout, CAMUS, intensity))
    for k in range(layout.num_shards):
        a, b = layout.shard_bounds(k)
        writer.write_shard(k, images[a:b], labels[a:b], {"patient": np.arange(a + 1, b + 1, dtype=np.int32)})
    writer.mark_complete(range(layout.num_shards))
    return str(path)


def tiny_config(store: str, out, arch: str = "spade", **changes) -> TrainConfig:
    """A 3-step training config of a tiny ``arch`` model at 16 x 16; ``model=`` overrides model fields."""
    model = default_model_config(arch, **TINY[arch] | changes.pop("model", {}))
    base = {
        "image_size": 16,
        "batch_size": 4,
        "steps": 3,
        "log_every": 1,
        "sample_every": 2,
        "checkpoint_every": 2,
    }
    return TrainConfig(store=store, out_dir=str(out), model=model, **base | changes)
