"""Tiny labelled stores and segmenter configs shared by the segmentation trainer and evaluator tests."""

from __future__ import annotations

import numpy as np

from helpers.data import disc_labels
from synthgen.models.segmenters import SegModelConfig
from synthgen.schemas import CAMUS
from synthgen.schemas.store_layout import Intensity, MetaField, StoreAttrs, StoreLayout
from synthgen.storage.store import StoreWriter
from synthgen.trainers.segmenter import SegTrainConfig

GREY = np.array([40, 200, 110, 160], np.float32)  # intensity of background and classes 1..3
TINY_MODEL = SegModelConfig("unet", width=4, depth=2)


def pair_images(labels: np.ndarray, seed: int = 0, noise: float = 12.0) -> np.ndarray:
    """uint8 images whose grey level says the class, plus noise: a segmenter can learn them quickly."""
    rng = np.random.default_rng(seed)
    images = GREY[labels] + rng.normal(0, noise, labels.shape)
    return np.clip(images, 0, 255).astype(np.uint8)


def make_seg_store(
    url: str,
    n: int = 24,
    size: int = 32,
    *,
    schema=CAMUS,
    seed: int = 0,
    patients: np.ndarray | None = None,
    spacing: tuple[float, float] | None = None,
    shard_size: int = 16,
    noise: float = 12.0,
    synthetic: bool = False,
) -> str:
    """A complete store of disc label maps and matching images; ``meta/patient`` where given; with
    ``synthetic``, provenance ``build_config`` (a build-dataset store: read whole, no patients)."""
    labels = disc_labels(n, size, size, seed=seed)
    images = pair_images(labels, seed, noise)
    meta = (MetaField("patient", "int32"),) if patients is not None else ()
    layout = StoreLayout(n=n, image_shape=(size, size), shard_size=shard_size, meta=meta)
    provenance = {"build_config": {"preset": "test"}} if synthetic else {}
    attrs = StoreAttrs(layout, schema, Intensity.for_dtype("uint8"), spacing=spacing, provenance=provenance)
    writer = StoreWriter.create(url, attrs)
    for k in range(layout.num_shards):
        a, b = layout.shard_bounds(k)
        extra = {"patient": np.asarray(patients[a:b], np.int32)} if patients is not None else {}
        writer.write_shard(k, images[a:b], labels[a:b], extra)
    writer.mark_complete(range(layout.num_shards))
    return url


def tiny_train_config(train: str, val: str, out_dir: str, **overrides) -> SegTrainConfig:
    base = dict(
        train=train,
        val=val,
        out_dir=out_dir,
        model=TINY_MODEL,
        image_size=(32, 32),
        batch_size=8,
        steps=24,
        val_every=8,
        lr=3e-2,
        device="cpu",
        augment=None,
    )
    return SegTrainConfig(**(base | overrides))
