"""Class areas and 4-neighbour contacts against the NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.data import disc_labels
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from synthgen.errors import KernelInputError
from synthgen.kernels import class_stats, count_components
from synthgen.kernels import reference as ref


def test_batch_and_single_maps_match_the_reference():
    labels = disc_labels(5, 21, 17)
    labels[2, 0, :] = 3  # a class on the border: its edge to the outside is background contact
    areas, contacts = class_stats(labels, 4)
    assert areas.shape == (5, 4) and contacts.shape == (5, 4, 4)
    for m, a, c in zip(labels, areas, contacts, strict=True):
        want_a, want_c = ref.class_stats(m, 4)
        np.testing.assert_array_equal(a, want_a)
        np.testing.assert_array_equal(c, want_c)
        one_a, one_c = class_stats(m, 4)
        np.testing.assert_array_equal(one_a, a)
        np.testing.assert_array_equal(one_c, c)
        np.testing.assert_array_equal(c, c.T)
        assert np.all(np.diag(c) == 0)
    empty_a, empty_c = class_stats(np.zeros((0, 4, 4), np.uint8), 3)
    assert empty_a.shape == (0, 3) and empty_c.shape == (0, 3, 3)


def test_a_single_pixel_touches_the_outside_on_every_side():
    areas, contacts = class_stats(np.array([[2]], np.uint8), 3)
    assert areas.tolist() == [0, 0, 1]
    assert contacts[2, 0] == 4 and contacts[0, 2] == 4 and contacts.sum() == 8


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        np.uint8, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=9), elements={"max_value": 3}
    )
)
def test_any_map_matches_the_reference(m):
    areas, contacts = class_stats(m, 4)
    want_a, want_c = ref.class_stats(m, 4)
    np.testing.assert_array_equal(areas, want_a)
    np.testing.assert_array_equal(contacts, want_c)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(KernelInputError, match="below 3"):
        class_stats(np.full((2, 2), 3, np.uint8), 3)
    with pytest.raises(KernelInputError, match="uint8"):
        class_stats(np.zeros((2, 2), np.int32), 3)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        np.uint8, hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=12), elements={"max_value": 3}
    ),
    st.sets(st.integers(0, 3)),
)
def test_component_counts_match_count_components(maps, counted):
    areas, contacts, components = class_stats(maps, 4, components=sorted(counted))
    want_a, want_c = class_stats(maps, 4)
    np.testing.assert_array_equal(areas, want_a)
    np.testing.assert_array_equal(contacts, want_c)
    for k in range(4):
        want = count_components(maps, k, connectivity=8) if k in counted else 0
        np.testing.assert_array_equal(components[:, k], want)
    one = class_stats(maps[0], 4, components=sorted(counted))[2]
    np.testing.assert_array_equal(one, components[0])
    with pytest.raises(KernelInputError, match="component classes below 4"):
        class_stats(maps, 4, components=[4])


def test_sparse_maps_counted_over_the_foreground_box_match_the_reference():
    # the kernel counts over the box of the non-zero pixels: foreground anywhere (inside, on an edge or
    # a corner, none at all), with components of background listed or not
    rng = np.random.default_rng(3)
    for i in range(300):
        h, w = rng.integers(1, 20, size=2)
        m = np.where(rng.random((h, w)) < rng.choice([0.0, 0.02, 0.1, 0.4]), rng.integers(1, 4, (h, w)), 0)
        m = m.astype(np.uint8)
        counted = [k for k in range(4) if rng.random() < 0.5]
        areas, contacts, components = class_stats(m[None], 4, components=counted)
        want_a, want_c = ref.class_stats(m, 4)
        np.testing.assert_array_equal(areas[0], want_a, f"map {i}")
        np.testing.assert_array_equal(contacts[0], want_c, f"map {i}")
        for k in range(4):
            want = count_components(m[None], k, connectivity=8)[0] if k in counted else 0
            assert components[0, k] == want, f"map {i}, class {k}"
