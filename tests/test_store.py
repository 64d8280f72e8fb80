import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from synthgen.errors import (
    ConfigError,
    IncompleteShardError,
    StoreError,
    StoreExistsError,
    StoreFormatError,
    StoreNotFoundError,
)
from synthgen.schemas import CAMUS
from synthgen.schemas.store_layout import ATTR_KEY, Intensity, MetaField, StoreAttrs, StoreLayout
from synthgen.storage.store import StoreReader, StoreWriter, store_exists

META = (MetaField("seed", "uint64"), MetaField("params", "float32", (3,)))


def _layout(n=10, shape=(8, 8), dtype="uint8", shard=4):
    return StoreLayout(n=n, image_shape=shape, image_dtype=dtype, shard_size=shard, meta=META)


def _shard_data(layout, k):
    start, stop = layout.shard_bounds(k)
    n = stop - start
    rng = np.random.default_rng(k)
    images = (rng.random((n, *layout.image_shape)) * 200).astype(layout.image_dtype)
    labels = rng.integers(0, 4, (n, *layout.label_shape), dtype=np.uint8)
    meta = {"seed": np.arange(start, stop, dtype=np.uint64), "params": rng.random((n, 3), dtype=np.float32)}
    return images, labels, meta


def _write(url, layout, shards=None, complete=True):
    writer = StoreWriter.create(url, StoreAttrs(layout, CAMUS, Intensity.for_dtype(layout.image_dtype)))
    written = {}
    for k in range(layout.num_shards) if shards is None else shards:
        written[k] = _shard_data(layout, k)
        writer.write_shard(k, *written[k])
        if complete:
            writer.mark_complete([k])
    return writer, written


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float16", "float32"])
@pytest.mark.parametrize("shape", [(8, 8), (3, 8, 6)])
def test_round_trip_keeps_dtype_and_values(tmp_path, dtype, shape):
    layout = _layout(shape=shape, dtype=dtype)
    _, written = _write(str(tmp_path / "s.zarr"), layout)
    reader = StoreReader(str(tmp_path / "s.zarr"))
    assert reader.attrs.is_complete and reader.num_available == 10
    for k, (images, labels, meta) in written.items():
        got_images, got_labels = reader.read_shard(k)
        assert got_images.dtype == np.dtype(dtype) and got_labels.dtype == np.uint8
        np.testing.assert_array_equal(got_images, images)
        np.testing.assert_array_equal(got_labels, labels)
        np.testing.assert_array_equal(reader.read_meta("params", *layout.shard_bounds(k)), meta["params"])
    image, _ = reader.read_sample(9)
    np.testing.assert_array_equal(image, written[2][0][1])
    images, _ = reader.read_block(3, 6)  # crosses a shard boundary
    np.testing.assert_array_equal(images[1:], written[1][0][:2])


def test_memory_url_round_trip():
    url = "memory://synthgen-test/s.zarr"
    _, written = _write(url, _layout())
    assert store_exists(url)
    np.testing.assert_array_equal(StoreReader(url).read_shard(1)[1], written[1][1])


def test_incomplete_shards_are_never_served(tmp_path):
    url = str(tmp_path / "s.zarr")
    writer, _ = _write(url, _layout(), shards=[0, 1, 2], complete=False)
    writer.mark_complete([0, 2])
    reader = StoreReader(url)
    assert reader.complete_shards == (0, 2) and reader.num_available == 6
    assert reader.available_indices().tolist() == [0, 1, 2, 3, 8, 9]
    with pytest.raises(IncompleteShardError, match=r"shard\(s\) \[1\] that are not complete"):
        reader.read_sample(5)
    with pytest.raises(IncompleteShardError):
        reader.read_block(2, 9)
    assert [k for k, _, _ in reader.iter_shards()] == [0, 2]


def test_store_is_readable_without_synthgen(tmp_path):
    url = str(tmp_path / "s.zarr")
    _write(url, _layout())
    root = zarr.open_group(url, mode="r")
    attrs = root.attrs[ATTR_KEY]
    assert attrs["format_version"] == 1 and attrs["complete_shards"] == [0, 1, 2]
    assert attrs["label_schema"]["classes"][0] == {"name": "lv_cavity", "value": 1, "color": [220, 50, 47]}
    assert root["images"].shape == (10, 8, 8) and root["labels"].dtype == np.uint8
    assert root["images"].shards == (4, 8, 8) and root["images"].chunks == (1, 8, 8)
    np.testing.assert_array_equal(root["meta/seed"][:], np.arange(10))
    json.dumps(dict(root.attrs))  # plain JSON


def test_existing_output_is_refused(tmp_path):
    url = str(tmp_path / "s.zarr")
    _write(url, _layout())
    with pytest.raises(StoreExistsError, match="already exists"):
        StoreWriter.create(url, StoreAttrs(_layout(), CAMUS))
    StoreWriter.create(url, StoreAttrs(_layout(), CAMUS), overwrite=True)
    assert StoreReader(url).num_available == 0


def test_open_errors(tmp_path):
    with pytest.raises(StoreNotFoundError):
        StoreReader(str(tmp_path / "nothing.zarr"))
    plain = str(tmp_path / "plain.zarr")
    zarr.open_group(plain, mode="w")
    with pytest.raises(StoreFormatError, match="not a synthgen store"):
        StoreReader(plain)
    url = str(tmp_path / "s.zarr")
    _write(url, _layout())
    group = zarr.open_group(url, mode="r+")
    group.attrs[ATTR_KEY] = group.attrs[ATTR_KEY] | {"format_version": 99}
    with pytest.raises(StoreFormatError, match=r"format version 1 .* Got 99"):
        StoreReader(url)


def test_write_shard_checks_shapes_and_meta(tmp_path):
    layout = _layout()
    writer, _ = _write(str(tmp_path / "s.zarr"), layout, shards=[])
    images, labels, meta = _shard_data(layout, 0)
    with pytest.raises(StoreError, match="Expected labels of shard 0"):
        writer.write_shard(0, images, labels.astype(np.int32), meta)
    with pytest.raises(StoreError, match="Missing \\['seed'\\]"):
        writer.write_shard(0, images, labels, {"params": meta["params"]})
    with pytest.raises(IndexError):
        writer.write_shard(3, images, labels, meta)


def test_layout_validation():
    with pytest.raises(ConfigError, match="multiple of the chunk size"):
        StoreLayout(n=10, image_shape=(8, 8), shard_size=6, chunk_size=4)
    with pytest.raises(ConfigError, match="image dtype"):
        StoreLayout(n=10, image_shape=(8, 8), image_dtype="int8")


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 10_000),
    shard=st.integers(1, 512),
    shape=st.lists(st.integers(1, 512), min_size=2, max_size=3),
    dtype=st.sampled_from(["uint8", "uint16", "float16", "float32"]),
)
def test_attrs_round_trip_through_json(n, shard, shape, dtype):
    attrs = StoreAttrs(
        StoreLayout(n=n, image_shape=tuple(shape), image_dtype=dtype, shard_size=shard, meta=META),
        CAMUS,
        Intensity.for_dtype(dtype),
        spacing=(0.5, 0.5),
        provenance={"config": {"a": 1}},
        complete_shards=(0,),
    )
    assert StoreAttrs.from_dict(json.loads(json.dumps(attrs.to_dict()))) == attrs
    bounds = [attrs.layout.shard_bounds(k) for k in range(attrs.layout.num_shards)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))


def test_importing_leaves_the_codec_pipeline_alone_until_asked():
    code = (
        "import zarr\n"
        "before = zarr.config.get('codec_pipeline.path')\n"
        "import synthgen.storage.store\n"
        "from synthgen.storage import StoreReader, StoreStream, use_fast_codecs\n"
        "StoreReader, StoreStream\n"
        "assert zarr.config.get('codec_pipeline.path') == before, zarr.config.get('codec_pipeline.path')\n"
        "assert not synthgen.storage.store.fast_codecs_in_use()\n"
        "assert use_fast_codecs() == 'zarrs'\n"
        "assert zarr.config.get('codec_pipeline.path') == 'zarrs.ZarrsCodecPipeline'\n"
        "assert synthgen.storage.store.fast_codecs_in_use() and use_fast_codecs() == 'zarrs'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SYNTHGEN_CODEC_PIPELINE"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_the_python_pipeline_can_be_kept():
    code = (
        "import zarr\n"
        "from synthgen.storage import use_fast_codecs\n"
        "before = zarr.config.get('codec_pipeline.path')\n"
        "assert use_fast_codecs() == 'python'\n"
        "assert zarr.config.get('codec_pipeline.path') == before\n"
    )
    env = os.environ | {"SYNTHGEN_CODEC_PIPELINE": "python"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
