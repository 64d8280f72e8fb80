"""INT8 generation: the quantised graph stays within the gate's PSNR of FP32, the gate refuses a bad
quantisation, the cache is keyed by the model and the settings, and the bytes do not depend on how a
build schedules its batches."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from helpers.checkpoints import random_checkpoint
from helpers.generators import SIZE, label_maps, shared_checkpoints, styles

from synthgen.engine.build import RunOptions, build_dataset
from synthgen.errors import BackendUnavailableError, ConfigError
from synthgen.inference import quantize
from synthgen.inference.backends import open_generator
from synthgen.inference.onnx_export import cache_root, cached_onnx, sidecar_path
from synthgen.inference.quantize import (
    INT8_NAME,
    CalibrationSet,
    QuantConfig,
    blob_maps,
    cache_key,
    cached_int8,
)
from synthgen.kernels import psnr
from synthgen.schemas import CAMUS
from synthgen.schemas.build_config import BuildConfig, load_build_config

SMALL = QuantConfig(calibration_maps=32, gate_maps=16)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return shared_checkpoints(tmp_path_factory)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHGEN_CACHE_DIR", str(tmp_path / "cache"))


def test_psnr_on_the_0_255_scale():
    a = np.zeros((2, 1, 4, 4), np.float32)
    assert psnr(a, a, data_range=2.0) == float("inf")
    # one grey level (2 / 255 in [-1, 1]) everywhere: MSE 1 on 0..255, PSNR 20 log10(255)
    assert psnr(a + 2 / 255, a, data_range=2.0) == pytest.approx(20 * np.log10(255.0), abs=1e-3)


def test_styles_are_fed_to_calibration_and_gate(checkpoints):
    """A style-taking SPADE quantises and is measured (its tiny random weights fall under 35 dB with
    this small calibration, so the threshold is lowered here)."""
    quant = QuantConfig(**{**vars(SMALL), "min_psnr": 0.0})
    gen = open_generator(checkpoints["spade-style"], backend="onnxruntime-int8", quant=quant)
    labels, z = label_maps(4, seed=3), styles(4, gen.style_dim, seed=3)
    assert 15.0 < gen.psnr_db < float("inf") and gen(labels, z).shape == (4, 1, SIZE, SIZE)


@pytest.mark.parametrize("name", ["pix2pix"])
def test_int8_images_are_within_the_gate_of_fp32(name, checkpoints):
    fp32 = open_generator(checkpoints[name], backend="onnxruntime", max_batch=8)
    int8 = open_generator(checkpoints[name], backend="onnxruntime-int8", max_batch=8, quant=SMALL)
    assert int8.backend == "onnxruntime-int8" and int8.spec == fp32.spec
    graph = onnx.load(str(int8.path))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.graph.node}
    labels, z = label_maps(24, seed=11), styles(24, fp32.style_dim, seed=11)  # maps the gate never saw
    a, b = int8(labels, z), fp32(labels, z)
    assert a.shape == b.shape == (24, 1, SIZE, SIZE)
    measured = psnr(a, b, data_range=2.0)
    assert 35.0 <= measured < float("inf")  # within the gate, and really quantised (not the FP32 graph)
    assert int8.psnr_db >= 35.0 and f"{int8.psnr_db:.1f} dB" in int8.reason


def test_the_gate_refuses_an_impossible_threshold_in_one_line(checkpoints):
    with pytest.raises(BackendUnavailableError, match=r"within 200 dB PSNR of FP32") as e:
        open_generator(
            checkpoints["pix2pix"],
            backend="onnxruntime-int8",
            quant=QuantConfig(**{**vars(SMALL), "min_psnr": 200}),
        )
    assert "\n" not in str(e.value) and "--backend onnxruntime" in str(e.value)


def test_the_gate_refuses_a_corrupted_calibration(checkpoints):
    """Calibrated on background alone, the activation ranges miss every class: the gate, on proper
    maps, measures the damage and refuses it, while the same settings with a proper calibration pass.
    (The tiny random generator is robust: about 40 dB corrupted against about 58 dB proper here, so
    this gate asks 50 dB.)"""
    good = blob_maps(open_generator(checkpoints["pix2pix"], backend="onnxruntime").spec)

    def background_when_calibrating(n, seed):
        maps = good.draw(n, seed)
        return np.zeros_like(maps) if seed == SMALL.calibration_seed else maps

    corrupted = CalibrationSet("background-only", background_when_calibrating)
    strict = QuantConfig(**{**vars(SMALL), "min_psnr": 50.0})
    with pytest.raises(BackendUnavailableError, match="within 50 dB PSNR of FP32"):
        open_generator(
            checkpoints["pix2pix"], backend="onnxruntime-int8", calibration=corrupted, quant=strict
        )
    gen = open_generator(checkpoints["pix2pix"], backend="onnxruntime-int8", calibration=good, quant=strict)
    assert gen.psnr_db >= 50.0


def test_calibration_maps_outside_the_schema_are_refused(checkpoints):
    bad = CalibrationSet("sevens", lambda n, seed: np.full((n, SIZE, SIZE), 7, np.uint8))
    with pytest.raises(Exception, match="7"):
        open_generator(checkpoints["pix2pix"], backend="onnxruntime-int8", calibration=bad, quant=SMALL)


def test_the_cache_is_keyed_by_model_and_settings(checkpoints, monkeypatch):
    fp32 = cached_onnx(checkpoints["pix2pix"])
    calibration = blob_maps(fp32.spec)
    first = cached_int8(fp32, calibration, SMALL)
    assert first.path.parent.parent == cache_root() / "onnx-int8"
    assert first.path.parent.name == cache_key(fp32, calibration, SMALL)
    sidecar = json.loads(sidecar_path(first.path).read_text())
    assert sidecar["fp32_hash"] == fp32.onnx_hash and sidecar["settings"]["reduce_range"] in (True, False)

    calls = []
    real = quantize.quantize_generator
    monkeypatch.setattr(quantize, "quantize_generator", lambda *a: calls.append(a) or real(*a))
    assert cached_int8(fp32, calibration, SMALL).path == first.path and calls == []  # a hit
    # the threshold is checked at open, not part of the key
    assert (
        cache_key(fp32, calibration, QuantConfig(**{**vars(SMALL), "min_psnr": 40.0}))
        == first.path.parent.name
    )
    other = QuantConfig(**{**vars(SMALL), "per_channel": False})
    assert cached_int8(fp32, calibration, other).path.parent != first.path.parent and len(calls) == 1
    renamed = CalibrationSet("other-maps", calibration.draw)
    assert cached_int8(fp32, renamed, SMALL).path.parent != first.path.parent and len(calls) == 2
    # a corrupted entry is quantised again, not used
    first.path.write_bytes(first.path.read_bytes()[:-10])
    again = cached_int8(fp32, calibration, SMALL)
    assert len(calls) == 3 and again.path == first.path and os.path.getsize(again.path) > 0
    # another model, another entry
    fp32_other = cached_onnx(checkpoints["spade-style"])
    assert cache_key(fp32_other, calibration, SMALL) != first.path.parent.name


def test_reduce_range_follows_vnni(monkeypatch):
    monkeypatch.setattr(quantize, "cpu_flags", lambda: frozenset({"avx2"}))
    assert QuantConfig().resolved().reduce_range is True
    monkeypatch.setattr(quantize, "cpu_flags", lambda: frozenset({"avx2", "avx512_vnni"}))
    assert QuantConfig().resolved().reduce_range is False
    assert QuantConfig(reduce_range=True).resolved().reduce_range is True


def test_quant_config_is_checked():
    with pytest.raises(ConfigError, match="different calibration and gate seeds"):
        QuantConfig(calibration_seed=3, gate_seed=3)
    with pytest.raises(ConfigError, match="calibration_maps"):
        QuantConfig(calibration_maps=0)


def test_auto_never_picks_int8_and_onnxruntime_stays_fp32(checkpoints):
    assert open_generator(checkpoints["pix2pix"], backend="auto").backend == "onnxruntime"
    gen = open_generator(checkpoints["pix2pix"], backend="onnxruntime")
    assert type(gen).__name__ == "OnnxRuntimeGenerator" and gen.path.name != INT8_NAME


def test_int8_bytes_do_not_depend_on_batching_or_threads(checkpoints):
    labels = label_maps(13, seed=5)
    one = open_generator(
        checkpoints["pix2pix"], backend="onnxruntime-int8", threads=1, max_batch=13, quant=SMALL
    )
    two = open_generator(
        checkpoints["pix2pix"], backend="onnxruntime-int8", threads=2, max_batch=4, quant=SMALL
    )
    whole = one(labels)
    np.testing.assert_array_equal(whole, two(labels))
    np.testing.assert_array_equal(whole[5:9], one(labels[5:9]))


def test_backend_name_round_trips_in_the_build_config():
    config = load_build_config(None, {"backend": "onnxruntime-int8"})
    assert config.backend == "onnxruntime-int8"
    again = BuildConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.backend == "onnxruntime-int8"


def test_int8_build_gives_the_same_bytes_on_every_scheduler(tmp_path):
    import zarr

    checkpoint = random_checkpoint(
        tmp_path / "pix2pix", "pix2pix", CAMUS, image_size=32, width=4, max_width=16, depth=3
    )
    config = load_build_config(
        None,
        {
            "n": 24,
            "image_size": [32, 32],
            "shard_size": 8,
            "generator": str(checkpoint),
            "batch_size": 8,
            "backend": "onnxruntime-int8",
            "appearance": {"enabled": False},
        },
    )
    stores = {}
    for scheduler, workers in (("sync", 1), ("threads", 3), ("processes", 2)):
        out = str(tmp_path / f"{scheduler}.zarr")
        summary = build_dataset(out, config, RunOptions(scheduler=scheduler, workers=workers, progress=False))
        assert summary.backend == "onnxruntime-int8"
        stores[scheduler] = zarr.open_group(out, mode="r")["images"][:]
    np.testing.assert_array_equal(stores["sync"], stores["threads"])
    np.testing.assert_array_equal(stores["sync"], stores["processes"])


def test_an_int8_build_calibrates_on_its_own_label_maps(tmp_path):
    import zarr

    from synthgen.engine.pipeline import build_calibration, generator

    checkpoint = random_checkpoint(
        tmp_path / "pix2pix", "pix2pix", CAMUS, image_size=32, width=4, max_width=16, depth=3
    )
    overrides = {"n": 8, "image_size": [32, 32], "shard_size": 8, "generator": str(checkpoint), "seed": 5}
    config = load_build_config(None, overrides | {"appearance": {"enabled": False}})
    out = str(tmp_path / "b.zarr")
    build_dataset(out, config, RunOptions(scheduler="sync", progress=False))
    calibration = build_calibration(config)
    np.testing.assert_array_equal(calibration.draw(8, 5), zarr.open_group(out, mode="r")["labels"][:])
    assert calibration.name == build_calibration(load_build_config(None, overrides | {"seed": 9})).name
    other = load_build_config(None, overrides | {"deform": {"max_displacement": 1.0}})
    assert build_calibration(other).name != calibration.name
    int8 = generator(load_build_config(None, overrides | {"backend": "onnxruntime-int8", "batch_size": 8}))
    assert int8.backend == "onnxruntime-int8" and f"({calibration.name})" in int8.reason
