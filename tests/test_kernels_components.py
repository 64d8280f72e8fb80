"""Connected components, largest component and hole filling against scipy.ndimage."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.data import disc_labels
from helpers.kernel_harness import check_kernel
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage as ndi

from synthgen.errors import ConfigError, KernelInputError
from synthgen.kernels import connected_components, count_components, fill_holes, largest_component
from synthgen.kernels import reference as ref


def _speckled(n: int = 4, h: int = 30, w: int = 33) -> np.ndarray:
    """Disc label maps with stray islands and holes sprinkled in, so every rule has work to do."""
    labels = disc_labels(n, h, w)
    rng = np.random.default_rng(5)
    for m in labels:
        for _ in range(12):
            y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
            m[y : y + rng.integers(1, 3), x : x + rng.integers(1, 3)] = rng.integers(0, 4)
    return labels


@pytest.mark.parametrize("connectivity", [4, 8])
def test_connected_components_match_scipy_label(connectivity):
    labels = _speckled()

    def kernel(x, idx):
        return connected_components(x == 2, connectivity)[0]

    check_kernel(
        kernel,
        labels,
        reference=lambda m, i: ref.connected_components(m == 2, connectivity)[0],
        labels=False,
        out_dtype=np.int32,
    )
    _, counts = connected_components(labels == 2, connectivity)
    assert counts.tolist() == [ref.connected_components(m == 2, connectivity)[1] for m in labels]
    assert connected_components(labels[0] == 2, connectivity)[1] == counts[0]


@pytest.mark.parametrize("connectivity", [4, 8])
def test_count_components(connectivity):
    labels = _speckled()
    structure = ndi.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    for value in range(4):
        expected = [ndi.label(m == value, structure)[1] for m in labels]
        assert count_components(labels, value, connectivity).tolist() == expected
        assert count_components(labels[1], value, connectivity) == expected[1]
    assert count_components(labels[:0], 1).shape == (0,)


@pytest.mark.parametrize("value", [0, 1, 2, 3])
@pytest.mark.parametrize("connectivity", [4, 8])
def test_largest_component_matches_reference(value, connectivity):
    def kernel(x, idx):
        return largest_component(x, value, connectivity)

    out = check_kernel(
        kernel, _speckled(), reference=lambda m, i: ref.largest_component(m, value, connectivity)
    )
    assert (count_components(out, value, connectivity) <= 1).all()


@pytest.mark.parametrize(("value", "max_area"), [(1, None), (2, None), (2, 3), (0, 1)])
def test_fill_holes_matches_reference(value, max_area):
    def kernel(x, idx):
        return fill_holes(x, value, max_area)

    check_kernel(kernel, _speckled(), reference=lambda m, i: ref.fill_holes(m, value, max_area))


def test_island_takes_its_surroundings_and_holes_are_filled():
    labels = np.zeros((10, 10), np.uint8)
    labels[1:8, 1:8] = 2
    labels[3:6, 3:6] = 1  # cavity inside the wall: a hole of the wall
    labels[4, 4] = 0  # a hole in the cavity
    labels[2, 2] = 1  # a stray cavity pixel inside the wall (only diagonal to the cavity)
    kept = largest_component(labels, 1)
    assert kept[2, 2] == 2 and (kept[3:6, 3:6] == labels[3:6, 3:6]).all()
    filled = fill_holes(labels, 1)
    assert filled[4, 4] == 1 and filled[2, 2] == 1
    small = fill_holes(labels, 2, max_area=1)  # the stray pixel is a 1-pixel hole, the cavity 9 pixels
    assert small[2, 2] == 2 and np.array_equal(small[3:6, 3:6], labels[3:6, 3:6])
    assert (fill_holes(labels, 2)[1:8, 1:8] == 2).all()


@settings(max_examples=40, deadline=None)
@given(
    labels=hnp.arrays(
        np.uint8, st.tuples(st.integers(1, 20), st.integers(1, 20)), elements=st.integers(0, 3)
    ),
    value=st.integers(0, 3),
    connectivity=st.sampled_from([4, 8]),
    max_area=st.one_of(st.none(), st.integers(0, 6)),
)
def test_components_match_scipy_property(labels, value, connectivity, max_area):
    components, count = connected_components(labels == value, connectivity)
    expected, expected_count = ref.connected_components(labels == value, connectivity)
    assert count == expected_count
    np.testing.assert_array_equal(components, expected)
    np.testing.assert_array_equal(
        largest_component(labels, value, connectivity), ref.largest_component(labels, value, connectivity)
    )
    np.testing.assert_array_equal(
        fill_holes(labels, value, max_area), ref.fill_holes(labels, value, max_area)
    )


def test_component_arguments_are_checked():
    labels = np.zeros((4, 4), np.uint8)
    with pytest.raises(ConfigError, match="connectivity 4 or 8"):
        connected_components(labels, 6)
    with pytest.raises(ConfigError, match="max_area"):
        fill_holes(labels, 1, max_area=-2)
    with pytest.raises(KernelInputError, match="fits uint8"):
        largest_component(labels, 256)
    with pytest.raises(KernelInputError, match="integer class value"):
        count_components(labels, 1.5)
