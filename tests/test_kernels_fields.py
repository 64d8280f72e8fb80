"""Displacement fields and affine parameters: exact agreement with the reference, bounds, semantics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synthgen.errors import ConfigError
from synthgen.kernels import (
    AffineParams,
    AffineRanges,
    affine_field,
    deformation_field,
    elastic_field,
    sample_affine_params,
    warp_labels,
)
from synthgen.kernels import reference as ref

SHEARED = AffineParams(
    rotation=12.5, scale_y=1.1, scale_x=0.92, shear=4.0, translate_y=3.5, translate_x=-2.25
)


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (24, 24), (33, 57), (257, 31)])
@pytest.mark.parametrize("affine", [None, SHEARED])
def test_field_equals_reference_bit_for_bit(shape, affine):
    for seed in (0, 12345, 2**64 - 1):
        field = deformation_field(seed, shape, 16, 5.5, affine)
        assert field.dtype == np.float32 and field.shape == (2, *shape)
        np.testing.assert_array_equal(field, ref.deformation_field(seed, shape, 16, 5.5, affine))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**64 - 1),
    h=st.integers(1, 70),
    w=st.integers(1, 70),
    spacing=st.floats(8, 80),
    max_disp=st.floats(0, 30),
)
def test_field_equals_reference_property(seed, h, w, spacing, max_disp):
    np.testing.assert_array_equal(
        elastic_field(seed, (h, w), spacing, max_disp), ref.deformation_field(seed, (h, w), spacing, max_disp)
    )


def test_field_is_bounded_smooth_and_seeded():
    m, spacing = 6.0, 24
    field = elastic_field(7, (128, 96), spacing, m)
    assert np.abs(field).max() <= m * (1 + 1e-6)
    assert np.abs(field).max() > m / 4  # not degenerate
    # a cubic B-spline moves at most (max control difference) / spacing per pixel; bilinear keeps that
    steepest = max(np.abs(np.diff(field, axis=1)).max(), np.abs(np.diff(field, axis=2)).max())
    assert steepest <= 2 * m / spacing * 1.01
    assert np.array_equal(field, elastic_field(7, (128, 96), spacing, m))
    assert not np.array_equal(field, elastic_field(8, (128, 96), spacing, m))
    assert not np.array_equal(field[0], field[1])
    assert not elastic_field(7, (16, 16), spacing, 0.0).any()


def test_affine_part_matches_the_exact_affine_field():
    combined = deformation_field(3, (64, 48), 32, 0.0, SHEARED)
    np.testing.assert_allclose(combined, affine_field(SHEARED, (64, 48)), atol=2e-4)
    assert not affine_field(AffineParams(), (5, 7)).any()


def _spot(shape, row, col):
    image = np.zeros(shape, np.uint8)
    image[row, col] = 1
    return image


def test_affine_conventions():
    shape = (41, 41)  # centre (20, 20)
    moved = warp_labels(
        _spot(shape, 10, 12), affine_field(AffineParams(translate_y=5, translate_x=-3), shape)
    )
    assert np.argwhere(moved).tolist() == [[15, 9]]
    # content right of the centre turns up above it: counter-clockwise as displayed (rows down)
    turned = warp_labels(_spot(shape, 20, 30), affine_field(AffineParams(rotation=90), shape))
    assert np.argwhere(turned).tolist() == [[10, 20]]
    disc = (np.add.outer((np.arange(41) - 20) ** 2, (np.arange(41) - 20) ** 2) <= 36).astype(np.uint8)
    grown = warp_labels(disc, affine_field(AffineParams(scale_y=2.0, scale_x=1.5), shape))
    assert 2.7 < grown.sum() / disc.sum() < 3.3
    rows, cols = np.nonzero(grown)
    assert np.ptp(rows) > np.ptp(cols)


def test_affine_params_round_trip_and_checks():
    assert AffineParams.from_dict(json.loads(json.dumps(SHEARED.to_dict()))) == SHEARED
    ranges = AffineRanges(max_rotation=20, min_scale=0.8, max_scale=1.2, max_shear=5)
    assert AffineRanges.from_dict(json.loads(json.dumps(ranges.to_dict()))) == ranges
    with pytest.raises(ConfigError, match="Unknown key"):
        AffineParams.from_dict({"rotate": 3})
    with pytest.raises(ConfigError, match="positive scales"):
        AffineParams(scale_y=0.0)
    with pytest.raises(ConfigError):
        AffineRanges(min_scale=1.2, max_scale=1.1)


def test_sample_affine_params_is_reproducible_and_in_range():
    ranges = AffineRanges(max_rotation=15, min_scale=0.9, max_scale=1.1, max_anisotropy=0.1, max_shear=4)
    draws = [sample_affine_params(np.random.default_rng([5, i]), ranges) for i in range(200)]
    assert draws[3] == sample_affine_params(np.random.default_rng([5, 3]), ranges)
    assert len({d.rotation for d in draws}) == 200
    for d in draws:
        assert abs(d.rotation) <= 15 and abs(d.shear) <= 4
        assert abs(d.translate_y) <= ranges.max_translation and abs(d.translate_x) <= ranges.max_translation
        assert 0.9 / 1.1**0.5 - 1e-9 <= d.scale_y <= 1.1 * 1.1**0.5 + 1e-9
        assert 1 / 1.1 - 1e-9 <= d.scale_y / d.scale_x <= 1.1 + 1e-9
    with pytest.raises(ConfigError, match=r"numpy\.random\.Generator"):
        sample_affine_params(np.random.RandomState(0), ranges)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0, (16, 16), 4, 1.0), "spacing"),
        ((0, (16, 16), 16, -1.0), "maximum displacement"),
        ((0, (16, 0), 16, 1.0), "shape"),
        ((0, (16,), 16, 1.0), "shape"),
        ((-1, (16, 16), 16, 1.0), "seed"),
        ((2**64, (16, 16), 16, 1.0), "seed"),
        ((1.5, (16, 16), 16, 1.0), "integer seed"),
    ],
)
def test_field_arguments_are_checked(args, match):
    with pytest.raises(ConfigError, match=match):
        elastic_field(*args)
