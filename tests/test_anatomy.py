"""Procedural anatomy: reproducible draws, recorded parameters, plausible maps in every view."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from synthgen.errors import ConfigError
from synthgen.sources import anatomy
from synthgen.sources.anatomy_echo import APEX_MIN_Y, LA_ASPECT, WALL_TOP_Y, sector_mask
from synthgen.sources.gate import GateReport, check_batch

SHAPES = {"echo_a4c": (112, 112), "echo_a2c": (112, 112), "sa_mr": (108, 128), "ct_axial": (96, 96)}


def _maps(view: str, n: int, seed: int = 0) -> tuple[list[anatomy.AnatomyParams], np.ndarray]:
    params = [anatomy.sample_params(np.random.default_rng([seed, i]), view) for i in range(n)]
    return params, np.stack([anatomy.render(p, SHAPES[view]) for p in params])


@pytest.mark.parametrize("view", anatomy.VIEWS)
def test_draws_and_renders_are_reproducible(view):
    a = anatomy.sample_params(np.random.default_rng(5), view)
    b = anatomy.sample_params(np.random.default_rng(5), view)
    c = anatomy.sample_params(np.random.default_rng(6), view)
    assert a == b and a != c
    x = anatomy.render(a, SHAPES[view])
    assert x.dtype == np.uint8 and x.shape == SHAPES[view]
    np.testing.assert_array_equal(x, anatomy.render(b, SHAPES[view]))


@pytest.mark.parametrize("view", anatomy.VIEWS)
def test_params_round_trip_as_dict_and_vector(view):
    p = anatomy.sample_params(np.random.default_rng(1), view)
    kind = type(p)
    assert kind.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    vector = p.to_vector()
    assert vector.shape == (len(kind.names()),) and kind.from_vector(vector) == p
    with pytest.raises(ConfigError, match="Unknown key"):
        kind.from_dict(p.to_dict() | {"extra": 1.0})
    with pytest.raises(ConfigError, match="Missing"):
        kind.from_dict({k: v for k, v in p.to_dict().items() if k != kind.names()[0]})
    with pytest.raises(ConfigError, match="vector of"):
        kind.from_vector(vector[:-1])


@pytest.mark.parametrize("view", anatomy.VIEWS)
def test_draws_lie_in_the_documented_ranges(view):
    adjusted = {"apex_y", "lv_length"}  # moved to keep the cavity in the sector (see anatomy_echo)
    for i in range(20):
        p = anatomy.sample_params(np.random.default_rng([2, i]), view).to_dict()
        for name, (lo, hi) in anatomy.ranges(view).items():
            if name not in adjusted:
                assert lo <= p[name] <= hi, (name, p[name])
        if view.startswith("echo"):  # apex_y, apex_x and la_length are derived from other draws
            assert p["two_chamber"] == float(view == "echo_a2c") and p["apex_y"] >= APEX_MIN_Y
            assert p["apex_y"] - p["wall_septal"] * p["wall_apex_ratio"] >= WALL_TOP_Y[view][0] - 1e-12
            lo, hi = LA_ASPECT[view]
            assert lo <= p["la_length"] / p["la_width"] <= hi + 1e-12


@pytest.mark.parametrize("view", anatomy.VIEWS)
def test_maps_use_the_schema_and_pass_the_gate(view):
    schema = anatomy.schema_of(view)
    _, maps = _maps(view, 40)
    assert set(np.unique(maps)) <= {0, *schema.values}
    report = GateReport.from_flags(check_batch(maps, schema)[1], schema)
    assert report.pass_rate >= 0.95, report.to_dict()


def test_ct_shows_all_seven_structures():
    _, maps = _maps("ct_axial", 10)
    for x in maps:
        assert set(np.unique(x)) == set(range(8))


def test_echo_geometry_apex_up_atrium_below_cavity_in_sector():
    params, maps = _maps("echo_a4c", 20)
    for p, x in zip(params, maps, strict=True):
        rows_lv = np.nonzero(x == 1)[0]
        rows_la = np.nonzero(x == 3)[0]
        assert rows_lv.min() < rows_la.min() and rows_lv.mean() < rows_la.mean()
        assert not ((x == 1) & ~sector_mask(p, x.shape)).any()
        assert not ((x == 3) & ~sector_mask(p, x.shape)).any()


def test_short_axis_rv_presence_is_a_recorded_draw():
    p = anatomy.sample_params(np.random.default_rng(0), "sa_mr")
    with_rv = anatomy.render(dataclasses.replace(p, has_rv=1.0), (96, 96))
    without = anatomy.render(dataclasses.replace(p, has_rv=0.0), (96, 96))
    assert (with_rv == 1).any() and not (without == 1).any()
    np.testing.assert_array_equal(with_rv != 1, without == with_rv)


@pytest.mark.parametrize("view", ["echo_a4c", "sa_mr"])
def test_rendering_is_resolution_independent(view):
    p = anatomy.sample_params(np.random.default_rng(3), view)
    h, w = SHAPES[view]
    small, large = anatomy.render(p, (h, w)), anatomy.render(p, (2 * h, 2 * w))
    for v in np.unique(large)[1:]:
        assert abs((small == v).mean() - (large == v).mean()) < 0.15 * (large == v).mean() + 2e-3


def test_bad_arguments():
    with pytest.raises(ConfigError, match="anatomy view"):
        anatomy.sample_params(np.random.default_rng(0), "plax")
    with pytest.raises(ConfigError, match="Generator"):
        anatomy.sample_params(0, "sa_mr")  # type: ignore[arg-type]
    p = anatomy.sample_params(np.random.default_rng(0), "sa_mr")
    with pytest.raises(ConfigError, match="image shape"):
        anatomy.render(p, (4, 64))
    with pytest.raises(ConfigError, match="anatomy parameters"):
        anatomy.render(object(), (64, 64))  # type: ignore[arg-type]


@pytest.mark.parametrize("view", ["echo_a4c", "echo_a2c"])
def test_echo_renderer_equals_the_numpy_reference_pixel_for_pixel(view):
    import helpers.echo_reference as ref

    from synthgen.sources.anatomy_echo import ECHO_RANGES, EchoParams, _fit_in_sector
    from synthgen.sources.anatomy_shapes import draw_uniform

    # the derived parameters (see sample_echo_params) are drawn over their spans here
    ranges = ECHO_RANGES[view] | {"apex_y": (0.12, 0.36), "apex_x": (0.35, 0.6), "la_length": (0.15, 0.6)}
    rng = np.random.default_rng(11)
    raw = [draw_uniform(rng, ranges) for _ in range(40)]
    # the corners of the ranges too: every parameter at its low or its high end
    raw += [
        {k: ranges[k][int(bit)] for k, bit in zip(ranges, rng.integers(0, 2, len(ranges)), strict=True)}
        for _ in range(20)
    ]
    for i, drawn in enumerate(raw):
        p = EchoParams(two_chamber=float(view == "echo_a2c"), **drawn)
        fitted = _fit_in_sector(p)
        np.testing.assert_array_equal(fitted.to_vector(), ref.fit_in_sector(p).to_vector())
        shape = [(128, 128), (224, 224), (96, 112)][i % 3]
        np.testing.assert_array_equal(
            anatomy.render(fitted, shape), ref.render_echo(fitted, shape), f"map {i}"
        )
        np.testing.assert_array_equal(
            anatomy.render(p, shape), ref.render_echo(p, shape), f"unfitted map {i}"
        )


def test_draw_uniform_gives_the_values_of_rng_uniform():
    from synthgen.sources.anatomy_echo import ECHO_RANGES
    from synthgen.sources.anatomy_mr_ct import CT_RANGES, SA_RANGES
    from synthgen.sources.anatomy_shapes import draw_uniform

    tables = [
        *ECHO_RANGES.values(),
        SA_RANGES,
        CT_RANGES,
        {"a": [0.0, 1.0], "b": (-3.0, -3.0), "c": (1e-3, 7.5)},
    ]
    for k, table in enumerate(tables):
        for seed in range(50):
            drawn = draw_uniform(np.random.default_rng([k, seed]), table)
            bounds = np.array(list(table.values()), np.float64)
            want = np.random.default_rng([k, seed]).uniform(bounds[:, 0], bounds[:, 1])
            assert list(drawn) == list(table)
            np.testing.assert_array_equal(np.array(list(drawn.values())), want)


def test_short_axis_renderer_equals_the_numpy_reference_pixel_for_pixel():
    import helpers.sa_reference as ref

    from synthgen.sources.anatomy_mr_ct import SA_RANGES, ShortAxisParams
    from synthgen.sources.anatomy_shapes import draw_uniform

    rng = np.random.default_rng(12)
    # the default ranges, then wider ones: shapes at the border, flattened or stretched cavities,
    # strong wobbles and walls, and the RV on every side
    wide = SA_RANGES | {"lv_y": (0.05, 0.95), "lv_x": (0.05, 0.95), "cavity_radius": (0.0, 0.3),
                        "cavity_ratio": (0.3, 1.6), "wobble_2": (-0.3, 0.3), "wall": (0.0, 0.12),
                        "wall_variation": (-0.9, 0.9), "rv_angle": (-180.0, 180.0)}  # fmt: skip
    for i in range(120):
        drawn = draw_uniform(rng, SA_RANGES if i < 60 else wide)
        p = ShortAxisParams(has_rv=float(i % 5 != 0), **drawn)
        shape = [(128, 128), (224, 224), (96, 112), (37, 64)][i % 4]
        np.testing.assert_array_equal(anatomy.render(p, shape), ref.render_sa(p, shape), f"map {i}")


def test_axial_ct_renderer_equals_the_numpy_reference_pixel_for_pixel():
    import helpers.ct_reference as ref

    from synthgen.sources.anatomy_mr_ct import CT_RANGES, AxialCtParams
    from synthgen.sources.anatomy_shapes import draw_uniform

    rng = np.random.default_rng(13)
    wide = CT_RANGES | {"heart_y": (0.1, 0.9), "heart_x": (0.1, 0.9), "heart_angle": (-180.0, 180.0),
                        "heart_scale": (0.1, 0.8), "lv_wall": (0.0, 0.3)}  # fmt: skip
    for i in range(80):
        p = AxialCtParams(**draw_uniform(rng, CT_RANGES if i < 40 else wide))
        shape = [(128, 128), (256, 256), (96, 112), (40, 72)][i % 4]
        np.testing.assert_array_equal(anatomy.render(p, shape), ref.render_ct(p, shape), f"map {i}")
