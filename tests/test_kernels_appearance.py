"""The appearance kernel (randomised generator and appearance stage) against its NumPy reference, and
the properties its draws promise: ranges, sector, speckle with depth, variety, reproducibility."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from helpers.kernel_harness import check_kernel

import synthgen.kernels.randomise as k
from synthgen.errors import ConfigError, KernelInputError, LabelValueError
from synthgen.inference import Restyler
from synthgen.kernels import appearance, appearance_params_size
from synthgen.kernels import reference as ref
from synthgen.schemas import (
    APPEARANCE,
    CAMUS,
    RANDOMISED,
    AppearanceConfig,
    BuildConfig,
    LabelClass,
    LabelSchema,
)
from synthgen.schemas.appearance import RANGED


def heart(h: int = 40, w: int = 56) -> np.ndarray:
    """A small label map with four classes (indices), the cavity near the top centre."""
    y, x = np.mgrid[:h, :w]
    out = np.zeros((h, w), np.uint8)
    out[((y - 0.45 * h) / (0.3 * h)) ** 2 + ((x - w / 2) / (0.2 * w)) ** 2 < 1] = 2
    out[((y - 0.45 * h) / (0.22 * h)) ** 2 + ((x - w / 2) / (0.13 * w)) ** 2 < 1] = 1
    out[((y - 0.85 * h) / (0.1 * h)) ** 2 + ((x - w / 2) / (0.15 * w)) ** 2 < 1] = 3
    return out


def batch(n: int = 4) -> np.ndarray:
    maps = np.stack([np.roll(heart(), 2 * i, axis=1) for i in range(n)])
    return maps


def ranges(config: AppearanceConfig) -> np.ndarray:
    return np.array(config.ranges(), np.float64)


# the presets' own ranges (gamma down to 0.5 included: the kernel's power is within 4e-6 of NumPy's)
CONFIGS = {
    "randomised-echo": RANDOMISED,
    "randomised-mr": replace(RANDOMISED, modality="mr", sector=False),
    "randomised-ct": replace(RANDOMISED, modality="ct", sector=False),
    "appearance-echo": APPEARANCE,
}


def keys_of(idx) -> np.ndarray:
    return np.asarray(idx, np.uint64) * np.uint64(7919) + np.uint64(11)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_kernel_conformance_and_reference(name):
    cfg = CONFIGS[name]
    maps = batch()
    base = np.random.default_rng(0).random(maps.shape).astype(np.float32)
    r = ranges(cfg)
    kwargs = {"num_classes": 4, "modality": cfg.modality, "texture": cfg.texture, "sector": cfg.uses_sector}

    def kernel(x, idx):
        single = x.ndim == 2
        b = None
        if not cfg.texture:
            positions = np.atleast_1d(idx)
            b = base[positions] if not single else base[idx]
            if len(positions) == 0:
                b = base[:0]
        images, params = appearance(x, keys_of(np.atleast_1d(idx)), r, base=b, **kwargs)
        assert params.shape[-1] == appearance_params_size(4)
        return images

    def reference(one, i):
        image, _ = ref.appearance(one, base[i], int(keys_of(i)), r, **kwargs)
        return image

    out = check_kernel(kernel, maps, reference=reference, labels=False, out_dtype=np.float32, atol=2e-5)
    assert 0.0 <= out.min() and out.max() <= 1.0
    for i in range(len(maps)):
        _, params = appearance(
            maps[i], keys_of([i]), r, base=None if cfg.texture else base[i][None], **kwargs
        )
        expected = ref.appearance_params(int(keys_of(i)), r, 4, maps[i], cfg.uses_sector)
        np.testing.assert_allclose(params, expected, rtol=1e-6, atol=1e-6)


def test_power_matches_numpy_within_its_stated_error():
    v = np.linspace(0, 1, 100_001, dtype=np.float32)
    odd = np.array([np.nan, -0.5, 0.0, 1.5], np.float32)  # clipped to [0, 1] first, NaN as 0
    for gamma in (0.5, 0.7, 1.0, 1.6, 2.5, 4.0):
        x = np.concatenate([v, odd])
        mant, expo, shift = np.empty_like(x), np.empty_like(x), np.empty(x.shape, np.int32)
        k._power(x, x.view(np.int32), mant, mant.view(np.int32), expo, shift, np.float32(gamma))
        exact = v.astype(np.float64) ** np.float64(np.float32(gamma))
        assert np.abs(x[: len(v)] - exact).max() < 3e-6, gamma
        large = exact > 1e-6
        assert (np.abs(x[: len(v)] - exact)[large] / exact[large]).max() < 4e-6, gamma
        assert (x[-4:-1] >= 0).all() and (x[-4:-1] < 1e-9).all() and x[-1] == 1.0, gamma


@pytest.mark.parametrize("n", [1, 2, 3, 5, 40])
def test_axis_plan_is_the_blur_then_the_resolution_loss(n):
    from scipy import ndimage as ndi

    line = np.random.default_rng(n).random(n)
    for sigma in (0.0, 0.3, 1.7, 2.9):
        for factor in (1.0, 1.3, 2.5, 3.7):
            s = k._prefilter_sigma(np.float32(sigma), np.float32(factor))
            index, weight, lower, upper, frac = k._axis_plan(n, s, np.float32(factor))
            values = (weight * line[index]).sum(axis=1)
            out = values[lower] + frac * (values[upper] - values[lower])
            blurred = ndi.correlate1d(line, ref._taps(float(s)), mode="nearest")
            expected = ref._lose_resolution(blurred[None], float(np.float32(factor)), 1)[0]
            np.testing.assert_allclose(out, expected, atol=1e-6, err_msg=f"sigma {sigma}, factor {factor}")


@pytest.mark.parametrize("shape", [(8, 8), (13, 21), (16, 3), (1, 9)])
def test_transpose_moves_every_value_including_the_edges_past_whole_tiles(shape):
    src = np.random.default_rng(0).random(shape).astype(np.float32)
    dst = np.full((shape[1], shape[0] + 5), np.nan, np.float32)
    k._transpose(src, dst, *shape)
    np.testing.assert_array_equal(dst[:, : shape[0]], src.T)
    assert np.isnan(dst[:, shape[0] :]).all()  # nothing written past the columns


@pytest.mark.parametrize("name", ["randomised-echo", "randomised-mr"])
def test_sizes_off_the_simd_tiles_match_the_reference(name):
    cfg = CONFIGS[name]
    maps = np.stack([np.roll(heart(37, 45), 3 * i, axis=1) for i in range(2)])
    kwargs = {"num_classes": 4, "modality": cfg.modality, "texture": cfg.texture, "sector": cfg.uses_sector}
    images, _ = appearance(maps, keys_of(np.arange(2)), ranges(cfg), **kwargs)
    for i in range(2):
        expected, _ = ref.appearance(maps[i], None, int(keys_of(i)), ranges(cfg), **kwargs)
        np.testing.assert_allclose(images[i], expected, atol=2e-5)


def test_pixel_noise_is_standard_and_independent():
    n = 1 << 18
    draws = []
    for key in (11, 12):
        lo, hi = k._stream_words(np.uint64(key), k._TEXTURE)
        draws.append(np.empty(n, np.float32))
        k._normals(lo, hi, 0, draws[-1])
    a, b = draws
    assert abs(a.mean()) < 0.01 and abs(a.var() - 1.0) < 0.01 and np.abs(a).max() <= 3.46
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.01  # another sample's stream
    assert abs(np.corrcoef(a[1:], a[:-1])[0, 1]) < 0.01  # the next pixel
    assert abs(ref._pixel_rayleigh(11, k._SPECKLE_A, np.arange(n)).mean() - 1.0) < 0.01


def test_restyler_draws_from_schema_values_and_refuses_others():
    maps = batch(3)  # CAMUS values are their own class indices
    keys = keys_of(np.arange(3))
    images, params = Restyler(CAMUS, RANDOMISED)(maps, keys)
    unit, expected = appearance(maps, keys, ranges(RANDOMISED), num_classes=4, modality="echo",
                                texture=True, sector=True)  # fmt: skip
    assert images.shape == (3, 1, *maps.shape[1:])
    np.testing.assert_allclose(images[:, 0], 2 * unit - 1, atol=1e-6)
    np.testing.assert_array_equal(params, expected)
    gappy = LabelSchema("gappy", (LabelClass("a", 2), LabelClass("b", 5), LabelClass("c", 9)))
    values = np.array([0, 2, 5, 9], np.uint8)[maps]  # the same classes under other values
    again, _ = Restyler(gappy, RANDOMISED)(values, keys)
    np.testing.assert_array_equal(again, images)
    for schema, bad in ((CAMUS, maps.copy()), (gappy, values.copy())):
        bad[1, 3, 3] = 7
        with pytest.raises(LabelValueError, match="Label value 7"):
            Restyler(schema, RANDOMISED)(bad, keys)


def test_parameters_lie_in_their_ranges():
    maps = np.zeros((64, 48, 48), np.uint8)  # no labels: the sector is not widened
    params = appearance(maps, keys_of(np.arange(64)), ranges(RANDOMISED), num_classes=4, modality="echo",
                        texture=True, sector=True)[1]  # fmt: skip
    for j, name in enumerate(RANGED):
        lo, hi = getattr(RANDOMISED, name)
        assert (params[:, j] >= np.float32(lo) - 1e-6).all() and (
            params[:, j] <= np.float32(hi) + 1e-6
        ).all(), name
        assert params[:, j].std() > 0 or lo == hi, name
    means = params[:, k.CLASS0 : k.CLASS0 + 4]
    assert means.min() >= RANDOMISED.class_mean[0] and means.max() <= RANDOMISED.class_mean[1]
    bias = params[:, k.BIAS0 : k.BIAS0 + 16]
    assert (np.abs(bias) <= 3.47 * params[:, [k.BIAS]] + 1e-6).all()


@pytest.mark.parametrize("spill", [0.0, 0.03])
def test_sector_widens_until_the_labels_spill_at_most_the_drawn_share(spill):
    maps = np.stack([heart(128, 128)] * 16)
    maps[8:, 60:70, 2:126] = 2  # a band across the whole width: no sector of the ranges holds it
    cfg = replace(APPEARANCE, sector_spill=(spill, spill), noise=(0.0, 0.0), bias=(0.0, 0.0), blur=(0.0, 0.0))
    base = np.full(maps.shape, 0.8, np.float32)
    images, params = appearance(maps, keys_of(np.arange(16)), ranges(cfg), num_classes=4, modality="echo",
                                texture=False, sector=True, base=base)  # fmt: skip
    for labels, image, p in zip(maps, images, params, strict=True):
        labelled = labels > 0
        outside = (image[labelled] < 0.4).mean()  # pixel centres outside the fan are under half covered
        assert outside <= spill + 0.01, (outside, p[k.HALF_ANGLE])
    assert (params[8:, k.HALF_ANGLE] > cfg.sector_half_angle[1]).all()  # widened for the band
    if spill == 0.0:
        assert (params[:8, k.HALF_ANGLE] >= cfg.sector_half_angle[0]).all()
    # the fan has soft (anti-aliased) edges: partial coverage along the borders, zero far outside
    partial = (images > 0.01) & (images < 0.79)
    assert partial.sum(axis=(1, 2)).min() > 50
    assert (images[:, 0, :8] == 0).all()


def test_the_spill_follows_the_drawn_share_on_average():
    maps = np.stack([np.roll(heart(128, 128), s, axis=1) for s in range(-20, 20, 2)])
    images, params = appearance(maps, keys_of(np.arange(len(maps))), ranges(APPEARANCE), num_classes=4,
                                modality="echo", texture=False, sector=True, base=np.ones(maps.shape, np.float32))  # fmt: skip
    shares = [(im[m > 0] < 0.5).mean() for im, m in zip(images, maps, strict=True)]
    assert max(shares) <= APPEARANCE.sector_spill[1] + 0.01
    assert (params[:, k.HALF_ANGLE] <= 89).all()


def test_speckle_correlates_across_more_pixels_with_depth():
    cfg = replace(
        RANDOMISED, class_std=(0.0, 0.0), class_mean=(0.5, 0.5), blur=(0.0, 0.0), resolution=(1.0, 1.0),
        bias=(0.0, 0.0), noise=(1.0, 1.0), speckle_width=(0.03, 0.03), gamma=(1.0, 1.0),
        contrast=(1.0, 1.0), brightness=(0.0, 0.0), sector=False,
    )  # fmt: skip
    images, _ = appearance(np.zeros((8, 128, 128), np.uint8), keys_of(np.arange(8)), ranges(cfg),
                           num_classes=1, modality="echo", texture=True, sector=False)  # fmt: skip

    def lag1(rows):
        a = rows - rows.mean(axis=-1, keepdims=True)
        return float((a[..., 1:] * a[..., :-1]).sum() / (a * a).sum())

    near, far = lag1(images[:, 5:20]), lag1(images[:, 105:120])
    assert far > near + 0.2, (near, far)


def test_one_map_gives_different_images_and_the_same_key_the_same_bytes():
    maps = np.stack([heart(64, 64)] * 16)
    images, params = appearance(maps, keys_of(np.arange(16)), ranges(RANDOMISED), num_classes=4,
                                modality="echo", texture=True, sector=True)  # fmt: skip
    means = images.mean(axis=(1, 2))
    assert means.std() > 0.03
    assert len({im.tobytes() for im in images}) == 16
    again, params_again = appearance(maps[::-1], keys_of(np.arange(16))[::-1], ranges(RANDOMISED),
                                     num_classes=4, modality="echo", texture=True, sector=True)  # fmt: skip
    np.testing.assert_array_equal(again[::-1], images)
    np.testing.assert_array_equal(params_again[::-1], params)


def test_nan_base_pixels_do_not_escape_the_range():
    base = np.full((1, 32, 32), np.nan, np.float32)
    images, _ = appearance(np.zeros((1, 32, 32), np.uint8), keys_of([0]), ranges(APPEARANCE), num_classes=4,
                           modality="mr", texture=False, sector=False, base=base)  # fmt: skip
    assert np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1


@pytest.mark.parametrize(
    "change, message",
    [
        ({"keys": np.zeros(3, np.uint64)}, "one key per sample"),
        ({"num_classes": 2}, "class indices below 2"),
        ({"modality": "pet"}, "modality"),
        ({"texture": False}, "base images"),
        ({"ranges": np.zeros((3, 2))}, "ranges of shape"),
    ],
)
def test_bad_arguments_are_refused(change, message):
    args = {"keys": keys_of(np.arange(2)), "ranges": ranges(RANDOMISED), "num_classes": 4, "modality": "echo",
            "texture": True, "sector": True}  # fmt: skip
    args |= change
    with pytest.raises(KernelInputError, match=message):
        appearance(batch(2), args.pop("keys"), args.pop("ranges"), **args)


def test_config_round_trips_and_refuses_bad_ranges():
    config = BuildConfig(appearance={"gamma": [0.9, 1.1], "enabled": False}, randomised={"modality": "mr"})
    assert config.appearance.gamma == (0.9, 1.1) and not config.appearance.enabled
    assert config.appearance.contrast == APPEARANCE.contrast  # unnamed keys keep the defaults
    assert config.randomised.texture and config.randomised.modality == "mr"
    assert BuildConfig.from_dict(config.to_dict()) == config
    assert config.with_overrides({"appearance": {"noise": [0.0, 0.2]}}).appearance.noise == (0.0, 0.2)
    for bad, message in (
        ({"gamma": [2.0, 1.0]}, "lo <= hi"),
        ({"noise": "0.1"}, r"\[lo, hi\]"),
        ({"modality": "xray"}, "modality"),
        ({"speckel_width": [0, 0.1]}, "speckel_width"),
        ({"enabled": "yes"}, "true or false"),
    ):
        with pytest.raises(ConfigError, match=message):
            BuildConfig(appearance=bad)


def test_presets_choose_the_modality():
    from synthgen.schemas.build_config import preset_config

    assert preset_config("echo").appearance.uses_sector
    assert (
        preset_config("sa-mr").randomised.modality == "mr"
        and not preset_config("sa-mr").appearance.uses_sector
    )
    assert preset_config("ct").appearance.modality == "ct"
    assert preset_config("echo").fixed_sector  # a drawn sector is intersected with the learned one
    assert not BuildConfig(generator="randomised").fixed_sector  # which the randomised generator lacks
