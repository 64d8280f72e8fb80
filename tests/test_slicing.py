"""The plane-slicing kernel against its scipy reference, and its conventions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synthgen.errors import KernelInputError
from synthgen.kernels.slicing import slice_plane, slice_plane_reference, slice_planes


def _volume(seed: int = 0, shape=(7, 9, 11), dtype=np.uint8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 5, shape).astype(dtype)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([np.uint8, np.uint16, np.int32]))
def test_matches_scipy_reference(seed, dtype):
    rng = np.random.default_rng(seed)
    volume = _volume(seed, tuple(rng.integers(3, 12, 3)), dtype)
    axes = _rotation(rng) * rng.uniform(0.3, 2.0, (3, 1))
    center = rng.uniform(-2, 12, 3)
    shape = tuple(int(s) for s in rng.integers(1, 17, 2))
    expected = slice_plane_reference(volume, center, axes[0], axes[1], shape, fill=7)
    got = slice_plane(volume, center, axes[0], axes[1], shape, fill=7)
    assert got.dtype == volume.dtype and got.shape == shape
    np.testing.assert_array_equal(got, expected)


def test_axis_aligned_plane_is_a_volume_slice():
    volume = _volume()
    z, y, x = volume.shape
    for k in range(z):
        got = slice_plane(volume, (k, (y - 1) / 2, (x - 1) / 2), (0, 1, 0), (0, 0, 1), (y, x))
        np.testing.assert_array_equal(got, volume[k])
    # a coronal plane: rows run along z
    got = slice_plane(volume, ((z - 1) / 2, 4, (x - 1) / 2), (1, 0, 0), (0, 0, 1), (z, x))
    np.testing.assert_array_equal(got, volume[:, 4, :])


def test_half_voxel_rounding_and_outside_fill():
    volume = np.arange(1, 6, dtype=np.uint8).reshape(1, 1, 5)
    # columns sample x = -1.0, -0.5, 0.0, ..., 5.0: a voxel covers [k - 0.5, k + 0.5)
    got = slice_plane(volume, (0, 0, 2.0), (0, 1, 0), (0, 0, 0.5), (1, 13), fill=9)
    assert got.tolist() == [[9, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 9, 9]]


def test_batch_equals_one_by_one_and_input_untouched():
    rng = np.random.default_rng(3)
    volume = _volume(1)
    before = volume.copy()
    n = 5
    rot = np.stack([_rotation(rng) for _ in range(n)])
    centers = rng.uniform(0, 8, (n, 3))
    out = slice_planes(volume, centers, rot[:, 0], rot[:, 1], (6, 8))
    assert out.shape == (n, 6, 8) and out.dtype == np.uint8
    for i in range(n):
        np.testing.assert_array_equal(out[i], slice_plane(volume, centers[i], rot[i, 0], rot[i, 1], (6, 8)))
    np.testing.assert_array_equal(volume, before)
    assert set(np.unique(out)) <= set(np.unique(volume)) | {0}
    empty = slice_planes(volume, np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)), (6, 8))
    assert empty.shape == (0, 6, 8)


def test_out_argument_is_filled():
    volume = _volume()
    out = np.full((1, 4, 4), 255, np.uint8)
    result = slice_planes(volume, [(3, 4, 5)], [(0, 1, 0)], [(0, 0, 1)], (4, 4), out=out)
    assert result is out and out.max() < 5


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda v: slice_plane(v.astype(np.float32), (0, 0, 0), (0, 1, 0), (0, 0, 1), (2, 2)),
            "integer label",
        ),
        (lambda v: slice_plane(v[0], (0, 0, 0), (0, 1, 0), (0, 0, 1), (2, 2)), r"\(Z, Y, X\)"),
        (lambda v: slice_plane(v, (0, 0), (0, 1, 0), (0, 0, 1), (2, 2)), "plane centres"),
        (lambda v: slice_plane(v, (0, 0, np.nan), (0, 1, 0), (0, 0, 1), (2, 2)), "finite"),
        (lambda v: slice_plane(v, (0, 0, 0), (0, 1, 0), (0, 0, 1), (0, 2)), "positive sizes"),
        (
            lambda v: slice_planes(v, [(0, 0, 0)], [(0, 1, 0)], [(0, 0, 1)], (2, 2), out=np.empty((1, 2, 2))),
            "out as",
        ),
    ],
)
def test_bad_inputs(call, match):
    with pytest.raises(KernelInputError, match=match):
        call(_volume())
