"""Class-aware dilation and erosion against scipy.ndimage per class, through the kernel harness."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.data import disc_labels
from helpers.kernel_harness import check_kernel
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from synthgen.errors import ConfigError, LabelValueError
from synthgen.kernels import dilate_class, erode_class
from synthgen.kernels import reference as ref

CASES = [
    (2, 1, (1, 2, 3, 0)),
    (2, 3, (3, 2, 1, 0)),
    (1, 2, (1, 0, 2, 3)),
    (0, 2, (0, 3, 2, 1)),
    (3, 0, (3, 2, 1, 0)),
]


@pytest.mark.parametrize(("value", "radius", "priority"), CASES)
@pytest.mark.parametrize("operation", ["dilate", "erode"])
def test_morphology_matches_scipy(operation, value, radius, priority):
    kernel_fn, reference_fn = {
        "dilate": (dilate_class, ref.dilate_class),
        "erode": (erode_class, ref.erode_class),
    }[operation]
    labels = disc_labels(4, 27, 34)

    def kernel(x, idx):
        return kernel_fn(x, value, radius, priority)

    check_kernel(kernel, labels, reference=lambda m, i: reference_fn(m, value, radius, priority))


def test_priority_decides_contacts_not_the_label_value():
    labels = np.zeros((9, 12), np.uint8)
    labels[:, :6] = 1
    labels[:, 6:] = 3
    labels[0, :] = 0
    # OpenCV's max-value dilation would let 3 swallow 1; here 1 beats 3 only when ranked stronger
    weak = dilate_class(labels, 1, 2, priority=(3, 1, 0))
    np.testing.assert_array_equal(weak[1:], labels[1:])
    assert (weak[0, :7] == 1).all() and (weak[0, 7:] == 0).all()  # (0, 7) is sqrt(5) > 2 away
    strong = dilate_class(labels, 1, 2, priority=(1, 3, 0))
    assert (strong[1:, :8] == 1).all() and (strong[1:, 8:] == 3).all()
    # freed pixels go to the strongest class within reach
    eroded = erode_class(labels, 1, 1, priority=(3, 0, 1))
    assert (eroded[1:, 5] == 3).all() and (eroded[1, :5] == 0).all() and (eroded[2:, :5] == 1).all()


def test_radius_zero_and_border_do_not_erode():
    labels = np.ones((6, 6), np.uint8)
    labels[2:4, 2:4] = 2
    np.testing.assert_array_equal(erode_class(labels, 1, 3, (1, 2)), np.full((6, 6), 2, np.uint8))
    np.testing.assert_array_equal(erode_class(labels, 2, 0, (1, 2)), labels)
    full = np.full((5, 5), 4, np.uint8)
    np.testing.assert_array_equal(erode_class(full, 4, 2, (4,)), full)


@settings(max_examples=40, deadline=None)
@given(
    labels=hnp.arrays(
        np.uint8, st.tuples(st.integers(1, 24), st.integers(1, 24)), elements=st.integers(0, 3)
    ),
    value=st.integers(0, 3),
    radius=st.integers(0, 4),
    priority=st.permutations([0, 1, 2, 3]),
)
def test_morphology_matches_scipy_property(labels, value, radius, priority):
    np.testing.assert_array_equal(
        dilate_class(labels, value, radius, priority), ref.dilate_class(labels, value, radius, priority)
    )
    np.testing.assert_array_equal(
        erode_class(labels, value, radius, priority), ref.erode_class(labels, value, radius, priority)
    )


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda m: dilate_class(m, 1, 1, (1, 0)), LabelValueError, r"unlisted value\(s\) \[2, 3\]"),
        (
            lambda m: erode_class(m[None].repeat(2, 0), 1, 1, (1, 0, 2)),
            LabelValueError,
            r"unlisted value\(s\) \[3\]",
        ),
        (lambda m: dilate_class(m, 5, 1, (0, 1, 2, 3)), LabelValueError, "Expected class 5 in priority"),
        (lambda m: dilate_class(m, 1, 1, (0, 1, 1, 2, 3)), ConfigError, "at most once"),
        (lambda m: dilate_class(m, 1, -1, (0, 1, 2, 3)), ConfigError, "radius"),
        (lambda m: dilate_class(m, 300, 1, (300, 0, 1, 2, 3)), LabelValueError, "fits uint8"),
    ],
)
def test_morphology_arguments_are_checked(call, error, match):
    with pytest.raises(error, match=match):
        call(disc_labels(1, 16, 16)[0])


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(np.bool_, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=24)),
    st.sampled_from([(1.0, 1.0), (1 / 128, 1 / 128), (1 / 100, 1 / 100), (1 / 24, 1 / 17), (0.5, 2.0)]),
)
def test_distance_to_mask_matches_scipy(mask, sampling):
    from scipy import ndimage

    from synthgen.kernels.morphology import distance_to_mask

    out = np.empty(mask.shape)
    distance_to_mask(mask, *sampling, out)
    if not mask.any():
        assert np.isinf(out).all()
        return
    want = ndimage.distance_transform_edt(~mask, sampling=sampling)
    assert np.all(out[mask] == 0)
    if sampling[0] == sampling[1] and np.log2(sampling[0]).is_integer():
        np.testing.assert_array_equal(out, want)  # equally near pixels give the same float
    else:  # the nearest pixel is exact; an equally near one may differ in the last bit
        np.testing.assert_allclose(out, want, rtol=1e-15, atol=0)
