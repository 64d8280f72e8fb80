"""The one label resize and the one image resize (synthgen.kernels.resize), against torch's
``interpolate`` as the reference (nearest-exact for labels, antialiased bilinear for images)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.data import disc_labels
from hypothesis import given, settings
from hypothesis import strategies as st

from synthgen.errors import KernelInputError
from synthgen.kernels import resize_images, resize_labels


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
