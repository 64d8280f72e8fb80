"""Per-image intensity normalisation: the maths, the loader option, the segmenter's spec, and evaluate
seg applying what training did."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers.seg import TINY_MODEL, make_seg_store, tiny_train_config

from synthgen.cli import cli
from synthgen.errors import ConfigError
from synthgen.evaluation import segmentation as ev
from synthgen.models.segmenters import SegmenterSpec, load_segmenter
from synthgen.schemas import LabelClass, LabelSchema
from synthgen.schemas.store_layout import Intensity, StoreAttrs, StoreLayout
from synthgen.storage.loader import LoaderConfig, StoreStream, normalise_images
from synthgen.storage.store import StoreWriter
from synthgen.trainers.segmenter import SegTrainConfig, load_eval_set, train_seg

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_percentile_clips_each_image_to_its_own_percentiles_and_scales_to_unit():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(3, 2, 20, 30)).astype(np.float32) * [[[[1.0]], [[50.0]]]]
    images[1] += 1000  # another scanner's offset: each image stands alone
    out = normalise_images(images, "percentile")
    assert out.dtype == np.float32 and out.shape == images.shape
    for n in range(3):
        for c in range(2):
            x = images[n, c].astype(np.float64)
            lo, hi = np.percentile(x, [0.5, 99.5])
            want = (np.clip(x, lo, hi) - lo) / (hi - lo)
            np.testing.assert_allclose(out[n, c], want, atol=1e-6)
            assert out[n, c].min() == 0.0 and out[n, c].max() == pytest.approx(1.0)
    # clipping: the outermost 0.5% on each side land on 0 and 1 exactly, not beyond
    assert (out[0, 0] == 0).sum() >= 3 and (out[0, 0] == 1).sum() >= 3


def test_zscore_gives_zero_mean_unit_std_per_image_and_ignores_scale_and_offset():
    rng = np.random.default_rng(1)
    image = rng.gamma(2.0, 30.0, size=(16, 16)).astype(np.float32)
    batch = np.stack([image, image * 7 + 300, rng.normal(size=(16, 16)).astype(np.float32)])
    out = normalise_images(batch, "zscore")
    np.testing.assert_allclose(out.mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2)), 1, atol=1e-5)
    np.testing.assert_allclose(out[0], (image - image.mean()) / image.std(), atol=1e-5)
    np.testing.assert_allclose(out[1], out[0], atol=1e-4)  # the same anatomy on another scale


def test_constant_images_become_zeros_and_none_only_converts():
    flat = np.full((2, 4, 4), 0.7, np.float32)
    for method in ("percentile", "zscore"):
        np.testing.assert_array_equal(normalise_images(flat, method), 0)
    ints = np.arange(16, dtype=np.uint16).reshape(1, 4, 4)
    out = normalise_images(ints, "none")
    assert out.dtype == np.float32 and np.array_equal(out, ints)
    before = ints.copy()
    normalise_images(ints, "zscore")
    np.testing.assert_array_equal(ints, before)  # the input is never changed
    with pytest.raises(ConfigError, match=r"Expected normalise in \('none', 'percentile', 'zscore'\)"):
        normalise_images(flat, "minmax")


def _mr_store(url: str, n: int = 8) -> str:
    """uint16 images at very different scales per sample (one scanner's raw values, another's)."""
    rng = np.random.default_rng(2)
    labels = np.zeros((n, 16, 16), np.uint8)
    labels[:, 4:12, 4:12] = 1
    scale = np.where(np.arange(n) % 2 == 0, 100.0, 2000.0)[:, None, None]
    images = ((1 + labels + rng.random((n, 16, 16)) * 0.1) * scale).astype(np.uint16)
    layout = StoreLayout(n=n, image_shape=(16, 16), shard_size=8, image_dtype="uint16")
    schema = LabelSchema("one", (LabelClass("lv_cavity", 1),))
    writer = StoreWriter.create(url, StoreAttrs(layout, schema, Intensity.for_dtype("uint16")))
    writer.write_shard(0, images, labels)
    writer.mark_complete([0])
    return url


def test_loader_normalises_each_image_after_scaling_and_resizing(tmp_path):
    url = _mr_store(str(tmp_path / "mr.zarr"))
    plain = next(iter(StoreStream(url, LoaderConfig(batch_size=8, shuffle=False))))["image"].numpy()
    cfg = LoaderConfig(batch_size=8, shuffle=False, normalise="zscore")
    batch = next(iter(StoreStream(url, cfg, size=(32, 32))))
    images = batch["image"].numpy()
    assert images.shape == (8, 1, 32, 32)
    np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(images.std(axis=(1, 2, 3)), 1, atol=1e-4)
    assert plain[1].mean() > 10 * plain[0].mean()  # without it the two scanners differ twentyfold
    pct = next(iter(StoreStream(url, LoaderConfig(batch_size=8, shuffle=False, normalise="percentile"))))
    assert pct["image"].min() == 0 and pct["image"].max() == 1
    np.testing.assert_allclose(pct["image"][0], pct["image"][1], atol=0.2)
    with pytest.raises(ConfigError, match="Expected normalise in"):
        LoaderConfig(normalise="z")
    with pytest.raises(ConfigError, match="resize, augment or normalise"):
        StoreStream(url, LoaderConfig(as_float=False, normalise="zscore"))


def test_train_config_and_spec_round_trip_the_normalisation(tmp_path):
    cfg = tiny_train_config("a.zarr", "b.zarr", "out", normalise="percentile")
    back = SegTrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.normalise == "percentile"
    old = cfg.to_dict()
    del old["normalise"]  # a config written before the option
    assert SegTrainConfig.from_dict(old).normalise == "none"
    with pytest.raises(ConfigError, match="Expected normalise in"):
        tiny_train_config("a.zarr", "b.zarr", "out", normalise="minmax")
    schema = LabelSchema("one", (LabelClass("lv_cavity", 1),))
    spec = SegmenterSpec(TINY_MODEL, (32, 32), 1, schema, train_config=cfg.to_dict())
    again = SegmenterSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert ev.trained_normalisation(again) == "percentile"
    legacy = SegmenterSpec(TINY_MODEL, (32, 32), 1, schema, train_config=old)
    assert ev.trained_normalisation(legacy) == "none"
    broken = SegmenterSpec(TINY_MODEL, (32, 32), 1, schema, train_config={"normalise": "max"})
    with pytest.raises(Exception, match="Expected a normalisation in"):
        ev.trained_normalisation(broken)


def test_train_seg_records_and_validates_with_the_normalisation(tmp_path):
    store = make_seg_store(str(tmp_path / "s.zarr"), n=16, shard_size=8)
    val = make_seg_store(str(tmp_path / "v.zarr"), n=8, seed=1, shard_size=8)
    cfg = tiny_train_config(store, val, str(tmp_path / "run"), steps=2, val_every=2, normalise="zscore")
    result = train_seg(cfg, progress=False)
    _, spec = load_segmenter(result.best)
    assert spec.train_config["normalise"] == "zscore" and ev.trained_normalisation(spec) == "zscore"
    images, _ = load_eval_set(val, spec.schema, (32, 32), 1, normalise="zscore")
    np.testing.assert_allclose(images.mean(dim=(1, 2, 3)), 0, atol=1e-5)
    raw, _ = load_eval_set(val, spec.schema, (32, 32), 1)
    assert float(raw.min()) >= 0 and not torch.allclose(raw, images)


class BrighterThanMean(torch.nn.Module):
    """A 'segmenter' of one class: foreground where a pixel is above 0, which after z-scoring means
    above the image's mean, and without it means everywhere (images in [0, 1])."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x) + self.bias, x], dim=1)


@pytest.fixture
def zscored_checkpoint(tmp_path, monkeypatch):
    """A folder standing for a checkpoint trained with zscore; load_segmenter gives the model above."""
    schema = LabelSchema("one", (LabelClass("lv_cavity", 1),))
    spec = SegmenterSpec(TINY_MODEL, (16, 16), 1, schema, train_config={"normalise": "zscore"})
    monkeypatch.setattr(ev, "load_segmenter", lambda path: (BrighterThanMean().eval(), spec))
    folder = tmp_path / "ckpt"
    folder.mkdir()
    return str(folder)


def test_evaluate_applies_the_trained_normalisation_and_warns_on_another(zscored_checkpoint, tmp_path):
    store = _mr_store(str(tmp_path / "mr.zarr"))
    applied = ev.evaluate_segmentation(zscored_checkpoint, store, tmp_path / "out")
    assert applied.normalise == "zscore" and applied.normalise_warning == ""
    assert applied.summary["lv_cavity"]["dice"]["mean"] == 1.0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["normalise"] == {"applied": "zscore", "trained": "zscore", "warning": None}

    other = ev.evaluate_segmentation(zscored_checkpoint, store, tmp_path / "other", normalise="none")
    assert other.normalise == "none" and "trained with 'zscore'" in other.normalise_warning
    assert other.summary["lv_cavity"]["dice"]["mean"] < 0.5  # every pixel foreground: 64 of 256 right
    summary = json.loads((tmp_path / "other" / "summary.json").read_text())
    assert summary["normalise"]["applied"] == "none" and "zscore" in summary["normalise"]["warning"]

    cli_run = CliRunner().invoke(
        cli, ["evaluate", "seg", zscored_checkpoint, store, "--normalise", "percentile"]
    )
    assert cli_run.exit_code == 0, cli_run.output
    assert "synthgen: warning: Normalising images by 'percentile'" in cli_run.stderr
    assert "warning" not in cli_run.stdout and "| lv_cavity |" in cli_run.stdout
    quiet = CliRunner().invoke(cli, ["evaluate", "seg", zscored_checkpoint, store])
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr


def test_train_seg_and_evaluate_utility_take_normalise(tmp_path, monkeypatch):
    import synthgen.evaluation
    import synthgen.trainers

    seen = []

    def fake_train_seg(config, **kwargs):
        seen.append(config.normalise)
        raise SystemExit(0)

    def fake_run_utility(config, **kwargs):
        seen.append(config.train.normalise)
        raise SystemExit(0)

    monkeypatch.setattr(synthgen.trainers, "train_seg", fake_train_seg)
    monkeypatch.setattr(synthgen.evaluation, "run_utility", fake_run_utility)
    base = ["train-seg", "t.zarr", str(tmp_path / "o"), "--val", "v.zarr", "--no-progress"]
    for extra, want in (([], "none"), (["--normalise", "zscore"], "zscore")):
        assert CliRunner().invoke(cli, [*base, *extra]).exit_code == 0
        assert seen.pop() == want
    utility = ["evaluate", "utility", "r.zarr", str(tmp_path / "u"), "--normalise", "percentile"]
    assert CliRunner().invoke(cli, utility).exit_code == 0 and seen.pop() == "percentile"
    bad = CliRunner().invoke(cli, [*base, "--normalise", "minmax"])
    assert bad.exit_code == 2 and "minmax" in bad.stderr and not seen


def test_realism_features_see_images_normalised_as_the_segmenter_trained(tmp_path):
    from synthgen.evaluation.realism import store_features

    class Features(torch.nn.Module):
        def features(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :4]

    schema = LabelSchema("one", (LabelClass("lv_cavity", 1),))
    reader = ev.StoreReader(_mr_store(str(tmp_path / "mr.zarr")))
    indices = reader.available_indices()
    _, scaled, _ = next(ev.read_samples(reader, indices))  # what evaluation reads: images in [0, 1]
    for method in ("zscore", "none"):
        spec = SegmenterSpec(TINY_MODEL, (16, 16), 1, schema, train_config={"normalise": method})
        feats, _ = store_features(Features(), spec, reader, indices, 8)
        expected = ev.model_input(scaled, (16, 16), method).flatten(1)[:, :4].double().numpy()
        np.testing.assert_allclose(feats, expected, rtol=1e-6)
    assert not np.allclose(*[ev.model_input(scaled, (16, 16), m).numpy() for m in ("zscore", "none")])
