"""TensorRT: engines built from the exported ONNX with the TensorRT Python API, cached, and run.

Build: a strongly typed network parsed from the ONNX (``OnnxParser``), one optimisation profile over
batch sizes 1..max_batch (optimised for max_batch), serialised with ``build_serialized_network``.
FP16 is written into the graph first (:mod:`synthgen.inference.fp16`): TensorRT 11 removed
``BuilderFlag.FP16`` and layer precision constraints, and a strongly typed network builds the same
way on 10.x. Normalisation and the last convolution stay FP32 unless ``fp32_sensitive`` is off.

Engines are specific to a GPU model and TensorRT version: the cache key is the ONNX hash, the GPU
name, the TensorRT version and the build options. Run: ``set_input_shape``, ``set_tensor_address``
on torch CUDA tensors, ``execute_async_v3`` on torch's current stream.

Not yet run on a GPU: the project's machines have none (see /work/notes/backends.md).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthgen.errors import BackendUnavailableError, CheckpointError, ConfigError, ExportError
from synthgen.inference.backends import Generator
from synthgen.inference.onnx_export import (
    IMAGES,
    atomic_write,
    cache_root,
    cached_onnx,
    input_names,
    read_onnx_artifact,
    sidecar_path,
)
from synthgen.schemas import GeneratorSpec, parse_float, parse_int, parse_mapping

ENGINE_FORMAT = "synthgen-tensorrt-engine"
ENGINE_FORMAT_VERSION = 1


def tensorrt_status() -> tuple[bool, str]:
    """(available, why): TensorRT importable and a CUDA GPU visible."""
    if importlib.util.find_spec("tensorrt") is None:
        return False, "the tensorrt package is not installed"
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA GPU is visible to torch"
    import tensorrt as trt

    return True, f"TensorRT {trt.__version__} on {torch.cuda.get_device_name(0)}"


def _require_tensorrt() -> Any:
    ok, why = tensorrt_status()
    if not ok:
        raise BackendUnavailableError(
            f"Expected TensorRT and an NVIDIA GPU for the TensorRT backend. Got none: {why}. "
            "Use the onnxruntime or torch backend, or install synthgen[tensorrt] on a machine with an NVIDIA GPU."
        )
    import tensorrt as trt

    return trt


@dataclass(frozen=True)
class TensorRTExportConfig:
    source: str  # checkpoint folder or exported .onnx
    out: str | None = None  # default: the engine cache only
    fp16: bool = False
    fp32_sensitive: bool = True  # with fp16: keep normalisation and the last convolution in FP32
    max_batch: int = 64
    workspace_gib: float = 4.0

    def __post_init__(self) -> None:
        parse_int(self.max_batch, "the TensorRT max batch", lo=1)
        parse_float(self.workspace_gib, "the TensorRT workspace (GiB)", lo=0.0625)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: Any) -> TensorRTExportConfig:
        return cls(**parse_mapping(data, "the TensorRT export config"))

    def build_options(self) -> dict[str, Any]:
        return {
            "fp16": self.fp16,
            "fp32_sensitive": self.fp16 and self.fp32_sensitive,
            "max_batch": self.max_batch,
        }


@dataclass(frozen=True)
class EngineArtifact:
    path: Path
    spec: GeneratorSpec
    onnx_hash: str
    gpu: str
    tensorrt_version: str
    options: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": ENGINE_FORMAT,
            "format_version": ENGINE_FORMAT_VERSION,
            "onnx_hash": self.onnx_hash,
            "gpu": self.gpu,
            "tensorrt_version": self.tensorrt_version,
            "options": self.options,
            "spec": self.spec.to_dict(),
        }


def engine_key(onnx_hash: str, gpu: str, tensorrt_version: str, options: dict[str, Any]) -> str:
    text = json.dumps([onnx_hash, gpu, tensorrt_version, options], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def read_engine_artifact(path: str | Path) -> EngineArtifact:
    path = Path(path)
    try:
        data = parse_mapping(json.loads(sidecar_path(path).read_text()), str(sidecar_path(path)))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(
            f"Expected the sidecar {sidecar_path(path).name} beside engine {path}. Cannot read it: {e}."
        ) from e
    if data.get("format") != ENGINE_FORMAT or data.get("format_version") != ENGINE_FORMAT_VERSION:
        raise CheckpointError(f"Expected a synthgen TensorRT engine sidecar at {sidecar_path(path)}.")
    try:
        return EngineArtifact(
            path,
            GeneratorSpec.from_dict(data["spec"], str(sidecar_path(path))),
            str(data["onnx_hash"]),
            str(data["gpu"]),
            str(data["tensorrt_version"]),
            dict(data["options"]),
        )
    except KeyError as e:
        raise CheckpointError(f"Expected key {e.args[0]!r} in {sidecar_path(path)}. It is missing.") from e


def build_engine(trt: Any, onnx_bytes: bytes, *, max_batch: int, workspace_gib: float) -> bytes:
    """A serialized engine for a (strongly typed) ONNX graph with a dynamic batch axis."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        rest = tuple(tensor.shape)[1:]
        profile.set_shape(tensor.name, (1, *rest), (max_batch, *rest), (max_batch, *rest))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError("TensorRT could not build an engine from the ONNX graph (its log above says why).")
    return bytes(serialized)


def export_tensorrt(config: TensorRTExportConfig) -> EngineArtifact:
    """Build (or reuse from the cache) the engine for ``config.source``; copy it to ``config.out`` if set."""
    import onnx
    import torch

    source = Path(config.source)
    onnx_artifact = cached_onnx(source) if source.is_dir() else read_onnx_artifact(source)
    trt = _require_tensorrt()
    gpu, version, options = torch.cuda.get_device_name(0), str(trt.__version__), config.build_options()
    key = engine_key(onnx_artifact.onnx_hash, gpu, version, options)
    cached = cache_root() / "tensorrt" / f"{key}.engine"
    artifact = EngineArtifact(cached, onnx_artifact.spec, onnx_artifact.onnx_hash, gpu, version, options)
    if not (cached.is_file() and sidecar_path(cached).is_file()):
        onnx_bytes = onnx_artifact.path.read_bytes()
        if config.fp16:
            from synthgen.inference.fp16 import to_mixed_precision

            model = to_mixed_precision(
                onnx.load_from_string(onnx_bytes), None if config.fp32_sensitive else ()
            )
            onnx_bytes = model.SerializeToString()
        engine = build_engine(trt, onnx_bytes, max_batch=config.max_batch, workspace_gib=config.workspace_gib)
        atomic_write(cached, engine)
        atomic_write(sidecar_path(cached), json.dumps(artifact.to_dict(), indent=2).encode())
    if config.out:
        out = Path(config.out)
        atomic_write(out, cached.read_bytes())
        atomic_write(sidecar_path(out), json.dumps(artifact.to_dict(), indent=2).encode())
        artifact = EngineArtifact(out, artifact.spec, artifact.onnx_hash, gpu, version, options)
    return artifact


def engine_for(path: Path, *, fp16: bool, max_batch: int) -> Path:
    """The cached engine for a checkpoint folder or .onnx file, built on first use."""
    return export_tensorrt(TensorRTExportConfig(str(path), fp16=fp16, max_batch=max_batch)).path


_TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16"}


class TensorRTGenerator(Generator):
    backend = "tensorrt"

    def __init__(self, engine_path: Path, *, max_batch: int, reason: str) -> None:
        import torch

        trt = _require_tensorrt()
        artifact = read_engine_artifact(engine_path)
        gpu = torch.cuda.get_device_name(0)
        if (artifact.gpu, artifact.tensorrt_version) != (gpu, str(trt.__version__)):
            raise ConfigError(
                f"Expected a TensorRT engine built for {gpu} with TensorRT {trt.__version__}. Got one built for "
                f"{artifact.gpu} with TensorRT {artifact.tensorrt_version} instead: rebuild it with synthgen export."
            )
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self._engine is None:
            raise CheckpointError(f"TensorRT could not deserialize the engine {engine_path}: rebuild it.")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = {n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}
        if inputs != set(input_names(artifact.spec)) or IMAGES not in names:
            raise CheckpointError(
                f"Expected engine tensors {input_names(artifact.spec)} -> {IMAGES}. Got {names}."
            )
        dtype = self._engine.get_tensor_dtype(IMAGES).name
        self._out_dtype = getattr(torch, _TORCH_DTYPES.get(dtype, "float32"))
        super().__init__(
            artifact.spec,
            max_batch=min(max_batch, int(artifact.options.get("max_batch", max_batch))),
            device=f"cuda ({gpu})",
            reason=reason,
        )
        self.path = engine_path

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        stream = torch.cuda.current_stream()
        keep = []  # the device tensors must outlive the asynchronous execution
        for name, array in feeds.items():
            tensor = torch.from_numpy(array).to("cuda")
            self._context.set_input_shape(name, tuple(tensor.shape))
            self._context.set_tensor_address(name, tensor.data_ptr())
            keep.append(tensor)
        out = torch.empty(tuple(self._context.get_tensor_shape(IMAGES)), dtype=self._out_dtype, device="cuda")
        self._context.set_tensor_address(IMAGES, out.data_ptr())
        if not self._context.execute_async_v3(stream.cuda_stream):
            raise ExportError("TensorRT execution failed (its log above says why).")
        stream.synchronize()
        return out.float().cpu().numpy()
