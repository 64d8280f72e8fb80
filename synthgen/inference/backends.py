"""One inference interface over several backends: torch eager, ``torch.compile``, ONNX Runtime (CPU, or
CUDA where its provider is installed) and TensorRT (:mod:`synthgen.inference.tensorrt`).

    gen = open_generator("runs/spade/checkpoint", backend="auto", threads=2)
    images = gen(labels, styles)   # labels (N, H, W) uint8 schema values -> (N, C, H, W) float32 in [-1, 1]

Every backend computes the same pure function: label values are mapped to class indices with the
schema's lookup table (a value outside the schema is an error), one-hot encoded, and fed with the
caller's style vectors (no randomness is drawn here). Batches larger than ``max_batch`` are split.
``backend="auto"`` picks TensorRT where a GPU and TensorRT are present, else ONNX Runtime (CUDA where
its provider is, else CPU: 1.8x to 5x torch eager at equal thread counts here, bench/generator.py),
else torch; ``gen.reason`` says why, and it is logged.

``backend="onnxruntime-int8"`` runs the statically quantised graph (:mod:`synthgen.inference.quantize`)
on the CPU, and refuses when its images are further than the gate's PSNR from FP32. ``auto`` never
picks it: it was not measured faster than FP32 on any CPU of this project yet (bench/generator.py; an
AVX2-only CPU has no VNNI, and its u8 x s8 kernels are slower than FP32 there). There is no BF16 path:
no CPU measured here has avx512_bf16 or AMX. ``backend="onnxruntime"`` is always FP32.

ONNX Runtime's worker threads are created with spinning disabled: spinning threads slow torch in the
same process by up to ~50x (onnxruntime #13808). Results are bitwise identical run to run for the same
inputs and thread count.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from synthgen.errors import (
    BackendUnavailableError,
    CheckpointError,
    ConfigError,
    ExportError,
    LabelValueError,
)
from synthgen.inference.onnx_export import (
    IMAGES,
    LABELS,
    STYLE,
    OnnxArtifact,
    cached_onnx,
    input_names,
    onehot,
    read_onnx_artifact,
)
from synthgen.inference.quantize import CalibrationSet, QuantConfig, blob_maps, cached_int8
from synthgen.kernels import from_unit
from synthgen.schemas import BACKENDS, GENERATOR_JSON, GeneratorSpec, label_lut

log = logging.getLogger(__name__)

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


class Generator:
    """A generator ready for inference. Subclasses implement :meth:`_run` on one batch."""

    backend: str = ""

    def __init__(self, spec: GeneratorSpec, *, max_batch: int, device: str, reason: str) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ConfigError(f"Expected max_batch >= 1. Got {max_batch!r} instead.")
        self.spec = spec
        self.max_batch = max_batch
        self.device = device
        self.reason = reason
        self._lut = label_lut(spec.schema)

    @property
    def style_dim(self) -> int:
        return self.spec.style_dim

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} backend={self.backend!r} device={self.device!r} arch={self.spec.arch!r}>"
        )

    def __call__(self, labels: np.ndarray, styles: np.ndarray | None = None) -> np.ndarray:
        """Images (N, C, H, W) float32 in [-1, 1] for label maps (N, H, W) uint8 and styles (N, style_dim)."""
        indices, styles = self._check_inputs(labels, styles)
        n, size, channels = len(indices), self.spec.image_size, self.spec.channels
        out = np.empty((n, channels, size, size), np.float32)
        for start in range(0, n, self.max_batch):
            stop = min(start + self.max_batch, n)
            feeds = {LABELS: onehot(indices[start:stop], self.spec.schema.num_classes)}
            if styles is not None:
                feeds[STYLE] = styles[start:stop]
            out[start:stop] = self._run(feeds)
        return out

    def images(self, labels: np.ndarray, styles: np.ndarray | None = None) -> np.ndarray:
        """Images in the checkpoint's dtype and intensity convention (as a store holds them): (N, H, W)
        for one channel, (N, C, H, W) otherwise. No sector or other post-processing."""
        out = from_unit(self(labels, styles), self.spec.intensity, self.spec.image_dtype)
        return out[:, 0] if self.spec.channels == 1 else out

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def _check_inputs(self, labels: Any, styles: Any) -> tuple[np.ndarray, np.ndarray | None]:
        spec, size = self.spec, self.spec.image_size
        if not isinstance(labels, np.ndarray) or labels.dtype != np.uint8 or labels.ndim != 3:
            got = (
                f"{labels.shape} {labels.dtype}" if isinstance(labels, np.ndarray) else type(labels).__name__
            )
            raise LabelValueError(f"Expected label maps as a (N, H, W) uint8 array. Got {got} instead.")
        if labels.shape[1:] != (size, size):
            raise CheckpointError(
                f"Expected label maps of {size} x {size} (the generator's image size). Got "
                f"{labels.shape[1]} x {labels.shape[2]} instead: resize the labels (nearest neighbour) first."
            )
        indices = self._lut[labels]
        if labels.size and indices.max() == 255:
            spec.schema.check_labels(labels, "the label maps given to the generator")
        if spec.style_dim == 0:
            if styles is not None:
                raise ConfigError(
                    f"Expected no styles: generator {spec.arch!r} takes none. Got {type(styles).__name__}."
                )
            return indices, None
        if styles is None:
            raise ConfigError(
                f"Expected styles of shape ({len(labels)}, {spec.style_dim}). Got None instead."
            )
        styles = np.ascontiguousarray(styles, dtype=np.float32)
        if styles.shape != (len(labels), spec.style_dim):
            raise ConfigError(
                f"Expected styles of shape ({len(labels)}, {spec.style_dim}). Got {styles.shape} instead."
            )
        if not np.isfinite(styles).all():
            raise ConfigError("Expected finite style vectors. Got NaN or infinity.")
        return indices, styles


class TorchGenerator(Generator):
    """The checkpoint's torch module, eager or through ``torch.compile`` (inductor), on the GPU if any."""

    def __init__(
        self, checkpoint: Path, *, compile: bool, threads: int | None, max_batch: int, reason: str
    ) -> None:
        import torch

        from synthgen.models import load_generator

        if threads is not None:
            torch.set_num_threads(threads)  # process-wide: only when asked
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model, spec = load_generator(checkpoint, device=device)
        super().__init__(spec, max_batch=max_batch, device=device, reason=reason)
        self.backend = "torch-compile" if compile else "torch"
        self._forward = model
        if compile:
            self._compile(model)

    def _compile(self, model: Any) -> None:
        """Compile on a first call here, so a missing compiler fails at open, not mid-run."""
        import torch

        from synthgen.inference.onnx_export import sample_inputs

        try:
            with warnings.catch_warnings():  # inductor's imports warn about torch.jit deprecations
                warnings.simplefilter("ignore", DeprecationWarning)
                self._forward = torch.compile(model)  # static first, dynamic after a new batch size
                self._run(sample_inputs(self.spec, 2, 0))
        except Exception as e:  # inductor raises many types; the first line says what is missing
            raise BackendUnavailableError(
                f"torch.compile could not compile the generator: {str(e).strip().splitlines()[0]}"
            ) from e

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            args = (torch.from_numpy(feeds[k]).to(self.device) for k in input_names(self.spec))
            return self._forward(*args).cpu().numpy()


def ort_session_options(threads: int) -> Any:
    """``threads`` intra-op threads, one inter-op thread, no spinning, all graph optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def ort_cuda_available() -> bool:
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


class OnnxRuntimeGenerator(Generator):
    backend = "onnxruntime"

    def __init__(
        self,
        onnx_path: Path,
        *,
        threads: int,
        max_batch: int,
        cuda: bool,
        reason: str,
        options: Any = None,
        spec: GeneratorSpec | None = None,
    ) -> None:
        """``options``: ONNX Runtime SessionOptions replacing :func:`ort_session_options` (benchmarks).
        ``spec``: the generator's spec where ``onnx_path`` has no export sidecar (a quantised graph).

        On the CPU with ``threads`` > 1 (and no ``options``), the generator holds ``threads`` one-thread
        sessions and splits each batch between them, run at once (ONNX Runtime releases the GIL): one
        session's intra-op threads scale poorly on these small convolutions (measured on 2 cores:
        2 threads slower than 1 at batch 8), and every image comes out of a one-thread session, so the
        bytes do not depend on ``threads``.
        """
        import onnxruntime as ort

        spec = spec or read_onnx_artifact(onnx_path).spec
        providers: list[Any] = ["CPUExecutionProvider"]
        if cuda:
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": 0}))
        # on the CPU, `threads` one-thread sessions; with CUDA, one session with its own intra-op threads
        per_session = threads if cuda else 1
        self._session = ort.InferenceSession(
            str(onnx_path), options or ort_session_options(per_session), providers=providers
        )
        device = "cuda" if "CUDAExecutionProvider" in self._session.get_providers() else "cpu"
        if cuda and device == "cpu":
            reason += "; the CUDA provider failed to load, so ONNX Runtime runs on the CPU"
        self._sessions = [self._session]
        if options is None and not cuda and threads > 1:
            self._sessions += [
                ort.InferenceSession(str(onnx_path), ort_session_options(1), providers=providers)
                for _ in range(threads - 1)
            ]
        self._pool = ThreadPoolExecutor(len(self._sessions)) if len(self._sessions) > 1 else None
        super().__init__(spec, max_batch=max_batch, device=device, reason=reason)
        self.path = onnx_path

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        n = len(feeds[LABELS])
        if self._pool is None or n < 2:
            (images,) = self._session.run([IMAGES], feeds)
            return images
        bounds = np.linspace(0, n, min(len(self._sessions), n) + 1).astype(int)
        parts = [
            self._pool.submit(session.run, [IMAGES], {k: v[a:b] for k, v in feeds.items()})
            for session, a, b in zip(self._sessions, bounds[:-1], bounds[1:], strict=False)
        ]
        return np.concatenate([part.result()[0] for part in parts])


class OnnxRuntimeInt8Generator(OnnxRuntimeGenerator):
    """ONNX Runtime on the CPU with the statically quantised graph (:mod:`synthgen.inference.quantize`),
    opened only when its gate passed. ``psnr_db``: the gate's measured PSNR against FP32."""

    backend = "onnxruntime-int8"

    def __init__(
        self,
        fp32: OnnxArtifact,
        *,
        threads: int,
        max_batch: int,
        reason: str,
        calibration: CalibrationSet | None,
        quant: QuantConfig,
    ) -> None:
        artifact = cached_int8(fp32, calibration or blob_maps(fp32.spec), quant)
        artifact.check_gate(quant.min_psnr)
        self.psnr_db = artifact.psnr_db
        reason = f"{reason}; INT8 images {artifact.psnr_db:.1f} dB PSNR from FP32 ({artifact.calibration})"
        super().__init__(
            artifact.path, threads=threads, max_batch=max_batch, cuda=False, reason=reason, spec=fp32.spec
        )


# -- opening --------------------------------------------------------------------------------------
def _kind(path: Path) -> str:
    if path.is_dir():
        if not (path / GENERATOR_JSON).is_file():
            raise CheckpointError(
                f"Expected a generator checkpoint folder ({GENERATOR_JSON} inside) at {path}. It has none."
            )
        return "checkpoint"
    if path.is_file() and path.suffix == ".onnx":
        return "onnx"
    if path.is_file() and path.suffix in ENGINE_SUFFIXES:
        return "engine"
    if path.exists():
        raise CheckpointError(
            f"Expected a checkpoint folder, an .onnx file or a TensorRT engine ({', '.join(ENGINE_SUFFIXES)}). "
            f"Got {path} instead."
        )
    raise CheckpointError(f"Expected a generator checkpoint, .onnx or engine at {path}. There is none.")


def _auto(path: Path, kind: str) -> tuple[str, str]:
    """(backend, reason) for ``backend="auto"``."""
    from synthgen.inference.tensorrt import tensorrt_status

    trt_ok, trt_why = tensorrt_status()
    if kind == "engine":
        return "tensorrt", "a TensorRT engine was given"
    if trt_ok:
        return "tensorrt", f"TensorRT is available ({trt_why})"
    if ort_cuda_available():
        return "onnxruntime", f"no TensorRT ({trt_why}); ONNX Runtime has the CUDA provider"
    if importlib.util.find_spec("onnxruntime") is not None:
        source = "an ONNX file was given" if kind == "onnx" else "the checkpoint exports to ONNX"
        return "onnxruntime", f"no TensorRT ({trt_why}); ONNX Runtime on the CPU ({source})"
    return "torch", f"no TensorRT ({trt_why}) and no ONNX Runtime"


def open_generator(
    path: str | Path,
    backend: str = "auto",
    threads: int | None = 1,
    max_batch: int = 64,
    *,
    fp16: bool = False,
    calibration: CalibrationSet | None = None,
    quant: QuantConfig | None = None,
) -> Generator:
    """A :class:`Generator` for a checkpoint folder, an exported ``.onnx`` or a TensorRT engine.

    ``threads``: intra-op threads (ONNX Runtime; for torch it calls ``torch.set_num_threads``, which
    is process-wide, unless None). ``fp16`` applies to TensorRT engines built here from ONNX.
    ``calibration`` and ``quant`` apply to ``onnxruntime-int8``: the label maps it is calibrated and
    gated on (default :func:`~synthgen.inference.quantize.blob_maps`) and the quantisation settings.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"Expected a backend in {BACKENDS}. Got {backend!r} instead.")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"Expected threads >= 1 (or None). Got {threads!r} instead.")
    path = Path(path)
    kind = _kind(path)
    reason = f"asked for {backend!r}"
    auto = backend == "auto"
    if auto:
        backend, reason = _auto(path, kind)
    if kind != "checkpoint" and backend in ("torch", "torch-compile"):
        raise ConfigError(
            f"Expected a checkpoint folder for the {backend!r} backend. Got {kind} {path} instead."
        )
    if kind == "engine" and backend != "tensorrt":
        raise ConfigError(
            f"Expected backend 'tensorrt' (or 'auto') for engine {path}. Got {backend!r} instead."
        )

    if backend in ("torch", "torch-compile"):
        gen: Generator = TorchGenerator(
            path, compile=backend == "torch-compile", threads=threads, max_batch=max_batch, reason=reason
        )
    elif backend == "onnxruntime":
        if importlib.util.find_spec("onnxruntime") is None:
            raise BackendUnavailableError(
                "Expected the onnxruntime package for backend 'onnxruntime'. It is not installed."
            )
        onnx_path = path
        if kind == "checkpoint":
            try:
                onnx_path = cached_onnx(path).path
            except ExportError as e:
                if not auto:
                    raise
                reason = f"{reason}, but the ONNX export failed ({e}); torch eager"
                gen = TorchGenerator(path, compile=False, threads=threads, max_batch=max_batch, reason=reason)
                log.warning("generator backend torch on cpu: %s", reason)
                return gen
        gen = OnnxRuntimeGenerator(
            onnx_path, threads=threads or 1, max_batch=max_batch, cuda=ort_cuda_available(), reason=reason
        )
    elif backend == "onnxruntime-int8":
        if importlib.util.find_spec("onnxruntime") is None:
            raise BackendUnavailableError(
                "Expected the onnxruntime package for backend 'onnxruntime-int8'. It is not installed."
            )
        fp32 = cached_onnx(path) if kind == "checkpoint" else read_onnx_artifact(path)
        gen = OnnxRuntimeInt8Generator(
            fp32,
            threads=threads or 1,
            max_batch=max_batch,
            reason=reason,
            calibration=calibration,
            quant=quant or QuantConfig(),
        )
    else:
        from synthgen.inference.tensorrt import TensorRTGenerator, engine_for

        engine_path = path if kind == "engine" else engine_for(path, fp16=fp16, max_batch=max_batch)
        gen = TensorRTGenerator(engine_path, max_batch=max_batch, reason=reason)
    log.info("generator backend %s on %s: %s", gen.backend, gen.device, gen.reason)
    return gen
