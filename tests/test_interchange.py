"""The store for the field's tools: named dimensions (xarray), dask arrays chunked by shard, open_store,
the map-style Dataset (MONAI transforms and DataLoader), the loader's MONAI label option and the public
API of ``import synthgen``."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers.data import pairs_folder

import synthgen
from synthgen.cli import cli
from synthgen.engine import RunOptions, build_dataset
from synthgen.errors import ConfigError, IncompleteShardError
from synthgen.schemas import CAMUS, Intensity, MetaField, StoreAttrs, StoreLayout, load_build_config
from synthgen.storage import (
    LoaderConfig,
    StoreDataset,
    StoreFiles,
    StoreReader,
    StoreStream,
    StoreWriter,
    dimension_names,
    open_store,
)

SIZE = 8


def write_store(url: str, *, n: int = 20, shard: int = 8, channels: int = 1, complete=None) -> str:
    """Image pixels hold their sample index plus x (plus 100 per channel) and label pixels that sum
    mod 4, so tests can check what they got; meta/patient is i // 3 and meta/affine (N, 3) holds i, i+1, i+2."""
    shape = (SIZE, SIZE) if channels == 1 else (channels, SIZE, SIZE)
    meta = (MetaField("patient", "int32"), MetaField("affine", "float64", (3,)))
    layout = StoreLayout(n=n, image_shape=shape, shard_size=shard, meta=meta)
    writer = StoreWriter.create(url, StoreAttrs(layout, CAMUS, Intensity.for_dtype("uint8")))
    for k in range(layout.num_shards):
        a, b = layout.shard_bounds(k)
        idx = np.arange(a, b)
        plane = idx[:, None, None] + np.arange(SIZE)[None, None, :]  # (n, 1, W): varies along x
        labels = np.broadcast_to(plane % 4, (b - a, SIZE, SIZE)).astype(np.uint8)
        images = np.broadcast_to(plane, (b - a, SIZE, SIZE))
        if channels > 1:
            images = images[:, None] + 100 * np.arange(channels)[None, :, None, None]
        images = images.astype(np.uint8)
        extra = {"patient": (idx // 3).astype(np.int32), "affine": idx[:, None] + np.arange(3.0)}
        writer.write_shard(k, np.ascontiguousarray(images), np.ascontiguousarray(labels), extra)
    writer.mark_complete(range(layout.num_shards) if complete is None else complete)
    return url


def array_dims(url: str) -> dict[str, tuple[str, ...] | None]:
    """The ``dimension_names`` each array's zarr.json records."""
    layout = StoreReader(url).layout
    files = StoreFiles(url)
    return {
        name: tuple(json.loads(files.read(f"{name}/zarr.json")).get("dimension_names") or ()) or None
        for name in dimension_names(layout)
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> str:
    """A store written by the build: 16 samples of 32 x 32 in shards of 8, the randomised generator."""
    out = str(tmp_path_factory.mktemp("build") / "b.zarr")
    config = load_build_config(
        None, {"n": 16, "image_size": [32, 32], "shard_size": 8, "generator": "randomised", "batch_size": 8}
    )
    build_dataset(out, config, RunOptions(scheduler="sync", progress=False))
    return out


# -- named dimensions -------------------------------------------------------------------------------
def test_built_store_names_every_dimension_and_xarray_opens_it(built):
    xr = pytest.importorskip("xarray", reason="xarray is a dev dependency: pip install -e '.[dev]'")
    dims = array_dims(built)
    assert dims["images"] == ("sample", "y", "x") and dims["labels"] == ("sample", "y", "x")
    assert dims["meta/seed"] == ("sample",) and dims["meta/affine"] == ("sample", "affine_param")
    assert all(d is not None and d[0] == "sample" for d in dims.values()), dims

    root = xr.open_zarr(built, consolidated=False)
    assert root["images"].dims == ("sample", "y", "x") and root["labels"].dims == ("sample", "y", "x")
    assert dict(root.sizes) == {"sample": 16, "y": 32, "x": 32}
    np.testing.assert_array_equal(root["labels"].values, StoreReader(built).read_labels(0, 16))
    meta = xr.open_zarr(built, group="meta", consolidated=False)
    reader = StoreReader(built)
    assert set(meta.data_vars) == {m.name for m in reader.layout.meta}
    np.testing.assert_array_equal(meta["affine"].values, reader.read_meta("affine"))
    tree = xr.open_datatree(built, engine="zarr", consolidated=False)
    assert tree["meta"]["affine"].dims == ("sample", "affine_param")
    assert tree["images"].dims == ("sample", "y", "x")


def test_ingested_and_multichannel_stores_name_their_dimensions(tmp_path):
    xr = pytest.importorskip("xarray", reason="xarray is a dev dependency: pip install -e '.[dev]'")
    src = pairs_folder(tmp_path / "src", n=4)
    out = str(tmp_path / "in.zarr")
    result = CliRunner().invoke(cli, ["ingest", str(src), out, "--schema", "camus"])
    assert result.exit_code == 0, result.output
    dims = array_dims(out)
    assert dims["labels"] == ("sample", "y", "x") and dims["meta/spacing"] == ("sample", "spacing_param")
    assert all(d is not None for d in dims.values()), dims
    tree = xr.open_datatree(out, engine="zarr", consolidated=False)
    assert tree["meta"]["patient"].dims == ("sample",) and tree["images"].sizes["sample"] == 4

    rgb = write_store(str(tmp_path / "rgb.zarr"), channels=3)
    assert array_dims(rgb)["images"] == ("sample", "channel", "y", "x")
    images = xr.open_zarr(rgb, consolidated=False)["images"]
    assert images.dims == ("sample", "channel", "y", "x") and images.shape == (20, 3, SIZE, SIZE)


def test_dimension_names_of_fields_with_several_axes():
    meta = (MetaField("grid", "float32", (2, 3)), MetaField("seed", "uint64"))
    names = dimension_names(StoreLayout(n=4, image_shape=(8, 8), shard_size=4, meta=meta))
    assert names["meta/grid"] == ("sample", "grid_param0", "grid_param1")
    assert names["meta/seed"] == ("sample",)


def test_store_without_dimension_names_still_reads(tmp_path):
    url = write_store(str(tmp_path / "old.zarr"))
    files = StoreFiles(url)
    for name in dimension_names(StoreReader(url).layout):  # as stores were written before
        doc = json.loads(files.read(f"{name}/zarr.json"))
        doc.pop("dimension_names")
        files.write(f"{name}/zarr.json", json.dumps(doc).encode())
    assert set(array_dims(url).values()) == {None}
    store = open_store(url)
    np.testing.assert_array_equal(store.to_dask("labels").compute(), StoreReader(url).read_labels(0, 20))
    assert StoreDataset(url)[19]["index"] == 19


# -- open_store and dask ----------------------------------------------------------------------------
def test_open_store_lists_only_complete_shards(tmp_path):
    url = write_store(str(tmp_path / "s.zarr"), complete=[0, 2])  # shards [0, 8), [8, 16), [16, 20)
    store = open_store(url)
    np.testing.assert_array_equal(store.indices, [*range(8), *range(16, 20)])
    assert store.complete_shards == (0, 2) and store.schema == CAMUS
    assert (store.intensity.low, store.intensity.high) == (0.0, 255.0)
    assert store.images.shape == (20, SIZE, SIZE) and set(store.meta) == {"patient", "affine"}
    np.testing.assert_array_equal(store.images[store.indices][:, 0, 0], store.indices)

    images = store.to_dask("images")
    assert images.chunks[0] == (8, 4) and images.shape == (12, SIZE, SIZE)
    np.testing.assert_array_equal(images.compute()[:, 0, 0], store.indices)
    assert len(StoreDataset(url)) == 12
    with pytest.raises(ConfigError, match="complete shards"):
        StoreDataset(url, indices=[3, 9])
    with pytest.raises(IncompleteShardError):
        store.reader.read_images(8, 9)


def test_dask_arrays_have_one_chunk_per_shard_and_equal_the_store(tmp_path):
    url = write_store(str(tmp_path / "s.zarr"), n=20, shard=8, channels=2)
    store = open_store(url)
    reader = StoreReader(url)
    for name, expected in {
        "images": reader.read_images(0, 20),
        "labels": reader.read_labels(0, 20),
        "meta/affine": reader.read_meta("affine"),
        "meta/patient": reader.read_meta("patient"),
    }.items():
        array = store.to_dask(name)
        assert array.chunks[0] == (8, 8, 4), name
        assert all(len(c) == 1 for c in array.chunks[1:]), name
        assert array.dtype == expected.dtype
        np.testing.assert_array_equal(array.compute(scheduler="sync"), expected, err_msg=name)
    assert store.to_dask("labels").name == open_store(url).to_dask("labels").name  # deterministic
    assert store.to_dask("labels").name != store.to_dask("images").name
    empty = open_store(write_store(str(tmp_path / "e.zarr"), complete=[]))
    assert empty.to_dask("images").shape == (0, SIZE, SIZE) and len(empty.indices) == 0
    with pytest.raises(KeyError, match="Expected an array"):
        store.to_dask("meta/missing")


# -- the map-style Dataset --------------------------------------------------------------------------
def test_dataset_items_follow_the_documented_convention(tmp_path):
    url = write_store(str(tmp_path / "s.zarr"))
    ds = StoreDataset(url)
    assert len(ds) == 20 and ds.schema == CAMUS
    item = ds[13]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (1, SIZE, SIZE)
    assert item["label"].dtype == torch.int64 and item["label"].shape == (1, SIZE, SIZE)
    x = torch.arange(SIZE)
    torch.testing.assert_close(item["image"], ((13 + x) / 255).expand(1, SIZE, SIZE))
    assert (item["label"] == ((13 + x) % 4)).all() and item["index"] == 13 and item["patient"] == 13 // 3
    assert ds[-1]["index"] == 19
    with pytest.raises(IndexError, match=r"\[0, 20\)"):
        ds[20]

    subset = StoreDataset(url, indices=[17, 2, 5], transform=lambda d: {**d, "twice": 2 * d["index"]})
    assert subset.indices.tolist() == [2, 5, 17] and subset[2]["twice"] == 34
    again = pickle.loads(pickle.dumps(ds))  # as a spawned DataLoader worker gets it
    torch.testing.assert_close(again[4]["image"], ds[4]["image"])

    rgb = StoreDataset(write_store(str(tmp_path / "rgb.zarr"), channels=3))[7]["image"]
    assert rgb.shape == (3, SIZE, SIZE)
    torch.testing.assert_close(rgb[:, 0, 0], torch.tensor([7, 107, 207]) / 255)


def test_dataset_with_monai_transforms_and_dataloader(tmp_path):
    monai = pytest.importorskip("monai", reason="monai is a dev dependency: pip install -e '.[dev]'")
    from monai.data import DataLoader
    from monai.transforms import Compose, RandFlipd

    url = write_store(str(tmp_path / "s.zarr"))
    plain = StoreDataset(url)
    flip = Compose([RandFlipd(keys=["image", "label"], prob=1.0, spatial_axis=1)])
    flipped = StoreDataset(url, transform=flip)
    item, ref = flipped[5], plain[5]  # images and labels vary along x, so the flip shows
    torch.testing.assert_close(torch.as_tensor(item["image"]), torch.flip(ref["image"], dims=[2]))
    assert torch.equal(torch.as_tensor(item["label"]), torch.flip(ref["label"], dims=[2]))
    assert not torch.equal(ref["label"], torch.flip(ref["label"], dims=[2]))

    loader = DataLoader(flipped, batch_size=8, shuffle=False, num_workers=0)
    batches = list(loader)
    assert len(batches) == 3 and monai.__version__
    batch = batches[0]
    assert batch["image"].shape == (8, 1, SIZE, SIZE) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (8, 1, SIZE, SIZE) and batch["label"].dtype == torch.int64
    assert batch["index"].tolist() == list(range(8)) and batch["patient"].tolist() == [
        i // 3 for i in range(8)
    ]


def test_loader_gives_channel_first_int64_labels_on_request(tmp_path):
    url = write_store(str(tmp_path / "s.zarr"))
    plain = next(iter(StoreStream(url, LoaderConfig(batch_size=4, shuffle=False))))
    monai_style = next(
        iter(StoreStream(url, LoaderConfig(batch_size=4, shuffle=False, channel_first_labels=True)))
    )
    assert plain["label"].shape == (4, SIZE, SIZE) and plain["label"].dtype == torch.uint8
    assert monai_style["label"].shape == (4, 1, SIZE, SIZE) and monai_style["label"].dtype == torch.int64
    torch.testing.assert_close(monai_style["label"][:, 0], plain["label"].long())
    torch.testing.assert_close(monai_style["image"], plain["image"])


# -- the public API ---------------------------------------------------------------------------------
def test_public_api_resolves_and_import_synthgen_loads_no_torch():
    for name in synthgen.__all__:
        assert getattr(synthgen, name) is not None, name
    assert synthgen.open_store is open_store and synthgen.StoreDataset is StoreDataset
    assert synthgen.StoreStream is StoreStream
    with pytest.raises(AttributeError, match="has no attribute"):
        synthgen.not_a_public_name  # noqa: B018
    code = (
        "import sys\n"
        "import synthgen\n"
        "assert not {'torch', 'zarr', 'dask'} & set(sys.modules), 'import synthgen'\n"
        "synthgen.open_store, synthgen.StoreDataset, synthgen.build_dataset, synthgen.open_generator\n"
        "synthgen.BuildConfig, synthgen.load_build_config\n"
        "assert 'torch' not in sys.modules, 'resolving the torch-free names imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
