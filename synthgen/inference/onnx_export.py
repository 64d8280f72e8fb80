"""Export a generator checkpoint to ONNX: a pure function of (one-hot labels, style) with a dynamic batch.

The graph comes from ``torch.onnx.export(..., dynamo=True)`` (the torch.export-based exporter, the
default since torch 2.9; the TorchScript one is deprecated and leaves a shape-computation subgraph
around every ``interpolate``). Its onnxscript optimiser folds batch norms that follow a convolution
and removes dead shape arithmetic: a default SPADE generator exports as about a quarter of the nodes
of the TorchScript export. Spectral norm is already folded into checkpoint weights; the model is in
eval mode, so batch norms use their running statistics.

Every export is checked against the torch model on random label maps at two batch sizes (which also
proves the batch axis dynamic) and refused above a tolerance. The ``.onnx`` file and its JSON sidecar
(``NAME.onnx.json``: spec, hashes, the measured difference) are written atomically, sidecar last.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthgen import __version__, seeding
from synthgen.errors import CheckpointError, ConfigError, ExportError
from synthgen.schemas import (
    GENERATOR_JSON,
    GENERATOR_WEIGHTS,
    GeneratorSpec,
    parse_float,
    parse_int,
    parse_mapping,
)
from synthgen.storage import atomic_write

ONNX_FORMAT = "synthgen-onnx-generator"
ONNX_FORMAT_VERSION = 1
ONNX_NAME = "generator.onnx"
LABELS, STYLE, IMAGES = "labels", "style", "images"
MIN_OPSET = 17


# -- hashing, paths, atomic writes ----------------------------------------------------------------
def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def checkpoint_hash(checkpoint: str | Path) -> str:
    """sha256 over a generator checkpoint's spec and weights (what the exported graph depends on)."""
    checkpoint = Path(checkpoint)
    digest = hashlib.sha256()
    for name in (GENERATOR_JSON, GENERATOR_WEIGHTS):
        try:
            digest.update(name.encode() + b"\0" + (checkpoint / name).read_bytes())
        except OSError as e:
            raise CheckpointError(f"Expected {name} in checkpoint {checkpoint}. Cannot read it: {e}.") from e
    return "sha256:" + digest.hexdigest()


def cache_root() -> Path:
    """``$SYNTHGEN_CACHE_DIR``, else ``$XDG_CACHE_HOME/synthgen``, else ``~/.cache/synthgen``."""
    if os.environ.get("SYNTHGEN_CACHE_DIR"):
        return Path(os.environ["SYNTHGEN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "synthgen"


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def publish_folder(tmp: Path, final: Path) -> None:
    """Rename a finished cache folder into place; if another process got there first, keep theirs."""
    try:
        tmp.rename(final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


# -- the graph's inputs ---------------------------------------------------------------------------
def input_names(spec: GeneratorSpec) -> tuple[str, ...]:
    return (LABELS, STYLE) if spec.style_dim else (LABELS,)


def onehot(indices: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, H, W) class indices -> (N, K, H, W) float32 one-hot."""
    classes = np.arange(num_classes, dtype=indices.dtype)[None, :, None, None]
    return (indices[:, None] == classes).astype(np.float32)


def sample_inputs(spec: GeneratorSpec, n: int, seed: int) -> dict[str, np.ndarray]:
    """Random inputs for checks and benchmarks: blocky class maps (8 x 8 cells) and N(0, I) styles."""
    rng = seeding.rng(seed, n)
    size = spec.image_size
    cells = rng.integers(0, spec.schema.num_classes, (n, -(-size // 8), -(-size // 8)), dtype=np.uint8)
    indices = cells.repeat(8, axis=1).repeat(8, axis=2)[:, :size, :size]
    feeds = {LABELS: onehot(indices, spec.schema.num_classes)}
    if spec.style_dim:
        feeds[STYLE] = rng.standard_normal((n, spec.style_dim), dtype=np.float32)
    return feeds


# -- the sidecar ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class OnnxArtifact:
    """An exported ONNX generator: where it is, what it computes, and how well it matches torch."""

    path: Path
    spec: GeneratorSpec
    onnx_hash: str
    checkpoint_hash: str
    max_abs_diff: float
    opset: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": ONNX_FORMAT,
            "format_version": ONNX_FORMAT_VERSION,
            "onnx_hash": self.onnx_hash,
            "checkpoint_hash": self.checkpoint_hash,
            "max_abs_diff": self.max_abs_diff,
            "opset": self.opset,
            "inputs": list(input_names(self.spec)),
            "outputs": [IMAGES],
            "exporter": "torch.onnx.export(dynamo=True)",
            "synthgen_version": __version__,
            "spec": self.spec.to_dict(),
        }

    @classmethod
    def from_dict(cls, path: Path, data: Any) -> OnnxArtifact:
        where = str(sidecar_path(path))
        data = parse_mapping(data, where)
        if data.get("format") != ONNX_FORMAT or data.get("format_version") != ONNX_FORMAT_VERSION:
            raise CheckpointError(
                f"Expected a synthgen ONNX sidecar (format {ONNX_FORMAT!r} version {ONNX_FORMAT_VERSION}) "
                f"at {where}. Got format {data.get('format')!r} version {data.get('format_version')!r}."
            )
        try:
            return cls(
                path=path,
                spec=GeneratorSpec.from_dict(data["spec"], where),
                onnx_hash=str(data["onnx_hash"]),
                checkpoint_hash=str(data["checkpoint_hash"]),
                max_abs_diff=float(data["max_abs_diff"]),
                opset=int(data["opset"]),
            )
        except KeyError as e:
            raise CheckpointError(f"Expected key {e.args[0]!r} in {where}. It is missing.") from e


def read_onnx_artifact(path: str | Path, *, verify: bool = True) -> OnnxArtifact:
    """The sidecar of an exported ``.onnx``; with ``verify``, check the file is the one it describes."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Expected an ONNX file at {path}. There is none.")
    try:
        data = json.loads(sidecar_path(path).read_text())
    except FileNotFoundError as e:
        raise CheckpointError(
            f"Expected the sidecar {sidecar_path(path).name} beside {path}. It is missing: export with "
            "`synthgen export CHECKPOINT --format onnx`, which writes both."
        ) from e
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"Cannot read {sidecar_path(path)}: {e}.") from e
    artifact = OnnxArtifact.from_dict(path, data)
    if verify and sha256_file(path) != artifact.onnx_hash:
        raise CheckpointError(
            f"Expected {path} to have hash {artifact.onnx_hash} (its sidecar's). Got {sha256_file(path)} "
            "instead: the file changed after export; export it again."
        )
    return artifact


# -- export ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OnnxExportConfig:
    checkpoint: str
    out: str | None = None  # default: CHECKPOINT/generator.onnx
    opset: int = 18
    tolerance: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        parse_int(self.opset, "the ONNX opset", lo=MIN_OPSET)
        if parse_float(self.tolerance, "the export tolerance", lo=0.0) == 0.0:
            raise ConfigError("Expected the export tolerance > 0. Got 0 instead.")

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: Any) -> OnnxExportConfig:
        return cls(**parse_mapping(data, "the ONNX export config"))


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter warns about its own internals (pytree deprecations, unused axis names) and logs
    that torchvision ops are not registered: nothing a user can act on."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_model_proto(model: Any, spec: GeneratorSpec, opset: int) -> bytes:
    """Serialized ONNX of ``model`` (eval mode, no spectral norm) with a dynamic batch axis."""
    import torch

    feeds = sample_inputs(spec, 2, 0)  # batch 2: torch.export specialises sizes 0 and 1
    args = tuple(torch.from_numpy(feeds[name]) for name in input_names(spec))
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                model,
                args,
                None,
                dynamo=True,
                opset_version=opset,
                input_names=list(input_names(spec)),
                output_names=[IMAGES],
                dynamic_shapes=tuple({0: batch} for _ in args),
                optimize=True,
                verbose=False,
            )
    except ModuleNotFoundError as e:
        raise ExportError(f"ONNX export needs the package {e.name!r}: pip install onnxscript.") from e
    except Exception as e:  # the exporter raises many types; the message is what helps
        raise ExportError(f"torch.onnx.export failed for {spec.arch!r}: {str(e).splitlines()[0]}") from e
    return program.model_proto.SerializeToString()


def compare_with_torch(model: Any, onnx_bytes: bytes, spec: GeneratorSpec, seed: int) -> float:
    """Max |ONNX Runtime - torch| over random inputs at batch sizes 1 and 3."""
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    worst = 0.0
    for n in (1, 3):
        feeds = sample_inputs(spec, n, seed)
        with torch.inference_mode():
            expected = model(*(torch.from_numpy(feeds[k]) for k in input_names(spec))).numpy()
        (got,) = session.run([IMAGES], feeds)
        if got.shape != expected.shape:
            raise ExportError(
                f"Expected ONNX output shape {expected.shape} at batch {n}. Got {got.shape} instead."
            )
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def _export_checked(
    checkpoint: Path, opset: int, tolerance: float, seed: int
) -> tuple[bytes, GeneratorSpec, float]:
    from torch.nn.utils import parametrize

    from synthgen.models import load_generator

    model, spec = load_generator(checkpoint)  # built without spectral norm, in eval mode
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ExportError(
            f"Expected plain weights in {checkpoint} (spectral norm folded). Got parametrised layers."
        )
    onnx_bytes = export_model_proto(model, spec, opset)
    diff = compare_with_torch(model, onnx_bytes, spec, seed)
    if not diff <= tolerance:
        raise ExportError(
            f"Expected the ONNX graph of {checkpoint} to match the torch generator within {tolerance:g}. "
            f"Got a max absolute difference of {diff:.3g} instead: the export is not faithful; not written."
        )
    return onnx_bytes, spec, diff


def _write_artifact(
    path: Path, onnx_bytes: bytes, spec: GeneratorSpec, ckpt_hash: str, diff: float, opset: int
) -> OnnxArtifact:
    artifact = OnnxArtifact(
        path, spec, "sha256:" + hashlib.sha256(onnx_bytes).hexdigest(), ckpt_hash, diff, opset
    )
    atomic_write(path, onnx_bytes)
    atomic_write(sidecar_path(path), (json.dumps(artifact.to_dict(), indent=2) + "\n").encode())
    return artifact


def export_onnx(config: OnnxExportConfig) -> OnnxArtifact:
    """Export, check against torch, write ``.onnx`` + sidecar atomically; return what was written."""
    checkpoint = Path(config.checkpoint)
    ckpt_hash = checkpoint_hash(checkpoint) if checkpoint.is_dir() else None
    if ckpt_hash is None:
        raise CheckpointError(f"Expected a generator checkpoint folder at {checkpoint}. There is none.")
    onnx_bytes, spec, diff = _export_checked(checkpoint, config.opset, config.tolerance, config.seed)
    out = Path(config.out) if config.out else checkpoint / ONNX_NAME
    return _write_artifact(out, onnx_bytes, spec, ckpt_hash, diff, config.opset)


def cached_onnx(checkpoint: str | Path, *, opset: int = 18, tolerance: float = 1e-3) -> OnnxArtifact:
    """The checkpoint's ONNX export: CHECKPOINT/generator.onnx if it is current, else the cache entry
    under :func:`cache_root` keyed by the checkpoint hash, exported on first use."""
    checkpoint = Path(checkpoint)
    ckpt_hash = checkpoint_hash(checkpoint)
    entry = cache_root() / "onnx" / ckpt_hash.removeprefix("sha256:")[:24]
    for candidate in (checkpoint / ONNX_NAME, entry / ONNX_NAME):
        if sidecar_path(candidate).is_file():
            with contextlib.suppress(CheckpointError):
                artifact = read_onnx_artifact(candidate)
                if artifact.checkpoint_hash == ckpt_hash:
                    return artifact
    onnx_bytes, spec, diff = _export_checked(checkpoint, opset, tolerance, seed=0)
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}."))
    _write_artifact(tmp / ONNX_NAME, onnx_bytes, spec, ckpt_hash, diff, opset)
    if entry.exists():  # stale or corrupt entry: replace it
        shutil.rmtree(entry, ignore_errors=True)
    publish_folder(tmp, entry)
    return read_onnx_artifact(entry / ONNX_NAME)
