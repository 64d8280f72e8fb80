"""ONNX export: faithful to torch for every registered architecture, dynamic batch, sidecar, cache, FP16 pass."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from helpers.generators import VARIANTS, shared_checkpoints

from synthgen.cli import cli
from synthgen.errors import CheckpointError, ConfigError, ExportError
from synthgen.inference import onnx_export as export_mod
from synthgen.inference.fp16 import node_precisions, sensitive_nodes, to_mixed_precision
from synthgen.inference.onnx_export import (
    OnnxExportConfig,
    cached_onnx,
    checkpoint_hash,
    export_onnx,
    input_names,
    read_onnx_artifact,
    sample_inputs,
    sidecar_path,
)
from synthgen.inference.tensorrt import engine_key, tensorrt_status
from synthgen.models.registry import ARCHITECTURES
from synthgen.models.weights import load_generator


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return shared_checkpoints(tmp_path_factory)


@pytest.fixture(scope="module")
def exported(checkpoints):
    return {name: read_onnx_artifact(path / "generator.onnx") for name, path in checkpoints.items()}


def test_fixture_covers_every_registered_architecture():
    assert {arch for arch, _ in VARIANTS.values()} == set(ARCHITECTURES)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_onnx_matches_torch_at_several_batch_sizes(name, checkpoints, exported):
    art = exported[name]
    assert art.path == checkpoints[name] / "generator.onnx"
    assert art.max_abs_diff < 1e-4
    model, spec = load_generator(checkpoints[name])
    session = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    for n in (1, 3, 7):
        feeds = sample_inputs(spec, n, seed=10 + n)
        with torch.inference_mode():
            expected = model(*(torch.from_numpy(feeds[k]) for k in input_names(spec))).numpy()
        (got,) = session.run(["images"], feeds)
        assert got.shape == (n, spec.channels, spec.image_size, spec.image_size)
        assert np.abs(expected).max() > 0.05  # the random weights give a non-trivial output
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_graph_is_clean_with_a_symbolic_batch_axis(exported):
    model = onnx.load(str(exported["pix2pix"].path))
    ops = {n.op_type for n in model.graph.node}
    assert "BatchNormalization" not in ops  # folded into the convolutions
    assert model.opset_import[0].version >= 17
    for value in (*model.graph.input, *model.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param  # named, not fixed
    assert [i.name for i in onnx.load(str(exported["spade-style"].path)).graph.input] == ["labels", "style"]


def test_sidecar_records_spec_hashes_and_difference(checkpoints, exported):
    art = exported["spade-style"]
    data = json.loads(sidecar_path(art.path).read_text())
    assert data["checkpoint_hash"] == checkpoint_hash(checkpoints["spade-style"])
    assert data["max_abs_diff"] == art.max_abs_diff
    again = read_onnx_artifact(art.path)
    assert again.spec == art.spec and again.onnx_hash == art.onnx_hash


def test_changed_onnx_file_is_rejected(tmp_path, exported):
    art = exported["pix2pix"]
    copy = tmp_path / "g.onnx"
    copy.write_bytes(art.path.read_bytes() + b"\0")
    sidecar_path(copy).write_text(sidecar_path(art.path).read_text())
    with pytest.raises(CheckpointError, match="changed after export"):
        read_onnx_artifact(copy)
    (tmp_path / "lonely.onnx").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="sidecar"):
        read_onnx_artifact(tmp_path / "lonely.onnx")


def test_export_above_tolerance_fails_and_writes_nothing(tmp_path, checkpoints, monkeypatch):
    monkeypatch.setattr(export_mod, "compare_with_torch", lambda *a: 0.5)
    out = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match=r"max absolute difference of 0\.5"):
        export_onnx(OnnxExportConfig(str(checkpoints["pix2pix"]), out=str(out)))
    assert list(tmp_path.iterdir()) == []


def test_export_config_and_missing_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="opset"):
        OnnxExportConfig("x", opset=13)
    cfg = OnnxExportConfig("x", tolerance=1e-2)
    assert OnnxExportConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(CheckpointError, match="There is none"):
        export_onnx(OnnxExportConfig(str(tmp_path / "missing")))


def test_cache_is_keyed_by_checkpoint_hash(tmp_path, checkpoints, monkeypatch):
    monkeypatch.setenv("SYNTHGEN_CACHE_DIR", str(tmp_path / "cache"))
    ckpt = tmp_path / "p"
    ckpt.mkdir()
    for f in checkpoints["pix2pix"].glob("generator.*"):
        if f.suffix != ".onnx" and not f.name.endswith(".onnx.json"):
            (ckpt / f.name).write_bytes(f.read_bytes())
    first = cached_onnx(ckpt)
    assert first.path.parent.parent == tmp_path / "cache" / "onnx"

    def no_export(*args):
        raise AssertionError("exported again")

    monkeypatch.setattr(export_mod, "_export_checked", no_export)
    assert cached_onnx(ckpt).path == first.path  # reused, not exported again
    assert not list((tmp_path / "cache" / "onnx").glob(".*"))  # no temporary folder left


def test_cli_export_onnx(tmp_path, checkpoints):
    out = tmp_path / "cli.onnx"
    result = CliRunner().invoke(cli, ["export", str(checkpoints["pix2pix"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "max |ONNX - torch|" in result.output
    assert out.is_file() and sidecar_path(out).is_file()


def test_cli_export_missing_checkpoint_fails():
    result = CliRunner().invoke(cli, ["export", "/nonexistent/ckpt"])
    assert result.exit_code != 0 and "does not exist" in result.output


@pytest.mark.skipif(
    tensorrt_status()[0], reason="TensorRT and a GPU are present: the error path does not apply"
)
def test_cli_export_tensorrt_without_gpu_is_one_clear_line(exported):
    result = CliRunner().invoke(
        cli, ["export", str(exported["pix2pix"].path), "--format", "tensorrt", "--fp16"]
    )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("synthgen: error: Expected TensorRT and an NVIDIA GPU")


def test_engine_key_depends_on_everything_it_must():
    base = engine_key("sha256:a", "H100", "11.4", {"fp16": True, "max_batch": 64})
    assert base != engine_key("sha256:b", "H100", "11.4", {"fp16": True, "max_batch": 64})
    assert base != engine_key("sha256:a", "H200", "11.4", {"fp16": True, "max_batch": 64})
    assert base != engine_key("sha256:a", "H100", "10.13", {"fp16": True, "max_batch": 64})
    assert base != engine_key("sha256:a", "H100", "11.4", {"fp16": False, "max_batch": 64})


@pytest.mark.parametrize("name", ["spade-style", "pix2pix", "cyclegan"])
def test_fp16_pass_keeps_sensitive_layers_fp32_and_stays_close(name, exported):
    model = onnx.load(str(exported[name].path))
    mixed = to_mixed_precision(model)
    onnx.checker.check_model(mixed, full_check=True)
    precisions = node_precisions(mixed)
    keep = sensitive_nodes(mixed)
    convs = [n for n in mixed.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert precisions[convs[-1].name] == onnx.TensorProto.FLOAT and convs[-1].name in keep
    assert all(precisions[c.name] == onnx.TensorProto.FLOAT16 for c in convs[:-1])
    assert all(
        precisions[n.name] == onnx.TensorProto.FLOAT
        for n in mixed.graph.node
        if n.op_type in ("BatchNormalization", "InstanceNormalization")
    )
    assert [v.type.tensor_type.elem_type for v in mixed.graph.output] == [onnx.TensorProto.FLOAT]
    spec = exported[name].spec
    feeds = sample_inputs(spec, 3, seed=1)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, feeds
    )[0]
    half = ort.InferenceSession(mixed.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, feeds
    )[0]
    assert half.dtype == np.float32
    np.testing.assert_allclose(half, ref, atol=2e-2)
    everything = node_precisions(to_mixed_precision(model, keep_fp32=()))
    assert everything[convs[-1].name] == onnx.TensorProto.FLOAT16
