"""INT8 generation on the CPU: ONNX Runtime static quantisation of a generator's ONNX export, behind a
quality gate.

The FP32 graph (:func:`synthgen.inference.onnx_export.cached_onnx`) is quantised in the QDQ format
(the one ONNX Runtime's CPU kernels are optimised for), uint8 activations and int8 weights per output
channel, activation ranges calibrated (min/max) on seeded label maps drawn by a :class:`CalibrationSet`.
On CPUs without VNNI the weights use 7 bits (``reduce_range``): the AVX2 u8 x s8 multiply-add
(``vpmaddubsw``) adds pairs of products into int16 and saturates with full 8-bit weights.

The gate: on ``gate_maps`` other seeded maps of the same set, the INT8 images must lie within
``min_psnr`` dB PSNR of the FP32 ONNX Runtime images on the 0..255 scale, else the backend refuses.
The measured PSNR is stored in the sidecar of the cached graph, so the gate is checked at every open
without running it again.

Cache: ``CACHE/onnx-int8/KEY/generator.int8.onnx`` with its JSON sidecar, where KEY hashes the FP32
graph's hash, the calibration set's name and the quantisation settings (not the threshold).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthgen.errors import BackendUnavailableError, CheckpointError, ConfigError
from synthgen.inference.onnx_export import (
    IMAGES,
    LABELS,
    STYLE,
    OnnxArtifact,
    cache_root,
    onehot,
    publish_folder,
    sha256_file,
    sidecar_path,
)
from synthgen.kernels import psnr
from synthgen.schemas import GeneratorSpec, label_lut, parse_float, parse_int, parse_mapping
from synthgen.storage import atomic_write

INT8_FORMAT = "synthgen-onnx-int8-generator"
INT8_FORMAT_VERSION = 1
INT8_NAME = "generator.int8.onnx"
MIN_PSNR = 35.0
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CALIBRATION_BATCH = 32

LabelDraw = Callable[[int, int], np.ndarray]  # (n, seed) -> (n, H, W) uint8 label maps


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@dataclass(frozen=True)
class CalibrationSet:
    """Where calibration and gate label maps come from: ``draw(n, seed)``, and a name that identifies
    it in the cache key (two sets with one name must draw the same maps)."""

    name: str
    draw: LabelDraw


def blob_maps(spec: GeneratorSpec) -> CalibrationSet:
    """Seeded maps of overlapping ellipses, one per class of the schema (later classes on top), on
    background: every class present with smooth boundaries, drawn with NumPy alone. The default set;
    the engine and benchmarks pass maps of the build's own label source instead."""
    size, values = spec.image_size, np.array(spec.schema.values, np.uint8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size

    def draw(n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(np.random.SeedSequence([seed, size]))
        maps = np.zeros((n, size, size), np.uint8)
        for out in maps:
            for value in values:
                cy, cx = rng.uniform(0.25, 0.75, 2)
                ry, rx = rng.uniform(0.08, 0.3, 2)
                angle = rng.uniform(0, np.pi)
                u = (yy - cy) * np.cos(angle) + (xx - cx) * np.sin(angle)
                v = (xx - cx) * np.cos(angle) - (yy - cy) * np.sin(angle)
                out[(u / ry) ** 2 + (v / rx) ** 2 <= 1.0] = value
        return maps

    return CalibrationSet(f"blobs-v1-{spec.schema.name}-{size}", draw)


@dataclass(frozen=True)
class QuantConfig:
    """How to quantise and what the gate asks. ``reduce_range`` None: 7-bit weights on CPUs without VNNI."""

    calibration_maps: int = 256
    calibration_seed: int = 1
    gate_maps: int = 64
    gate_seed: int = 2
    per_channel: bool = True
    reduce_range: bool | None = None
    min_psnr: float = MIN_PSNR

    def __post_init__(self) -> None:
        parse_int(self.calibration_maps, "calibration_maps", lo=1)
        parse_int(self.gate_maps, "gate_maps", lo=1)
        parse_int(self.calibration_seed, "calibration_seed", lo=0)
        parse_int(self.gate_seed, "gate_seed", lo=0)
        parse_float(self.min_psnr, "min_psnr", lo=0.0)
        if self.calibration_seed == self.gate_seed:
            raise ConfigError(
                f"Expected different calibration and gate seeds. Got {self.calibration_seed} for both: "
                "the gate must judge maps the calibration did not see."
            )

    def resolved(self) -> QuantConfig:
        """This config with ``reduce_range`` decided for this CPU."""
        if self.reduce_range is not None:
            return self
        return QuantConfig(**{**asdict(self), "reduce_range": not (VNNI_FLAGS & cpu_flags())})

    def key_dict(self) -> dict[str, Any]:
        """What the quantised graph depends on (the threshold is checked at open, not baked in)."""
        return {k: v for k, v in asdict(self.resolved()).items() if k != "min_psnr"}


@dataclass(frozen=True)
class Int8Artifact:
    """A quantised generator graph and what its gate measured."""

    path: Path
    fp32_hash: str
    calibration: str
    settings: dict[str, Any]
    psnr_db: float
    gate_maps: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": INT8_FORMAT,
            "format_version": INT8_FORMAT_VERSION,
            "int8_hash": sha256_file(self.path),
            "fp32_hash": self.fp32_hash,
            "calibration": self.calibration,
            "settings": self.settings,
            "psnr_db": self.psnr_db,
            "gate_maps": self.gate_maps,
        }

    @classmethod
    def read(cls, path: Path) -> Int8Artifact:
        where = str(sidecar_path(path))
        try:
            data = parse_mapping(json.loads(sidecar_path(path).read_text()), where)
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"Cannot read {where}: {e}.") from e
        if data.get("format") != INT8_FORMAT or data.get("format_version") != INT8_FORMAT_VERSION:
            raise CheckpointError(
                f"Expected an INT8 sidecar (format {INT8_FORMAT!r} version {INT8_FORMAT_VERSION}) at "
                f"{where}. Got format {data.get('format')!r} version {data.get('format_version')!r}."
            )
        if data.get("int8_hash") != sha256_file(path):
            raise CheckpointError(f"Expected {path} to match the hash in {where}. It does not.")
        return cls(
            path,
            str(data["fp32_hash"]),
            str(data["calibration"]),
            dict(data["settings"]),
            float(data["psnr_db"]),
            int(data["gate_maps"]),
        )

    def check_gate(self, min_psnr: float) -> None:
        """Refuse, in one line, a quantisation whose images are further than ``min_psnr`` from FP32."""
        if not self.psnr_db >= min_psnr:
            raise BackendUnavailableError(
                f"Expected INT8 images within {min_psnr:g} dB PSNR of FP32 for backend 'onnxruntime-int8'. "
                f"Got {self.psnr_db:.1f} dB on {self.gate_maps} seeded label maps instead: use "
                "--backend onnxruntime."
            )


def _feeds(spec: GeneratorSpec, maps: np.ndarray, seed: int, what: str) -> Iterator[dict[str, np.ndarray]]:
    """Batches of one-hot maps, with N(0, I) styles drawn from ``seed`` where the generator takes them."""
    size = spec.image_size
    if not isinstance(maps, np.ndarray) or maps.dtype != np.uint8 or maps.shape[1:] != (size, size):
        got = f"{maps.shape} {maps.dtype}" if isinstance(maps, np.ndarray) else type(maps).__name__
        raise ConfigError(f"Expected {what} as (N, {size}, {size}) uint8 label maps. Got {got} instead.")
    spec.schema.check_labels(maps, what)
    indices = label_lut(spec.schema)[maps]
    rng = np.random.default_rng(np.random.SeedSequence([seed, len(maps)]))
    styles = rng.standard_normal((len(maps), spec.style_dim), dtype=np.float32)
    for start in range(0, len(maps), CALIBRATION_BATCH):
        stop = start + CALIBRATION_BATCH
        feeds = {LABELS: onehot(indices[start:stop], spec.schema.num_classes)}
        if spec.style_dim:
            feeds[STYLE] = styles[start:stop]
        yield feeds


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """quantize_static logs a 'consider pre-processing' warning on the root logger at each call."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _session(model: str | bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def quantize_generator(
    fp32: OnnxArtifact, calibration: CalibrationSet, config: QuantConfig, out: Path
) -> Int8Artifact:
    """Quantise ``fp32`` into ``out`` (and its sidecar) and measure the gate; does not check it."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    config = config.resolved()
    spec = fp32.spec
    maps = calibration.draw(config.calibration_maps, config.calibration_seed)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = _feeds(
                spec, maps, config.calibration_seed, f"the calibration maps of {calibration.name!r}"
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    with _quiet_quantizer(), tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / INT8_NAME
        quantize_static(
            str(fp32.path),
            str(staged),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=config.per_channel,
            reduce_range=bool(config.reduce_range),
            calibrate_method=CalibrationMethod.MinMax,
        )
        int8_bytes = staged.read_bytes()
    gate = calibration.draw(config.gate_maps, config.gate_seed)
    fp32_session, int8_session = _session(str(fp32.path)), _session(int8_bytes)
    fp32_images, int8_images = [], []
    for feeds in _feeds(spec, gate, config.gate_seed, f"the gate maps of {calibration.name!r}"):
        fp32_images.append(fp32_session.run([IMAGES], feeds)[0])
        int8_images.append(int8_session.run([IMAGES], feeds)[0])
    measured = psnr(np.concatenate(int8_images), np.concatenate(fp32_images), data_range=2.0)  # [-1, 1]
    atomic_write(out, int8_bytes)
    artifact = Int8Artifact(
        out, fp32.onnx_hash, calibration.name, config.key_dict(), measured, config.gate_maps
    )
    atomic_write(sidecar_path(out), (json.dumps(artifact.to_dict(), indent=2) + "\n").encode())
    return artifact


def cache_key(fp32: OnnxArtifact, calibration: CalibrationSet, config: QuantConfig) -> str:
    key = {"fp32": fp32.onnx_hash, "calibration": calibration.name, "settings": config.key_dict()}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def cached_int8(fp32: OnnxArtifact, calibration: CalibrationSet, config: QuantConfig) -> Int8Artifact:
    """The INT8 graph of ``fp32`` for these settings from the cache, quantised on first use. The gate
    is not checked here (:meth:`Int8Artifact.check_gate`)."""
    entry = cache_root() / "onnx-int8" / cache_key(fp32, calibration, config)
    if sidecar_path(entry / INT8_NAME).is_file():
        with contextlib.suppress(CheckpointError, KeyError, TypeError, ValueError):
            artifact = Int8Artifact.read(entry / INT8_NAME)
            if artifact.fp32_hash == fp32.onnx_hash:
                return artifact
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}."))
    quantize_generator(fp32, calibration, config, tmp / INT8_NAME)
    if entry.exists():  # stale or corrupt entry: replace it
        shutil.rmtree(entry, ignore_errors=True)
    publish_folder(tmp, entry)
    return Int8Artifact.read(entry / INT8_NAME)
