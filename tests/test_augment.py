"""The paired augmentation: one draw of parameters, the same warp for image and labels, replayable."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from synthgen.errors import ConfigError
from synthgen.trainers import (
    AugmentConfig,
    AugmentParams,
    GanAugment,
    SegAugment,
    apply,
    sample_params,
    seeded,
)

WARP = AugmentConfig(rotation=20, scale=0.1, shift=0.1)  # geometry only: colours stay exact


def quadrants(n: int = 6, size: int = 32) -> np.ndarray:
    """Label maps of four regions (values 1..4) split off-centre; outside the image is background (0)."""
    labels = np.empty((n, size, size), np.uint8)
    labels[:, :13, :19], labels[:, :13, 19:], labels[:, 13:, :19], labels[:, 13:, 19:] = 1, 2, 3, 4
    return labels


def colours(labels: np.ndarray) -> np.ndarray:
    """A two-channel image whose colour says the label: (k / 5, 1 - k / 5), 0 for background."""
    k = labels.astype(np.float32) / 5
    return np.stack([k, np.where(labels > 0, 1 - k, 0)], axis=1).astype(np.float32)


def misaligned(images: np.ndarray, labels: np.ndarray) -> int:
    """Pixels away from every boundary (3 x 3 neighbourhood of one label) whose colour is not their label's."""
    expected = colours(labels)
    inner = labels[:, 1:-1, 1:-1]
    uniform = np.ones(inner.shape, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            uniform &= (
                labels[:, 1 + dy : labels.shape[1] - 1 + dy, 1 + dx : labels.shape[2] - 1 + dx] == inner
            )
    wrong = np.abs(images - expected).max(axis=1)[:, 1:-1, 1:-1] > 1e-5
    assert uniform.mean() > 0.5, "too few pixels away from boundaries to check"
    return int((wrong & uniform).sum())


def test_same_params_keep_image_and_labels_aligned():
    labels = quadrants()
    images = colours(labels)
    params = sample_params(np.random.default_rng(1), len(labels), WARP)
    x, y = apply(images, labels, params)
    assert not np.array_equal(y, labels), "the warp changed nothing: the test would not see a misalignment"
    assert misaligned(x, y) == 0
    # the check can fail: the image warped with other parameters than its labels is caught
    other = sample_params(np.random.default_rng(2), len(labels), WARP)
    x_other, _ = apply(images, labels, other)
    assert misaligned(x_other, y) > 0


def test_sample_params_is_reproducible_from_the_seed():
    a = sample_params(np.random.default_rng(7), 5, SegAugment())
    b = sample_params(np.random.default_rng(7), 5, SegAugment())
    c = sample_params(np.random.default_rng(8), 5, SegAugment())
    assert a.to_dict() == b.to_dict() and a.to_dict() != c.to_dict()
    # a torch.Generator (the GAN trainer's checkpointed stream) replays from its saved state
    gen = seeded(0, 1)
    state = gen.get_state()
    first = sample_params(gen, 5, GanAugment())
    gen.set_state(state)
    assert sample_params(gen, 5, GanAugment()).to_dict() == first.to_dict()
    assert sample_params(seeded(0, 1), 5, GanAugment()).to_dict() == first.to_dict()
    assert sample_params(gen, 5, GanAugment()).to_dict() != first.to_dict()


def test_sampled_params_stay_in_the_configured_ranges():
    cfg = SegAugment()
    p = sample_params(np.random.default_rng(0), 1000, cfg)
    assert np.abs(np.degrees(p.angle)).max() <= cfg.rotation
    assert np.abs(p.zoom - 1).max() <= cfg.scale and np.abs(p.shift).max() <= 2 * cfg.shift
    assert np.abs(np.log(p.gamma)).max() <= cfg.gamma and np.abs(p.contrast - 1).max() <= cfg.contrast
    assert np.abs(p.brightness).max() <= cfg.brightness
    still = sample_params(np.random.default_rng(0), 4, AugmentConfig())
    assert still.to_dict() == AugmentParams.identity(4).to_dict()


def test_labels_only_take_values_present_in_the_input():
    rng = np.random.default_rng(3)
    values = np.array([0, 3, 7, 200], np.uint8)
    labels = values[rng.integers(0, 4, (8, 24, 24))]
    images = rng.random((8, 24, 24), dtype=np.float32)
    x, y = apply(images, labels, sample_params(np.random.default_rng(4), 8, SegAugment(rotation=30)))
    assert y.dtype == np.uint8 and y.shape == labels.shape
    assert set(np.unique(y).tolist()) <= {0, 3, 7, 200}
    assert x.dtype == np.float32 and x.shape == images.shape and 0 <= x.min() and x.max() <= 1


def test_identity_changes_nothing_and_inputs_are_not_modified():
    labels = quadrants(3, 16)
    images = colours(labels)
    before = images.copy(), labels.copy()
    x, y = apply(images, labels, AugmentParams.identity(3))
    np.testing.assert_allclose(x, images, atol=1e-6)
    np.testing.assert_array_equal(y, labels)
    apply(images, labels, sample_params(np.random.default_rng(0), 3, SegAugment()))
    np.testing.assert_array_equal(images, before[0])
    np.testing.assert_array_equal(labels, before[1])


def test_tensors_and_arrays_give_the_same_result():
    labels = quadrants(4, 16)
    images = colours(labels)
    params = sample_params(np.random.default_rng(5), 4, SegAugment())
    x, y = apply(images, labels, params)
    xt, yt = apply(torch.from_numpy(images), torch.from_numpy(labels).long(), params)
    assert isinstance(xt, torch.Tensor) and yt.dtype == torch.int64
    np.testing.assert_array_equal(xt.numpy(), x)
    np.testing.assert_array_equal(yt.numpy(), y)


def test_configs_and_params_round_trip_through_json():
    assert SegAugment() == SegAugment(
        rotation=10, scale=0.1, shift=0.05, gamma=0.3, contrast=0.1, brightness=0.05
    )
    assert GanAugment().to_dict() == {
        "rotation": 5.0,
        "scale": 0.05,
        "shift": 0.03,
        "gamma": 0.0,
        "contrast": 0.0,
        "brightness": 0.0,
    }
    for cfg in (SegAugment(rotation=5), GanAugment(), AugmentConfig(shift=0.2)):
        assert type(cfg).from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    p = sample_params(np.random.default_rng(0), 3, SegAugment())
    again = AugmentParams.from_dict(json.loads(json.dumps(p.to_dict())))
    labels = quadrants(3, 16)
    for a, b in zip(apply(colours(labels), labels, p), apply(colours(labels), labels, again), strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_input_is_an_error():
    with pytest.raises(ConfigError, match=r"Expected augmentation rotation in \[0.0, 180.0\]. Got -1.0"):
        SegAugment(rotation=-1)
    with pytest.raises(ConfigError, match="Unknown key"):
        SegAugment.from_dict({"rotate": 3})
    with pytest.raises(ConfigError, match=r"numpy\.random\.Generator or a torch\.Generator\. Got int"):
        sample_params(0, 3, SegAugment())  # type: ignore[arg-type]
    labels = quadrants(3, 16)
    with pytest.raises(ConfigError, match="integer label maps"):
        apply(colours(labels), labels.astype(np.float32), AugmentParams.identity(3))
    with pytest.raises(ConfigError, match=r"parameters for 3 samples\. Got 2"):
        apply(colours(labels), labels, AugmentParams.identity(2))
    with pytest.raises(ConfigError, match=r"augmentation shift of shape \(2, 2\)"):
        AugmentParams(np.zeros(2), np.ones(2), np.zeros(2), np.ones(2), np.ones(2), np.zeros(2))
