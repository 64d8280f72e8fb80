"""The one label resize and the one image resize (synthgen.kernels.resize), against torch's
``interpolate`` as the reference (nearest-exact for labels, antialiased bilinear for images); the
spacing resamples and the centre pad or crop (compared with MONAI in test_ingest_geometry.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.data import disc_labels
from hypothesis import given, settings
from hypothesis import strategies as st

from synthgen.errors import KernelInputError
from synthgen.kernels import (
    pad_or_crop,
    resize_images,
    resize_labels,
    spacing_images,
    spacing_labels,
    spacing_shape,
)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 20),
    st.integers(1, 20),
    st.integers(1, 40),
    st.integers(1, 40),
    st.integers(0, 2**32 - 1),
)
def test_resize_labels_only_takes_existing_values(h, w, oh, ow, seed):
    labels = np.random.default_rng(seed).choice(np.array([0, 2, 5], np.uint8), (h, w))
    out = resize_labels(labels, (oh, ow))
    assert out.shape == (oh, ow) and out.dtype == np.uint8
    assert set(np.unique(out)) <= set(np.unique(labels))


def test_resize_identity_and_alignment():
    labels = disc_labels(1, 40, 40, seed=3)[0]
    image = (labels * 50 + np.random.default_rng(3).integers(0, 40, labels.shape)).astype(np.uint8)
    np.testing.assert_array_equal(resize_labels(labels, labels.shape), labels)
    np.testing.assert_array_equal(resize_images(image, image.shape), image)
    block = np.zeros((10, 10), np.uint8)
    block[2:6, 4:8] = 1
    up_l = resize_labels(block, (30, 30))
    ys, xs = np.nonzero(up_l)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (6, 17, 12, 23)
    stripe = np.zeros((10, 10), np.uint8)
    stripe[2:6] = 1
    up_i = resize_images(stripe * np.uint8(200), (30, 30))  # image and label edges fall on the same rows
    assert up_i.dtype == np.uint8
    inside = resize_labels(stripe, (30, 30)) == 1
    assert (up_i[inside] >= 100).all() and (up_i[~inside] <= 100).all()
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (4, 1))
    down = resize_images(ramp, (4, 16))
    assert down.dtype == np.float32 and np.all(np.diff(down[0]) > 0)
    assert resize_images(np.zeros((3, 8, 8), np.uint16), (4, 4)).shape == (3, 4, 4)


def test_resize_nearest_repeats_pixels():
    x = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.testing.assert_array_equal(resize_labels(x, (4, 6)), np.kron(x, np.ones((2, 2), np.uint8)))
    assert resize_labels(x, (2, 3)) is x


SIZES = [((224, 224), (128, 128)), ((64, 64), (200, 90)), ((216, 256), (64, 64)), ((37, 50), (37, 13))]


@pytest.mark.parametrize(("src", "dst"), SIZES)
def test_resize_images_matches_torch_antialiased_bilinear(src, dst):
    x = np.random.default_rng(0).random((3, 2, *src), dtype=np.float32)
    ours = resize_images(x, dst)
    ref = F.interpolate(
        torch.from_numpy(x), dst, mode="bilinear", antialias=True, align_corners=False
    ).numpy()
    assert ours.shape == (3, 2, *dst) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize(("src", "dst"), SIZES)
def test_resize_labels_matches_torch_nearest_exact(src, dst):
    labels = np.random.default_rng(1).integers(0, 4, (3, *src)).astype(np.uint8)
    ref = F.interpolate(torch.from_numpy(labels)[:, None], dst, mode="nearest-exact")[:, 0].numpy()
    np.testing.assert_array_equal(resize_labels(labels, dst), ref)


def test_resize_rounds_integer_images_and_rejects_bad_shapes():
    image = np.array([[0, 255], [255, 0]], np.uint8)
    out = resize_images(image, (1, 1))
    assert out.dtype == np.uint8 and out[0, 0] == 128  # 127.5 rounds to even
    with pytest.raises(KernelInputError):
        resize_images(np.zeros(4, np.float32), (2, 2))
    with pytest.raises(KernelInputError):
        resize_labels(np.zeros((4, 4), np.uint8), (0, 2))


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 20),
    st.integers(1, 20),
    st.sampled_from([0.3, 0.7, 1.0, 1.25, 2.5]),
    st.sampled_from([0.45, 1.0, 1.5, 3.0]),
    st.integers(0, 2**32 - 1),
)
def test_spacing_labels_only_takes_existing_values_on_the_images_grid(h, w, spacing, target, seed):
    rng = np.random.default_rng(seed)
    labels = rng.choice(np.array([0, 2, 5], np.uint8), (2, h, w))
    image = rng.integers(-300, 2000, (2, h, w)).astype(np.int16)
    out = spacing_labels(labels, (spacing, 1.0), (target, 1.0))
    resampled = spacing_images(image, (spacing, 1.0), (target, 1.0))
    assert out.shape == resampled.shape == (2, *spacing_shape((h, w), (spacing, 1.0), (target, 1.0)))
    assert out.dtype == np.uint8 and set(np.unique(out)) <= set(np.unique(labels))
    assert resampled.dtype == np.int16 and image.min() <= resampled.min() <= resampled.max() <= image.max()
    np.testing.assert_array_equal(out[:, 0], labels[:, 0])  # first pixel centres stay in place
    np.testing.assert_array_equal(resampled[..., 0, :], image[..., 0, :])


def test_spacing_keeps_images_at_their_spacing_and_interpolates_between_centres():
    image = np.arange(12, dtype=np.float32).reshape(3, 4) * 10
    np.testing.assert_array_equal(spacing_images(image, (0.8, 0.8), (0.8, 0.8)), image)
    np.testing.assert_array_equal(spacing_labels(image, (0.8, 0.8), (0.8, 0.8)), image)
    half = spacing_images(image, (1.0, 1.0), (0.5, 1.0))  # a new row halfway between each pair
    assert half.shape == (5, 4) == spacing_shape((3, 4), (1.0, 1.0), (0.5, 1.0))
    np.testing.assert_array_equal(half[1], (image[0] + image[1]) / 2)
    np.testing.assert_array_equal(spacing_labels(image, (1.0, 1.0), (0.5, 1.0))[1], image[1])  # tie: later


def test_pad_or_crop_keeps_pixels_about_the_centre():
    x = np.arange(1, 13, dtype=np.uint8).reshape(3, 4)
    padded = pad_or_crop(x, (6, 5))  # 3 rows: 1 before, 2 after; 1 col: after
    assert padded.shape == (6, 5) and padded.dtype == np.uint8
    np.testing.assert_array_equal(padded[1:4, 0:4], x)
    assert padded.sum() == x.sum()
    np.testing.assert_array_equal(pad_or_crop(padded, (3, 4)), padded[2:5, 0:4])  # not pad's inverse (MONAI)
    np.testing.assert_array_equal(pad_or_crop(x, (1, 2)), x[1:2, 1:3])  # start n // 2 - size // 2
    stack = np.stack([x, x + 1])
    np.testing.assert_array_equal(pad_or_crop(stack, (6, 5))[1], pad_or_crop(x + 1, (6, 5)))
