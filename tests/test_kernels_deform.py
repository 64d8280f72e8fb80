"""deform_labels: exactly the reference field and warp, per sample, whatever the batch or thread count."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from helpers.data import disc_labels
from helpers.kernel_harness import check_kernel
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from synthgen.errors import ConfigError, KernelInputError
from synthgen.kernels import AffineParams, deform_labels, deformation_field, warp_labels
from synthgen.kernels import reference as ref

SEEDS = np.array([0, 1, 2**63 + 5, 987654321, 42, 7], dtype=np.uint64)
AFFINES = [
    AffineParams(rotation=10.0 * i - 20, scale_y=0.9 + 0.05 * i, translate_x=i - 2.5) for i in range(6)
]


def _check(labels, spacing, max_disp, affine=None):
    def kernel(x, idx):
        return deform_labels(
            x, SEEDS[idx], spacing, max_disp, affine=None if affine is None else [affine[i] for i in idx]
        )

    def expected(m, i):
        return ref.deform_labels(m, int(SEEDS[i]), spacing, max_disp, None if affine is None else affine[i])

    return check_kernel(kernel, labels, reference=expected, single=False)


@pytest.mark.parametrize("size", [(32, 32), (29, 45), (256, 256)])
def test_deform_matches_reference(size):
    labels = disc_labels(6, *size)
    out = _check(labels, 16, 5.0, AFFINES)
    assert (out != labels).mean() > 0.01  # it did deform
    _check(labels[:2], 40, 12.0)


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.int16, np.uint16, np.int32, np.int64, np.uint64])
@pytest.mark.parametrize("size", [(24, 21), (21, 24)])  # widths of whole blocks read rows as uint64 words
def test_deform_keeps_any_integer_dtype(dtype, size):
    labels = disc_labels(3, *size)
    if np.dtype(dtype).kind == "i":
        labels = labels.astype(dtype)
        labels[labels == 2] = -3  # all bytes set: a label whose words look like another's if misread
    labels = labels.astype(dtype)
    _check(labels, 8, 4.0, AFFINES)


@pytest.mark.parametrize("scale", [0.25, 0.5])
def test_cells_whose_source_box_spans_many_blocks(scale):
    """Zoomed out (scale 0.25: 32 source pixels per cell), a cell's source box spans up to 5 blocks a side, beyond the summarised squares
    (MAX_EXTENT): those boxes are tested block by block, with the same result."""
    labels = disc_labels(3, 96, 96)
    labels[:, 40:] = np.where(labels[:, 40:] == 0, 4, labels[:, 40:])  # a wide uniform region
    out = _check(
        labels, 16, 3.0, [AffineParams(scale_y=scale, scale_x=scale, rotation=5.0 * i) for i in range(6)]
    )
    assert len(np.unique(out)) > 2


def _largest_uniform_square(labels: np.ndarray, cap: int) -> np.ndarray:
    """Brute force: per 8 x 8 block, the largest k <= cap such that the (k + 1)^2 blocks from it hold one
    label (-1 where the block itself is mixed)."""
    h, w = labels.shape
    nby, nbx = -(-h // 8), -(-w // 8)
    out = np.full((nby, nbx), -1, np.int32)
    for bi in range(nby):
        for bj in range(nbx):
            for k in range(cap + 1):
                if bi + k >= nby or bj + k >= nbx:
                    break
                square = labels[bi * 8 : (bi + k + 1) * 8, bj * 8 : (bj + k + 1) * 8]
                if (square != square.flat[0]).any():
                    break
                out[bi, bj] = k
    return out


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int64])
@pytest.mark.parametrize("size", [(64, 72), (61, 70)])  # whole blocks (words) and partial ones (bytes)
def test_uniform_extent_equals_brute_force(dtype, size):
    from synthgen.kernels.deform import MAX_EXTENT, _uniform_extent

    rng = np.random.default_rng(3)
    coarse = rng.integers(0, 3, (size[0] // 16 + 1, size[1] // 16 + 1))
    labels = np.kron(coarse, np.ones((16, 16), np.int64))[: size[0], : size[1]].astype(dtype)
    labels[rng.integers(0, size[0], 6), rng.integers(0, size[1], 6)] = -1 if labels.dtype.kind == "i" else 7
    blocks = (-(-size[0] // 8), -(-size[1] // 8))
    extent = np.empty(blocks, np.int32)
    value = np.empty(blocks, labels.dtype)
    _uniform_extent(labels, extent, value, np.empty(blocks, np.uint64))
    np.testing.assert_array_equal(extent, _largest_uniform_square(labels, MAX_EXTENT))
    np.testing.assert_array_equal(value, labels[::8, ::8])
    assert (extent >= 1).any() and (extent == MAX_EXTENT).any() and (extent < 0).any()


def test_deform_equals_warp_of_the_public_field():
    labels = disc_labels(3, 40, 40)
    out = deform_labels(labels, SEEDS[:3], 16, 6.0, affine=AFFINES[:3])
    for n in range(3):
        field = deformation_field(int(SEEDS[n]), (40, 40), 16, 6.0, AFFINES[n])
        np.testing.assert_array_equal(out[n], warp_labels(labels[n], field))
    matrices = np.stack([a.matrix((40, 40)) for a in AFFINES[:3]])
    np.testing.assert_array_equal(out, deform_labels(labels, SEEDS[:3], 16, 6.0, affine=matrices))


def test_deform_does_not_depend_on_thread_count():
    labels = disc_labels(16, 48, 48)
    seeds = np.arange(16, dtype=np.uint64) * 1000003
    default = deform_labels(labels, seeds, 16, 6.0)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single_thread = deform_labels(labels, seeds, 16, 6.0)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(default, single_thread)


def test_positions_far_outside_the_map_clamp_to_its_edge():
    """A map shrunk a million-fold and shifted samples far beyond the int32 range: the edge label,
    as the reference gives (the SIMD rounding clamps in float before converting)."""
    labels = disc_labels(3, 40, 48)
    labels[:, :, -1] = 3
    far = [
        AffineParams(scale_y=1e-6, scale_x=1e-6),
        AffineParams(translate_x=-3e9),
        AffineParams(scale_x=1e-7, translate_y=1e9),
    ]
    out = _check(labels, 16, 5.0, far)
    assert (out[1] == labels[1][:, -1:]).all()


def test_a_map_too_large_for_float32_indices_takes_the_full_field_route(monkeypatch):
    """Above FLOAT_INDEX_LIMIT pixels flat indices leave float32's exact range: such maps are warped
    through their full fields, with the same result (the limit is lowered here to keep the test small)."""
    from synthgen.kernels import deform

    labels = disc_labels(3, 40, 48)
    expected = deform_labels(labels, SEEDS[:3], 16, 6.0, affine=AFFINES[:3])
    monkeypatch.setattr(deform, "FLOAT_INDEX_LIMIT", 40 * 48 - 1)
    np.testing.assert_array_equal(deform_labels(labels, SEEDS[:3], 16, 6.0, affine=AFFINES[:3]), expected)


def test_identity_deformation_changes_nothing():
    labels = disc_labels(2, 30, 30)
    np.testing.assert_array_equal(deform_labels(labels, [3, 4], 16, 0.0), labels)


@settings(max_examples=30, deadline=None)
@given(
    labels=hnp.arrays(
        np.uint8,
        st.tuples(st.integers(1, 4), st.integers(1, 40), st.integers(1, 40)),
        elements=st.integers(0, 3),
    ),
    seed=st.integers(0, 2**64 - 1),
    spacing=st.floats(8, 48),
    max_disp=st.floats(0, 20),
    rotation=st.floats(-30, 30),
)
def test_deform_matches_reference_property(labels, seed, spacing, max_disp, rotation):
    seeds = [(seed + k) % 2**64 for k in range(len(labels))]
    affine = [AffineParams(rotation=rotation, scale_x=1.1)] * len(labels)
    out = deform_labels(labels, seeds, spacing, max_disp, affine=affine)
    for n in range(len(labels)):
        np.testing.assert_array_equal(
            out[n], ref.deform_labels(labels[n], seeds[n], spacing, max_disp, affine[n])
        )


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: deform_labels(np.zeros((8, 8), np.uint8), [1], 8, 1.0), KernelInputError, "batch"),
        (
            lambda: deform_labels(np.zeros((2, 8, 8), np.uint8), [1], 8, 1.0),
            ConfigError,
            "one seed per sample",
        ),
        (lambda: deform_labels(np.zeros((1, 8, 8), np.uint8), [-1], 8, 1.0), ConfigError, "seeds"),
        (
            lambda: deform_labels(np.zeros((1, 8, 8), np.uint8), np.array([-1]), 8, 1.0),
            ConfigError,
            "negative",
        ),
        (lambda: deform_labels(np.zeros((1, 8, 8), np.uint8), [1], 2, 1.0), ConfigError, "spacing"),
        (
            lambda: deform_labels(np.zeros((1, 8, 8), np.uint8), [1], 8, 1.0, affine=[None]),
            ConfigError,
            "AffineParams",
        ),
    ],
)
def test_deform_arguments_are_checked(call, error, match):
    with pytest.raises(error, match=match):
        call()
