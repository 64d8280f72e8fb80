import numpy as np
import pytest
import torch

from synthgen.errors import ConfigError, SchemaError
from synthgen.schemas import ACDC, CAMUS, LabelClass, LabelSchema
from synthgen.schemas.store_layout import Intensity, MetaField, StoreAttrs, StoreLayout
from synthgen.storage.loader import (
    LoaderConfig,
    StoreMix,
    StoreStream,
    make_loader,
    parse_mix,
    plan_stream,
)
from synthgen.storage.store import StoreReader, StoreWriter


def make_store(url, n=50, shard=16, schema=CAMUS, value=None, dtype="uint8", complete=None):
    """Images hold their own sample index (mod 200) so tests can check what they got."""
    layout = StoreLayout(
        n=n, image_shape=(4, 4), image_dtype=dtype, shard_size=shard, meta=(MetaField("seed", "uint64"),)
    )
    writer = StoreWriter.create(url, StoreAttrs(layout, schema, Intensity.for_dtype(dtype)))
    for k in range(layout.num_shards):
        a, b = layout.shard_bounds(k)
        idx = np.arange(a, b)
        images = np.broadcast_to((idx % 200)[:, None, None], (b - a, 4, 4)).astype(dtype)
        labels = np.full((b - a, 4, 4), value if value is not None else 1, np.uint8)
        writer.write_shard(k, images, labels, {"seed": idx.astype(np.uint64)})
    writer.mark_complete(range(layout.num_shards) if complete is None else complete)
    return url


def indices(stream):
    return np.concatenate([b["index"].numpy() for b in stream])


def test_parse_mix():
    mix = parse_mix("real.zarr:0.3,synth.zarr:0.7")
    assert mix == (StoreMix("real.zarr", 0.3), StoreMix("synth.zarr", 0.7))
    assert parse_mix("s3://bucket/x.zarr") == (StoreMix("s3://bucket/x.zarr", 1.0),)
    assert [m.ratio for m in parse_mix(["a.zarr", "b.zarr:3"])] == [0.25, 0.75]
    with pytest.raises(ConfigError):
        parse_mix("a.zarr:0")


def test_plan_covers_kept_samples_of_complete_shards_in_blocks(tmp_path):
    url = make_store(str(tmp_path / "a.zarr"), complete=[0, 1, 3])  # shards of 16: 2 is incomplete
    cfg = LoaderConfig(block_size=8)
    plan = plan_stream([StoreReader(url)], cfg)
    assert [(b.start, b.stop) for b in plan.blocks[0]] == [(0, 8), (8, 16), (16, 24), (24, 32), (48, 50)]
    assert all(b.rows is None for b in plan.blocks[0])
    assert plan.keep == (None,) and plan.samples_per_epoch == 34
    assert plan.tables == (None,) and plan.schema == CAMUS and plan.image_shape == (4, 4)
    assert plan.scales == ((0.0, 255.0),) and plan.size is None

    keep = np.array([1, 2, 5, 17, 30, 31, 48])
    plan = plan_stream([StoreReader(url)], LoaderConfig(block_size=2), indices=keep, size=(8, 6))
    np.testing.assert_array_equal(np.flatnonzero(plan.keep[0]), keep)
    assert [b.index().tolist() for b in plan.blocks[0]] == [[1, 2], [5], [17, 30], [31], [48]]
    assert [(b.start, b.stop) for b in plan.blocks[0]] == [(1, 3), (5, 6), (17, 31), (31, 32), (48, 49)]
    assert plan.samples_per_epoch == len(keep) and plan.image_shape == (8, 6)
    fixed = plan_stream([StoreReader(url), StoreReader(url)], LoaderConfig(samples_per_epoch=100))
    assert fixed.samples_per_epoch == 100 and len(fixed.blocks) == 2


def test_plan_remaps_labels_to_a_schema(tmp_path):
    url = make_store(str(tmp_path / "acdc.zarr"), n=8, schema=ACDC, value=3)  # acdc lv_cavity is 3
    lv = LabelSchema("lv", (LabelClass("lv_cavity", 5), LabelClass("lv_myocardium", 6)))
    plan = plan_stream([StoreReader(url)], LoaderConfig(drop_unmatched=True), schema=lv)
    (table,) = plan.tables
    assert plan.schema == lv and table[3] == 5 and table[0] == 0


def test_one_epoch_sees_every_complete_sample_once(tmp_path):
    url = make_store(str(tmp_path / "a.zarr"), complete=[0, 1, 3])
    stream = StoreStream(url, LoaderConfig(batch_size=7, block_size=8, window=2))
    got = indices(stream)
    assert sorted(got.tolist()) == [*range(32), *range(48, 50)]
    batch = next(iter(stream))
    assert batch["image"].shape == (7, 1, 4, 4) and batch["label"].dtype == torch.uint8
    np.testing.assert_allclose(batch["image"][:, 0, 0, 0].numpy() * 255, batch["index"].numpy() % 200)


def test_order_is_seeded_and_changes_each_epoch(tmp_path):
    url = make_store(str(tmp_path / "a.zarr"))
    a, b = StoreStream(url, LoaderConfig(seed=3)), StoreStream(url, LoaderConfig(seed=3))
    first_a, first_b = indices(a), indices(b)
    np.testing.assert_array_equal(first_a, first_b)
    second = indices(a)
    assert sorted(second) == sorted(first_a) and not np.array_equal(second, first_a)
    a.set_epoch(0)
    np.testing.assert_array_equal(indices(a), first_a)
    unshuffled = StoreStream(url, LoaderConfig(shuffle=False, block_size=8))
    assert indices(unshuffled).tolist() == list(range(50))


def test_ranks_split_an_epoch_exactly(tmp_path):
    url = make_store(str(tmp_path / "a.zarr"), n=70)
    parts = [indices(StoreStream(url, LoaderConfig(block_size=8, rank=r, world_size=3))) for r in range(3)]
    together = np.concatenate(parts)
    assert sorted(together.tolist()) == list(range(70))
    assert all(len(p) > 0 for p in parts)


def test_mixing_ratios(tmp_path):
    a = make_store(str(tmp_path / "a.zarr"), n=40)
    b = make_store(str(tmp_path / "b.zarr"), n=40)
    stream = StoreStream(f"{a}:0.2,{b}:0.8", LoaderConfig(batch_size=50, samples_per_epoch=2000))
    stores = np.concatenate([batch["store"].numpy() for batch in stream])
    assert len(stores) == 2000
    assert 0.16 < np.mean(stores == 0) < 0.24


def test_remapping_by_schema(tmp_path):
    a = make_store(str(tmp_path / "acdc.zarr"), n=8, schema=ACDC, value=3)  # acdc lv_cavity is 3
    b = make_store(str(tmp_path / "camus.zarr"), n=8, schema=CAMUS, value=1)  # camus lv_cavity is 1
    with pytest.raises(SchemaError, match="one label schema"):
        StoreStream([a, b])
    lv = LabelSchema("lv", (LabelClass("lv_cavity", 5), LabelClass("lv_myocardium", 6)))
    stream = StoreStream(
        [a, b], LoaderConfig(samples_per_epoch=16, batch_size=16, drop_unmatched=True), schema=lv
    )
    labels = next(iter(stream))["label"].numpy()
    assert set(np.unique(labels)) == {5}


def test_uint16_images_are_scaled_by_the_intensity_convention(tmp_path):
    url = make_store(str(tmp_path / "a.zarr"), n=8, dtype="uint16")
    batch = next(iter(StoreStream(url, LoaderConfig(batch_size=8))))
    np.testing.assert_allclose(batch["image"][:, 0, 0, 0].numpy() * 65535, batch["index"].numpy(), rtol=1e-5)


def test_augment_hook_gets_numpy_batches(tmp_path):
    url = make_store(str(tmp_path / "a.zarr"), n=8)

    calls = []

    def invert(images, labels, rng):
        calls.append((type(images), type(labels), type(rng), images.shape, labels.shape))
        return 1 - images, labels + 1

    batch = next(iter(StoreStream(url, LoaderConfig(batch_size=8), augment=invert)))
    assert batch["image"].shape == (8, 1, 4, 4)
    assert calls == [(np.ndarray, np.ndarray, np.random.Generator, (8, 4, 4), (8, 4, 4))]
    # the batch holds what the hook returned: inverted images (each holds its index / 255), labels + 1
    np.testing.assert_allclose(
        batch["image"][:, 0, 0, 0].numpy(), 1 - batch["index"].numpy() / 255, rtol=1e-6
    )
    assert (batch["label"].numpy() == 2).all()


def test_spawned_workers_split_an_epoch(tmp_path):
    url = make_store(str(tmp_path / "a.zarr"), n=64)
    stream = StoreStream(url, LoaderConfig(batch_size=5, block_size=8))
    loader = make_loader(stream, num_workers=2)
    assert sorted(indices(loader).tolist()) == list(range(64))


def test_indices_keep_only_that_subset(tmp_path):
    url = make_store(str(tmp_path / "a.zarr"), complete=[0, 1, 3])
    keep = np.array([1, 2, 5, 17, 30, 31, 48])
    stream = StoreStream(url, LoaderConfig(batch_size=3, block_size=2, window=2), indices=keep)
    assert stream.samples_per_epoch == len(keep)
    batches = list(stream)
    got = np.concatenate([b["index"].numpy() for b in batches])
    assert sorted(got.tolist()) == keep.tolist()
    for b in batches:  # each image still holds its own index: rows were filtered, not shifted
        np.testing.assert_allclose(b["image"][:, 0, 0, 0].numpy() * 255, b["index"].numpy() % 200)
    with pytest.raises(ConfigError, match="complete shards"):
        StoreStream(url, indices=np.array([40]))  # shard 2 is not complete
    with pytest.raises(ConfigError, match="one index subset"):
        StoreStream([url, url], indices=[keep])
    with pytest.raises(ConfigError, match="one index subset"):
        StoreStream([url, url], indices=keep)


def test_start_batch_gives_the_tail_of_an_uninterrupted_epoch_without_reading_the_head(tmp_path, monkeypatch):
    a, b = make_store(str(tmp_path / "a.zarr")), make_store(str(tmp_path / "b.zarr"), n=30)

    def flip(images, labels, rng):  # draws from its rng, so the augmentation stream is checked too
        return images * rng.random(), labels

    def stream():
        cfg = LoaderConfig(batch_size=6, block_size=4, window=3, samples_per_epoch=60, seed=5)
        return StoreStream(f"{a}:0.4,{b}:0.6", cfg, augment=flip, indices=[np.arange(3, 40), None])

    reads = []
    real_read = StoreStream._open

    def counting_open(self):
        sources = real_read(self)
        for src in sources:
            if not hasattr(src.reader, "_counted"):
                inner = src.reader.read_block
                src.reader.read_block = lambda s, e, inner=inner: (reads.append(e - s), inner(s, e))[1]
                src.reader._counted = True
        return sources

    monkeypatch.setattr(StoreStream, "_open", counting_open)
    full = stream()
    full.set_epoch(2)
    whole = list(full)
    read_whole, reads[:] = sum(reads), []
    resumed = stream()
    resumed.set_epoch(2, start_batch=4)
    tail = list(resumed)
    assert len(tail) == len(whole) - 4
    for x, y in zip(whole[4:], tail, strict=True):
        for key in x:
            torch.testing.assert_close(x[key], y[key], rtol=0, atol=0)
    assert sum(reads) <= read_whole - 12  # the head's windows were not read
    assert indices(resumed).size == 60  # only the next iteration starts late
