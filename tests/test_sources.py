"""Label sources: procedural, store and volume; configs, reproducibility, batching, pickling."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from helpers.data import disc_labels, real_data
from helpers.seg import make_seg_store

from synthgen.errors import ConfigError, LabelValueError
from synthgen.kernels import resize_labels
from synthgen.schemas import ACDC, CAMUS
from synthgen.schemas.store_layout import Intensity, StoreAttrs, StoreLayout
from synthgen.sources.gate import GateReport, check_batch
from synthgen.sources.label_sources import (
    ProceduralSourceConfig,
    StoreSourceConfig,
    VolumeSource,
    VolumeSourceConfig,
    source_config_from_dict,
    source_from_config,
)
from synthgen.storage.store import StoreWriter


@pytest.mark.parametrize(
    "config",
    [
        ProceduralSourceConfig("a2c"),
        StoreSourceConfig("memory://x", skip_empty=False),
        VolumeSourceConfig(("a.nii.gz", "b.npy"), spacing=(6.5, 1.0, 1.0), max_tilt=5.0),
    ],
)
def test_configs_round_trip_through_json(config):
    data = json.loads(json.dumps(config.to_dict()))
    assert data["kind"] == config.kind and source_config_from_dict(data) == config


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"kind": "shapes"}, "source.kind"),
        ({"kind": "procedural", "view": "plax"}, "source.view"),
        ({"kind": "procedural", "url": "x"}, "Unknown key"),
        ({"kind": "store"}, "source.url"),
        ({"kind": "volume", "url": "a", "urls": ["b"]}, "Got both"),
        ({"kind": "volume", "urls": []}, "at least one volume"),
        ({"kind": "volume", "url": "a", "max_tilt": 120}, "max_tilt"),
    ],
)
def test_bad_configs(data, match):
    with pytest.raises(ConfigError, match=match):
        source_config_from_dict(data)


def test_procedural_draws_are_per_sample_and_batch_independent():
    source = source_from_config({"kind": "procedural", "view": "apical"}, (64, 64))
    assert source.schema == CAMUS and source.params_size == len(source.param_names) == 20
    whole = source.draw_batch(7, [0, 1, 2, 3, 4, 5])
    parts = [source.draw_batch(7, [i]) for i in (4, 0, 5, 2, 3, 1)]
    for i, part in zip((4, 0, 5, 2, 3, 1), parts, strict=True):
        np.testing.assert_array_equal(part.labels[0], whole.labels[i])
        np.testing.assert_array_equal(part.params[0], whole.params[i])
    assert (whole.source_index == -1).all() and whole.labels.dtype == np.uint8
    # the engine's convention: sample i, attempt a draws from SeedSequence([seed, i, a])
    rng = np.random.default_rng(np.random.SeedSequence([7, 3, 0]))
    np.testing.assert_array_equal(source.draw(rng)[0], whole.labels[3])
    assert set(whole.params[:, 0]) <= {0.0, 1.0}  # the 2-chamber flag records the view drawn
    assert source.describe()["config"] == {"kind": "procedural", "view": "apical"}


@pytest.fixture
def label_store(tmp_path) -> str:
    url = str(tmp_path / "labels.zarr")
    layout = StoreLayout(n=6, image_shape=(32, 32), shard_size=4)
    writer = StoreWriter.create(url, StoreAttrs(layout, CAMUS, Intensity()))
    labels = disc_labels(6)
    labels[2] = 0  # one empty map
    writer.write_shard(0, np.zeros((4, 32, 32), np.uint8), labels[:4])
    writer.write_shard(1, np.zeros((2, 32, 32), np.uint8), labels[4:])
    writer.mark_complete([0, 1])
    np.save(str(tmp_path / "labels.npy"), labels)
    return url


def test_store_source_draws_stored_maps_with_replacement(label_store, tmp_path):
    stored = np.load(str(tmp_path / "labels.npy"))
    source = source_from_config({"kind": "store", "url": label_store}, (32, 32))
    assert source.schema == CAMUS and source.params_size == 0
    batch = source.draw_batch(0, range(40))
    assert set(batch.source_index.tolist()) == {0, 1, 3, 4, 5}  # every non-empty map, none empty
    for labels, index in zip(batch.labels, batch.source_index, strict=True):
        np.testing.assert_array_equal(labels, stored[index])
    keep_empty = source_from_config({"kind": "store", "url": label_store, "skip_empty": False}, (32, 32))
    assert 2 in keep_empty.draw_batch(0, range(40)).source_index


def test_store_source_resizes_and_pickles_without_its_cache(label_store, tmp_path):
    stored = np.load(str(tmp_path / "labels.npy"))
    source = source_from_config({"kind": "store", "url": label_store}, (64, 48))
    labels, index, params = source.draw(np.random.default_rng(0))
    assert labels.shape == (64, 48) and params.shape == (0,)
    np.testing.assert_array_equal(labels, resize_labels(stored[index], (64, 48)))
    clone = pickle.loads(pickle.dumps(source))
    assert getattr(clone, "_cache", None) is None
    np.testing.assert_array_equal(clone.draw(np.random.default_rng(0))[0], labels)


def _acdc_volume() -> np.ndarray:
    """(12, 40, 48) ACDC-valued volume: an LV ring (2 around 3) and an RV (1) on slices 2..9."""
    vol = np.zeros((12, 40, 48), np.uint8)
    yy, xx = np.mgrid[:40, :48]
    r2 = (yy - 20) ** 2 + (xx - 26) ** 2
    for z in range(2, 10):
        vol[z][(r2 < 100) & (xx < 18)] = 1
        vol[z][r2 < 64] = 2
        vol[z][r2 < 25] = 3
    return vol


def test_volume_source_standard_plane_is_the_central_slice():
    vol = _acdc_volume()
    flat = VolumeSourceConfig(("mem",), max_tilt=0, max_rotation=0, offset_fraction=0, max_shift=0)
    source = VolumeSource(flat, (40, 48), volumes=[vol])
    labels, index, params = source.draw(np.random.default_rng(0))
    np.testing.assert_array_equal(labels, vol[6])  # the labelled slices 2..9 centre on 5.5 -> 6
    assert index == 0 and params.tolist() == [0, 0, 0, 0, 0, 0]


def test_volume_source_random_planes():
    vol = _acdc_volume()
    source = VolumeSource(VolumeSourceConfig(("mem",), spacing=(2.0, 1.0, 1.0)), (40, 48), volumes=[vol])
    batch = source.draw_batch(1, range(30))
    assert set(np.unique(batch.labels)) <= {0, 1, 2, 3}
    assert np.abs(batch.params[:, :2]).max() <= 15 and np.abs(batch.params[:, 2]).max() <= 10
    assert len({x.tobytes() for x in batch.labels}) > 20
    report = GateReport.from_flags(check_batch(batch.labels, ACDC)[1], ACDC)
    assert report.pass_rate > 0.8, report.to_dict()
    clone = pickle.loads(pickle.dumps(source))  # in-memory volumes travel with the source
    np.testing.assert_array_equal(clone.draw_batch(1, [4]).labels[0], batch.labels[4])


def test_volume_source_reads_files_and_checks_values(tmp_path):
    path = str(tmp_path / "vol.npy")
    np.save(path, _acdc_volume())
    source = source_from_config({"kind": "volume", "url": path}, (32, 32))
    assert source.draw(np.random.default_rng(0))[0].shape == (32, 32)
    bad = _acdc_volume()
    bad[0, 0, 0] = 9
    with pytest.raises(LabelValueError, match="Label value 9"):
        VolumeSource(VolumeSourceConfig(("mem",)), (32, 32), volumes=[bad])
    with pytest.raises(ConfigError, match="labelled voxels"):
        VolumeSource(VolumeSourceConfig(("mem",)), (32, 32), volumes=[np.zeros((4, 8, 8), np.uint8)])


@pytest.mark.slow
def test_volume_source_slices_a_real_acdc_volume():
    files = sorted(real_data("acdc").glob("patient*/patient*_frame??_gt.nii.gz"))[:2]
    config = {"kind": "volume", "urls": [str(f) for f in files], "spacing": [6.5, 1.0, 1.0]}
    source = source_from_config(config, (128, 128))
    batch = source.draw_batch(0, range(40))
    assert set(batch.source_index.tolist()) == {0, 1}
    report = GateReport.from_flags(check_batch(batch.labels, ACDC)[1], ACDC)
    assert report.pass_rate > 0.7, report.to_dict()


def test_store_source_split_train_never_draws_a_held_out_test_patient(tmp_path):
    patients = np.repeat(np.arange(1, 13), 2)  # patient 10 is the held-out test tenth
    url = make_seg_store(str(tmp_path / "real.zarr"), n=24, patients=patients)
    config = {"kind": "store", "url": url, "split": "train"}
    drawn = source_from_config(config, (32, 32)).draw_batch(0, range(200)).source_index
    test_samples = set(np.flatnonzero(patients == 10).tolist())
    assert drawn.size == 200 and not test_samples & set(drawn.tolist())
    assert set(drawn.tolist()) == set(range(24)) - test_samples  # every other map is drawn
    everyone = source_from_config(config | {"split": "all"}, (32, 32)).draw_batch(0, range(200)).source_index
    assert test_samples <= set(everyone.tolist())
    assert StoreSourceConfig.from_dict(config).to_dict()["split"] == "train"
    assert "split" not in StoreSourceConfig.from_dict(config | {"split": "all"}).to_dict()  # old tokens hold
    with pytest.raises(ConfigError, match=r"source\.split"):
        StoreSourceConfig.from_dict(config | {"split": "test"})
    no_patients = make_seg_store(str(tmp_path / "synth.zarr"), n=8)
    with pytest.raises(Exception, match="patient"):
        source_from_config({"kind": "store", "url": no_patients, "split": "train"}, (32, 32)).draw_batch(
            0, [0]
        )
