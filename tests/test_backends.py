"""The inference interface: every backend computes the torch generator's function, batched and checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.generators import SCHEMA, SIZE, VARIANTS, label_maps, shared_checkpoints, styles

from synthgen.errors import BackendUnavailableError, CheckpointError, ConfigError, LabelValueError
from synthgen.inference import backends
from synthgen.inference.backends import open_generator, ort_cuda_available
from synthgen.inference.onnx_export import onehot
from synthgen.inference.tensorrt import tensorrt_status
from synthgen.models.weights import load_generator
from synthgen.schemas import BACKENDS
from synthgen.schemas.generator_spec import read_spec
from synthgen.schemas.labels import label_lut

TRT_OK, TRT_WHY = tensorrt_status()
needs_trt = pytest.mark.skipif(not TRT_OK, reason=f"TensorRT backend not testable here: {TRT_WHY}")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return shared_checkpoints(tmp_path_factory)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHGEN_CACHE_DIR", str(tmp_path / "cache"))


def reference(checkpoint, labels, z):
    """The torch module called directly on one-hot labels built here, independently of the backends."""
    model, spec = load_generator(checkpoint)
    x = torch.from_numpy(onehot(label_lut(spec.schema)[labels], spec.schema.num_classes))
    with torch.inference_mode():
        return (model(x, torch.from_numpy(z)) if z is not None else model(x)).numpy()


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_backend_matches_torch_module_and_splits_batches(name, backend, checkpoints):
    gen = open_generator(checkpoints[name], backend=backend, max_batch=4)
    assert gen.backend == backend and gen.spec.schema == SCHEMA
    for n in (1, 3, 7):  # 7 > max_batch: split into 4 + 3
        labels, z = label_maps(n, seed=n), styles(n, gen.style_dim, seed=n)
        images = gen(labels, z)
        assert images.dtype == np.float32 and images.shape == (n, 1, SIZE, SIZE)
        assert np.abs(images).max() <= 1.0
        np.testing.assert_allclose(images, reference(checkpoints[name], labels, z), atol=1e-4)


def test_style_dim_follows_the_checkpoint(checkpoints):
    dims = {name: open_generator(path, backend="onnxruntime").style_dim for name, path in checkpoints.items()}
    assert dims == {name: read_spec(path).style_dim for name, path in checkpoints.items()}
    assert (dims["spade-style"], dims["spade-nostyle-instance"], dims["pix2pix"]) == (8, 4, 0)


@pytest.mark.skipif(TRT_OK, reason="TensorRT and a GPU are present, so auto picks TensorRT")
def test_auto_picks_onnxruntime_on_cpu_and_says_why(checkpoints, caplog):
    with caplog.at_level("INFO", logger="synthgen.inference.backends"):
        gen = open_generator(checkpoints["pix2pix"])
    assert (gen.backend, gen.device) == ("onnxruntime", "cpu")
    assert "no TensorRT" in gen.reason and "CPU" in gen.reason
    assert "onnxruntime" in caplog.text and gen.reason in caplog.text


@pytest.mark.skipif(TRT_OK or ort_cuda_available(), reason="a real GPU path is present")
def test_auto_with_a_broken_cuda_provider_falls_back_to_cpu_and_says_so(checkpoints, monkeypatch):
    monkeypatch.setattr(backends, "ort_cuda_available", lambda: True)
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):  # ONNX Runtime's own warning
        gen = open_generator(checkpoints["pix2pix"])
    assert (gen.backend, gen.device) == ("onnxruntime", "cpu")
    assert "CUDA provider" in gen.reason and "failed to load" in gen.reason


def test_onnx_file_opens_directly(checkpoints):
    gen = open_generator(checkpoints["spade-style"] / "generator.onnx", backend="auto")
    assert gen.backend in ("onnxruntime", "tensorrt") and gen.style_dim == 8


@pytest.mark.parametrize("threads", [1, 2])
def test_onnxruntime_is_deterministic_run_to_run(threads, checkpoints):
    labels, z = label_maps(5, seed=3), styles(5, 8, seed=3)
    first = open_generator(checkpoints["spade-style"], backend="onnxruntime", threads=threads, max_batch=2)
    second = open_generator(checkpoints["spade-style"], backend="onnxruntime", threads=threads, max_batch=2)
    out = first(labels, z)
    assert np.array_equal(out, first(labels, z))
    assert np.array_equal(out, second(labels, z))


def test_onnxruntime_threads_split_the_batch_and_give_the_same_bytes(checkpoints):
    labels, z = label_maps(7, seed=5), styles(7, 8, seed=5)
    one = open_generator(checkpoints["spade-style"], backend="onnxruntime", threads=1, max_batch=4)
    three = open_generator(checkpoints["spade-style"], backend="onnxruntime", threads=3, max_batch=4)
    assert len(three._sessions) == 3 and len(one._sessions) == 1
    assert np.array_equal(one(labels, z), three(labels, z))  # batches of 4 and 3, split 2+1+1 and 1+1+1
    assert np.array_equal(one(labels[:1], z[:1]), three(labels[:1], z[:1]))


def test_sample_does_not_depend_on_its_batch(checkpoints):
    gen = open_generator(checkpoints["spade-style"], backend="onnxruntime", max_batch=64)
    labels, z = label_maps(6, seed=4), styles(6, 8, seed=4)
    np.testing.assert_allclose(gen(labels, z)[2:3], gen(labels[2:3], z[2:3]), atol=1e-5)


def test_bad_inputs_give_clear_errors(checkpoints):
    gen = open_generator(checkpoints["spade-style"], backend="onnxruntime")
    labels, z = label_maps(2), styles(2, 8)
    with pytest.raises(CheckpointError, match=f"Expected label maps of {SIZE} x {SIZE}"):
        gen(np.zeros((2, SIZE, SIZE * 2), np.uint8), z)
    bad = labels.copy()
    bad[1, 0, 0] = 3
    with pytest.raises(LabelValueError, match=r"Label value 3 .* not in schema 'tiny'"):
        gen(bad, z)
    with pytest.raises(LabelValueError, match="uint8"):
        gen(labels.astype(np.int64), z)
    with pytest.raises(ConfigError, match=r"styles of shape \(2, 8\)\. Got None"):
        gen(labels, None)
    with pytest.raises(ConfigError, match=r"Got \(2, 7\)"):
        gen(labels, np.zeros((2, 7), np.float32))
    with pytest.raises(ConfigError, match="finite"):
        gen(labels, np.full((2, 8), np.nan, np.float32))
    pix = open_generator(checkpoints["pix2pix"], backend="onnxruntime")
    with pytest.raises(ConfigError, match="takes none"):
        pix(labels, z)
    assert pix(labels[:0]).shape == (0, 1, SIZE, SIZE)


def test_bad_paths_and_options(tmp_path, checkpoints):
    with pytest.raises(CheckpointError, match="There is none"):
        open_generator(tmp_path / "missing")
    with pytest.raises(CheckpointError, match=r"generator\.json inside"):
        open_generator(tmp_path)
    (tmp_path / "weights.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"an \.onnx file"):
        open_generator(tmp_path / "weights.pt")
    with pytest.raises(ConfigError, match="backend in"):
        open_generator(checkpoints["pix2pix"], backend="tflite")
    with pytest.raises(ConfigError, match="checkpoint folder for the 'torch' backend"):
        open_generator(checkpoints["pix2pix"] / "generator.onnx", backend="torch")
    with pytest.raises(ConfigError, match="max_batch"):
        open_generator(checkpoints["pix2pix"], backend="onnxruntime", max_batch=0)
    with pytest.raises(ConfigError, match="threads"):
        open_generator(checkpoints["pix2pix"], backend="onnxruntime", threads=0)
    assert set(BACKENDS) == {"auto", "torch", "torch-compile", "onnxruntime", "onnxruntime-int8", "tensorrt"}


@pytest.mark.skipif(TRT_OK, reason="TensorRT and a GPU are present: the error path does not apply")
def test_tensorrt_without_gpu_is_a_clear_error(checkpoints):
    with pytest.raises(BackendUnavailableError, match="Expected TensorRT and an NVIDIA GPU"):
        open_generator(checkpoints["pix2pix"], backend="tensorrt")


@needs_trt
@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize(("fp16", "atol"), [(False, 2e-3), (True, 5e-2)])
def test_tensorrt_matches_torch(name, fp16, atol, checkpoints):
    gen = open_generator(checkpoints[name], backend="tensorrt", max_batch=4, fp16=fp16)
    assert gen.backend == "tensorrt" and gen.device.startswith("cuda")
    labels, z = label_maps(7, seed=9), styles(7, gen.style_dim, seed=9)
    images = gen(labels, z)
    np.testing.assert_allclose(images, reference(checkpoints[name], labels, z), atol=atol)
    assert np.array_equal(images, gen(labels, z))


@pytest.mark.slow
def test_torch_compile_matches_eager(checkpoints):
    gen = open_generator(checkpoints["pix2pix"], backend="torch-compile", threads=None, max_batch=2)
    assert gen.backend == "torch-compile"
    labels = label_maps(4, seed=2)  # batches of 2, the size compiled at open: no recompilation
    np.testing.assert_allclose(gen(labels), reference(checkpoints["pix2pix"], labels, None), atol=1e-4)
