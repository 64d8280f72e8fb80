"""warp_labels / warp_image against scipy.ndimage.map_coordinates, through the kernel harness."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.data import disc_labels
from helpers.kernel_harness import check_kernel

from synthgen.errors import KernelInputError
from synthgen.kernels import AffineParams, deformation_field, warp_image, warp_labels
from synthgen.kernels import reference as ref


def _fields(n: int, shape: tuple[int, int], kind: str) -> np.ndarray:
    """Per-sample fields: smooth ones from the engine, or rough noise with exact halves and far jumps."""
    rng = np.random.default_rng(11)
    if kind == "smooth":
        affine = AffineParams(rotation=8, scale_y=1.05, translate_x=2.0)
        return np.stack([deformation_field(i, shape, 8, 4.0, affine) for i in range(n)])
    field = rng.uniform(-3, 3, (n, 2, *shape)).astype(np.float32)
    field[:, :, ::3] = np.round(field[:, :, ::3]) + np.float32(0.5)  # ties: rounding convention matters
    field[:, :, :, ::5] += np.float32(40.0)  # far outside the image: clamped to the edge
    return field


@pytest.mark.parametrize("kind", ["smooth", "rough"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16])
def test_warp_labels_matches_map_coordinates(kind, dtype):
    labels = disc_labels(4, 23, 37).astype(dtype)
    if dtype == np.int16:
        labels[labels == 3] = -7
    fields = _fields(4, (23, 37), kind)

    def kernel(x, idx):
        return warp_labels(x, fields[idx])

    check_kernel(kernel, labels, reference=lambda m, i: ref.warp_labels(m, fields[i]))


def test_warp_labels_rounds_halves_up_and_clamps():
    labels = np.arange(20, dtype=np.uint8).reshape(4, 5)
    half = np.full((2, 4, 5), 0.5, np.float32)
    expected = labels[np.minimum(np.arange(4) + 1, 3)][:, np.minimum(np.arange(5) + 1, 4)]
    np.testing.assert_array_equal(warp_labels(labels, half), expected)
    np.testing.assert_array_equal(warp_labels(labels, -half), labels)
    np.testing.assert_array_equal(warp_labels(labels, half.astype(np.float64)), expected)
    # positions are formed in float32, as the reference forms them: 1 + 0.49999997 rounds to 1.5
    below = np.full((2, 4, 5), np.nextafter(np.float32(0.5), np.float32(0)), np.float32)
    nearly = warp_labels(labels, below)
    assert nearly[0, 0] == labels[0, 0] and nearly[1, 1] == labels[2, 2]
    np.testing.assert_array_equal(nearly, ref.warp_labels(labels, below))
    far = np.full((2, 4, 5), -100.0, np.float32)
    assert (warp_labels(labels, far) == labels[0, 0]).all()


def test_int32_rounding_is_exact_for_any_finite_position():
    """Both roundings (deform_labels rounds in int32 SIMD lanes) give the exact half-up index, clamped,
    for any finite float32: halves, their neighbours, positions far beyond the int32 and int64 ranges."""
    import numba

    from synthgen.kernels.warp import nearest_index, nearest_index32

    @numba.njit
    def both(p, n):
        out = np.empty((2, p.size), np.int64)
        for k in range(p.size):
            out[0, k] = nearest_index(p[k], n)
            out[1, k] = nearest_index32(p[k], n)
        return out

    rng = np.random.default_rng(5)
    halves = np.arange(-4, 260, dtype=np.float32) + np.float32(0.5)
    p = np.concatenate(
        [
            halves,
            np.nextafter(halves, np.float32(-np.inf)),
            np.nextafter(halves, np.float32(np.inf)),
            rng.uniform(-3, 259, 5000).astype(np.float32),
            np.array([-1.0, -0.5, -1e-30, 0.0, 255.0, 256.0, 3e9, -3e9, 1e38, -1e38], np.float32),
        ]
    )
    whole = np.floor(p.astype(np.float64))
    exact = whole + (p - whole >= 0.5)  # half up, exact in float64 for float32 positions
    for n in (1, 7, 256):
        got = both(p, n)
        expected = np.clip(exact, 0, n - 1).astype(np.int64)
        np.testing.assert_array_equal(got[0], expected)
        np.testing.assert_array_equal(got[1], expected)


@pytest.mark.parametrize(
    ("dtype", "atol"), [(np.float32, 1e-4), (np.float64, 1e-9), (np.uint8, 1), (np.int16, 1)]
)
def test_warp_image_matches_map_coordinates(dtype, atol):
    rng = np.random.default_rng(3)
    lo, hi = (-300, 300) if dtype == np.int16 else (0, 255)
    images = rng.uniform(lo, hi, (3, 19, 26)).astype(dtype)
    fields = _fields(3, (19, 26), "rough")

    def kernel(x, idx):
        return warp_image(x, fields[idx])

    out = check_kernel(
        kernel, images, reference=lambda m, i: ref.warp_image(m, fields[i]), labels=False, atol=atol
    )
    if dtype in (np.uint8, np.int16):  # a rounding difference only where scipy's float sum straddles .5
        assert (
            np.mean(out != np.stack([ref.warp_image(m, f) for m, f in zip(images, fields, strict=True)]))
            < 0.01
        )


def test_image_and_labels_stay_aligned():
    labels = disc_labels(1, 40, 40)[0]
    field = np.round(deformation_field(4, (40, 40), 16, 6.0))  # whole pixels: both warps are exact copies
    np.testing.assert_array_equal(warp_image(labels.astype(np.float32), field), warp_labels(labels, field))
    identity = np.zeros((2, 40, 40), np.float32)
    image = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    np.testing.assert_array_equal(warp_image(image, identity), image)


def test_warp_writes_into_out():
    labels = disc_labels(2, 16, 16)
    fields = np.stack([deformation_field(i, (16, 16), 8, 3.0) for i in range(2)])
    out = np.empty_like(labels)
    assert warp_labels(labels, fields, out=out) is out
    np.testing.assert_array_equal(out, warp_labels(labels, fields))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: warp_labels(np.zeros((4, 4), np.float32), np.zeros((2, 4, 4), np.float32)),
            "integer label map",
        ),
        (lambda: warp_labels(np.zeros((4, 4), np.uint8), np.zeros((2, 4, 5), np.float32)), "field of shape"),
        (
            lambda: warp_labels(np.zeros((4, 4), np.uint8), np.zeros((2, 4, 4), np.float16)),
            "float32 or float64",
        ),
        (lambda: warp_labels(np.zeros((4, 4), np.uint8), np.full((2, 4, 4), np.nan, np.float32)), "finite"),
        (lambda: warp_labels(np.zeros((2, 2, 4, 4), np.uint8), np.zeros((2, 4, 4), np.float32)), "shape"),
        (lambda: warp_image(np.zeros((4, 4), np.float16), np.zeros((2, 4, 4), np.float32)), "float32"),
        (lambda: warp_image([[1.0]], np.zeros((2, 1, 1), np.float32)), "numpy array"),
    ],
)
def test_warp_arguments_are_checked(call, match):
    with pytest.raises(KernelInputError, match=match):
        call()


def test_out_must_not_overlap_the_input():
    labels = np.zeros((4, 4), np.uint8)
    with pytest.raises(KernelInputError, match="overlap"):
        warp_labels(labels, np.zeros((2, 4, 4), np.float32), out=labels)
