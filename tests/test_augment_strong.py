"""The strong augmentation (nnU-Net's set) and train-seg's levels: replayable, aligned, each part does its job."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers.seg import TINY_MODEL, make_seg_store, tiny_train_config

import synthgen.evaluation
import synthgen.trainers
from synthgen.cli import cli
from synthgen.errors import ConfigError
from synthgen.trainers import (
    SegAugment,
    SegTrainConfig,
    StrongAugment,
    StrongParams,
    apply,
    augment_from_dict,
    augment_to_dict,
    sample_params,
    seg_augment,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")

# every probability zero: the identity, and a base to switch on one transform at a time
NOTHING = StrongAugment(
    **{name: 0.0 for name in StrongAugment().to_dict() if name.startswith("p_")}  # type: ignore[arg-type]
)
GEOMETRY = StrongAugment(
    **NOTHING.to_dict() | {"p_rotation": 1, "p_zoom": 1, "p_elastic": 1, "p_mirror": 0.5}
)
ONE_EACH = {  # one transform always on
    name: StrongAugment(**NOTHING.to_dict() | {f"p_{name}": 1.0})
    for name in (
        "rotation",
        "zoom",
        "elastic",
        "mirror",
        "noise",
        "blur",
        "brightness",
        "contrast",
        "low_res",
    )
} | {"gamma": StrongAugment(**NOTHING.to_dict() | {"p_gamma": 1.0})}


def squares(n: int = 8, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """An off-centre labelled square (value 2) and an image bright (0.9) exactly there, dim (0.1) elsewhere."""
    labels = np.zeros((n, size, size), np.uint8)
    labels[:, 5:17, 8:22] = 2
    images = np.where(labels == 2, 0.9, 0.1).astype(np.float32)
    return images, labels


def checkerboard(n: int = 8, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """High-frequency images (what blur and resolution loss remove) with random labels."""
    yy, xx = np.mgrid[:size, :size]
    images = np.broadcast_to(((yy + xx) % 2) * 0.6 + 0.2, (n, size, size)).astype(np.float32)
    labels = np.random.default_rng(0).integers(0, 4, (n, size, size)).astype(np.uint8)
    return images, labels


def test_params_are_drawn_per_sample_from_the_seed_and_replay():
    a = sample_params(np.random.default_rng(7), 6, StrongAugment())
    b = sample_params(np.random.default_rng(7), 6, StrongAugment())
    c = sample_params(np.random.default_rng(8), 6, StrongAugment())
    assert isinstance(a, StrongParams) and a.to_dict() == b.to_dict() and a.to_dict() != c.to_dict()
    # each sample has its own draws: no two samples share their noise or elastic field
    assert len(set(a.noise_seed.tolist())) == 6 and len(set(a.elastic_seed.tolist())) == 6
    # the same parameters give the same bytes, also after a JSON round trip (noise and elastic included)
    everything = StrongAugment(**{k: 1.0 for k in NOTHING.to_dict() if k.startswith("p_")})  # type: ignore[arg-type]
    p = sample_params(np.random.default_rng(3), 4, everything)
    again = StrongParams.from_dict(json.loads(json.dumps(p.to_dict())))
    images, labels = squares(4)
    for x, y in zip(apply(images, labels, p), apply(images, labels, again), strict=True):
        np.testing.assert_array_equal(x, y)
    x1, y1 = everything(images, labels, np.random.default_rng(3))  # the loader's hook: draw, then apply
    np.testing.assert_array_equal(x1, apply(images, labels, p)[0])
    np.testing.assert_array_equal(y1, apply(images, labels, p)[1])


def test_image_and_labels_get_the_same_geometric_transform():
    images, labels = squares()
    params = sample_params(np.random.default_rng(1), len(labels), GEOMETRY)
    x, y = apply(images, labels, params)
    assert (y != labels).any(axis=(1, 2)).all(), "every sample moved: the check below can see a misalignment"
    bright, labelled = x > 0.5, y == 2
    assert labelled.sum(axis=(1, 2)).min() > 40, "the square stayed (mostly) inside the image"
    # only pixels on the square's edge may disagree (bilinear image against nearest labels)
    assert ((bright ^ labelled).sum(axis=(1, 2)) <= 0.25 * labelled.sum(axis=(1, 2))).all()
    # the check can fail: an image moved by other parameters than its labels is caught
    x_other, _ = apply(images, labels, sample_params(np.random.default_rng(2), len(labels), GEOMETRY))
    assert ((x_other > 0.5) ^ labelled).sum() > 2 * (bright ^ labelled).sum()


def test_labels_keep_only_their_values_and_the_image_its_range():
    rng = np.random.default_rng(3)
    values = np.array([0, 3, 7, 200], np.uint8)
    labels = values[rng.integers(0, 4, (8, 24, 24))]
    images = rng.random((8, 2, 24, 24), dtype=np.float32)  # two channels
    everything = StrongAugment(**{k: 1.0 for k in NOTHING.to_dict() if k.startswith("p_")})  # type: ignore[arg-type]
    before = images.copy(), labels.copy()
    x, y = apply(images, labels, sample_params(np.random.default_rng(4), 8, everything))
    assert y.dtype == np.uint8 and y.shape == labels.shape and set(np.unique(y).tolist()) <= {0, 3, 7, 200}
    assert x.dtype == np.float32 and x.shape == images.shape and 0 <= x.min() and x.max() <= 1
    np.testing.assert_array_equal(images, before[0])  # inputs untouched
    np.testing.assert_array_equal(labels, before[1])
    xt, yt = apply(
        torch.from_numpy(images),
        torch.from_numpy(labels).long(),
        sample_params(np.random.default_rng(4), 8, everything),
    )
    assert yt.dtype == torch.int64
    np.testing.assert_array_equal(xt.numpy(), x)
    np.testing.assert_array_equal(yt.numpy(), y)


def test_nothing_switched_on_changes_nothing():
    images, labels = checkerboard(4)
    for params in (sample_params(np.random.default_rng(0), 4, NOTHING), StrongParams.identity(4)):
        x, y = apply(images, labels, params)
        np.testing.assert_array_equal(x, images)
        np.testing.assert_array_equal(y, labels)


def test_geometric_transforms_move_image_and_labels():
    images, labels = squares(6)
    wide_elastic = StrongAugment(**ONE_EACH["elastic"].to_dict() | {"elastic": 0.2})
    for name, cfg in (
        ("rotation", ONE_EACH["rotation"]),
        ("zoom", ONE_EACH["zoom"]),
        ("elastic", wide_elastic),
    ):
        params = sample_params(np.random.default_rng(5), 6, cfg)
        x, y = apply(images, labels, params)
        # every sample whose draw is not tiny: over 3 degrees, 5% zoom, up to 5% of the side displaced
        strength = {
            "rotation": np.degrees(np.abs(params.angle)) / 3,
            "zoom": np.abs(np.log(params.zoom)) / 0.05,
            "elastic": params.elastic / 0.05,
        }
        big = strength[name] > 1
        assert big.sum() >= 4, name
        assert (y != labels).any(axis=(1, 2))[big].all(), name
        assert (np.abs(x - images) > 0.1).any(axis=(1, 2))[big].all(), name
    # mirroring is an exact flip of both, along the drawn axes
    half = StrongAugment(**NOTHING.to_dict() | {"p_mirror": 0.5})
    params = sample_params(np.random.default_rng(6), 16, half)
    images, labels = squares(16)
    x, y = apply(images, labels, params)
    assert 0 < params.flip.sum() < 32
    for i, (rows, cols) in enumerate(params.flip):
        axes = [a for a, on in ((0, rows), (1, cols)) if on]
        np.testing.assert_array_equal(y[i], np.flip(labels[i], axes) if axes else labels[i])
        np.testing.assert_array_equal(x[i], np.flip(images[i], axes) if axes else images[i])


def test_intensity_transforms_change_the_image_alone():
    images, labels = checkerboard(6)
    hf = np.abs(np.diff(images, axis=-1)).mean()  # high-frequency content
    for name in ("noise", "blur", "brightness", "contrast", "low_res", "gamma"):
        params = sample_params(np.random.default_rng(7), 6, ONE_EACH[name])
        x, y = apply(images, labels, params)
        np.testing.assert_array_equal(y, labels)
        assert (np.abs(x - images).max(axis=(1, 2)) > 1e-3).all(), name
        if name in ("blur", "low_res"):
            assert (np.abs(np.diff(x, axis=-1)).mean(axis=(1, 2)) < 0.8 * hf).all(), name
        if name == "noise":
            np.testing.assert_allclose((x - images).std(axis=(1, 2)), params.noise, rtol=0.15)
        if name == "gamma":
            np.testing.assert_allclose(x, images ** params.gamma[:, None, None].astype(np.float32), rtol=1e-5)
        if name == "brightness":
            np.testing.assert_allclose(x, images * params.brightness[:, None, None], rtol=1e-5)
    inverted = StrongAugment(**NOTHING.to_dict() | {"p_gamma_inverted": 1.0})
    params = sample_params(np.random.default_rng(8), 6, inverted)
    x, _ = apply(images, labels, params)
    expected = 1 - (1 - images) ** params.gamma_inverted[:, None, None]
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-6)


def test_each_transform_is_on_with_its_configured_probability():
    cfg = StrongAugment()
    p = sample_params(np.random.default_rng(0), 20000, cfg)
    rates = {
        "rotation": (p.angle != 0, cfg.p_rotation),
        "zoom": (p.zoom != 1, cfg.p_zoom),
        "elastic": (p.elastic > 0, cfg.p_elastic),
        "mirror": (p.flip[:, 1], cfg.p_mirror),
        "noise": (p.noise > 0, cfg.p_noise),
        "blur": (p.blur > 0, cfg.p_blur),
        "brightness": (p.brightness != 1, cfg.p_brightness),
        "contrast": (p.contrast != 1, cfg.p_contrast),
        "low_res": (p.low_res != 1, cfg.p_low_res),
        "gamma": (p.gamma != 1, cfg.p_gamma),
        "gamma_inverted": (p.gamma_inverted != 1, cfg.p_gamma_inverted),
    }
    for name, (on, want) in rates.items():
        assert abs(on.mean() - want) < 0.015, (name, on.mean(), want)
    # and within the configured ranges
    assert np.abs(np.degrees(p.angle)).max() <= 180 and np.degrees(p.angle).min() < -170
    assert cfg.zoom[0] <= p.zoom.min() and p.zoom.max() <= cfg.zoom[1]
    on = p.gamma != 1
    assert cfg.gamma[0] <= p.gamma[on].min() and p.gamma[on].max() <= cfg.gamma[1]
    assert p.noise.max() <= cfg.noise and p.elastic.max() <= cfg.elastic
    narrow = sample_params(np.random.default_rng(0), 2000, StrongAugment(rotation=15, p_rotation=1))
    assert np.abs(np.degrees(narrow.angle)).max() <= 15 and (narrow.angle != 0).all()


def test_light_level_is_the_previous_behaviour():
    """The light level is the old SegAugment, drawing and applying what it did before the levels (golden
    values from the code path before this change)."""
    assert seg_augment("light") == SegAugment()
    labels = np.zeros((3, 24, 24), np.uint8)
    labels[:, 4:14, 6:18], labels[:, 14:20, 3:12] = 1, 2
    images = (labels * 0.3 + np.linspace(0, 0.2, 24)[None, None, :]).astype(np.float32)
    params = sample_params(np.random.default_rng(2024), 3, seg_augment("light"))
    np.testing.assert_allclose(
        params.angle, [0.061376715519206544, -0.1114135068989743, -0.17291687481396653]
    )
    np.testing.assert_allclose(params.gamma, [1.3464631414804904, 1.0725988209210493, 1.0598139989333695])
    x, y = seg_augment("light")(images, labels, np.random.default_rng(2024))
    assert np.bincount(y.ravel()).tolist() == [1237, 337, 154]
    np.testing.assert_allclose(x.sum((1, 2)), [53.5585, 102.0235, 95.6624], atol=2e-3)
    np.testing.assert_allclose(x[:, 12, 12], [0.22855, 0.34949, 0.35061], atol=2e-5)


def test_levels_round_trip_and_the_spec_records_the_level():
    for level, kind in (("none", type(None)), ("light", SegAugment), ("strong", StrongAugment)):
        augment = seg_augment(level)
        assert isinstance(augment, kind)
        recorded = json.loads(json.dumps(augment_to_dict(augment)))
        assert recorded["level"] == level and augment_from_dict(recorded) == augment
        cfg = tiny_train_config("a.zarr", "v.zarr", "out", augment=augment)
        assert cfg.to_dict()["augment"]["level"] == level
        assert SegTrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    custom = StrongAugment(rotation=30, p_elastic=0)
    assert augment_from_dict(augment_to_dict(custom)) == custom and augment_to_dict(custom)["rotation"] == 30
    # train-seg's default is strong; configs written before levels were recorded still load
    assert isinstance(SegTrainConfig(train="a", val="b", out_dir="c").augment, StrongAugment)
    assert augment_from_dict(None) is None and augment_from_dict(SegAugment().to_dict()) == SegAugment()
    with pytest.raises(
        ConfigError, match=r"augmentation level in \['none', 'light', 'strong'\]. Got 'heavy'"
    ):
        seg_augment("heavy")
    with pytest.raises(ConfigError, match=r"augmentation p_noise in \[0.0, 1.0\]. Got 2.0"):
        StrongAugment(p_noise=2)
    with pytest.raises(ConfigError, match=r"augmentation zoom = \[lo, hi\]"):
        StrongAugment(zoom=(1.5, 0.5))
    with pytest.raises(ConfigError, match="Unknown key"):
        augment_from_dict({"level": "strong", "rotate": 3})
    with pytest.raises(ConfigError, match=r"SegAugment, a StrongAugment or None\. Got str"):
        tiny_train_config("a", "b", "c", augment="strong")


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_cli_levels_and_defaults(tmp_path, monkeypatch):
    seen = []

    def fake_train_seg(config, **kwargs):
        seen.append(config.augment)
        raise SystemExit(0)

    def fake_run_utility(config, **kwargs):
        seen.append(config.train.augment)
        raise SystemExit(0)

    monkeypatch.setattr(synthgen.trainers, "train_seg", fake_train_seg)
    monkeypatch.setattr(synthgen.evaluation, "run_utility", fake_run_utility)
    base = ["train-seg", "t.zarr", tmp_path / "o", "--val", "v.zarr", "--no-progress"]
    for extra, want in (
        ([], StrongAugment()),
        (["--augment", "strong"], StrongAugment()),
        (["--augment", "light"], SegAugment()),
        (["--augment", "none"], None),
        (["--augment", "--no-progress"], SegAugment()),  # the old flag: light
        (["--no-augment"], None),
    ):
        result = run_cli(*base, *extra)
        assert result.exit_code == 0, result.output
        assert seen.pop() == want, extra
    # evaluate utility keeps the light augmentation of its published table unless told otherwise
    for extra, want in (([], SegAugment()), (["--augment", "strong"], StrongAugment())):
        assert run_cli("evaluate", "utility", "r.zarr", tmp_path / "u", *extra).exit_code == 0
        assert seen.pop() == want
    bogus = run_cli(*base, "--augment", "bogus")
    assert bogus.exit_code == 2
    lines = bogus.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("synthgen: error: ") and "bogus" in lines[0], lines
    both = run_cli(*base, "--augment", "strong", "--no-augment")
    assert both.exit_code == 2 and "--no-augment" in both.output


def test_cli_trains_with_strong_augmentation_and_records_it(tmp_path):
    train = make_seg_store(str(tmp_path / "train.zarr"), n=16)
    val = make_seg_store(str(tmp_path / "val.zarr"), n=8, seed=1)
    args = ["train-seg", train, tmp_path / "run", "--val", val, "--augment", "strong", "--steps", 5]
    args += ["--width", TINY_MODEL.width, "--depth", TINY_MODEL.depth, "--image-size", 32, 32]
    result = run_cli(*args, "--batch-size", 8, "--val-every", 5, "--device", "cpu", "--no-progress")
    assert result.exit_code == 0, result.output
    spec = json.loads((tmp_path / "run" / "best" / "segmenter.json").read_text())
    assert spec["train_config"]["augment"] == augment_to_dict(StrongAugment())
