"""GAN checkpoints: safetensors weights plus JSON, never pickle, validated on load.

A generator checkpoint is a folder with ``generator.json`` (a :class:`GeneratorSpec`: architecture
arguments, image size, channels, dtype, intensity convention, label schema, a hash of the training
store) and ``generator.safetensors`` (the generator's weights, spectral norm folded in). A training
checkpoint adds ``train_state.json`` and ``train_state.safetensors``: every network, the optimisers
(tensors flattened into safetensors, the rest in JSON), RNG states and the step, enough to resume
exactly. Loading a file from a stranger runs no code: safetensors holds tensors only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from synthgen import __version__
from synthgen.errors import CheckpointError, ConfigError, SchemaError
from synthgen.schemas.labels import LabelSchema
from synthgen.schemas.store_layout import Intensity, StoreAttrs
from synthgen.trainers.architectures import build_generator, model_config_from_dict
from synthgen.trainers.base import DataShape

FORMAT = "synthgen-gan-generator"
FORMAT_VERSION = 1
GENERATOR_JSON, GENERATOR_WEIGHTS = "generator.json", "generator.safetensors"


def store_hash(attrs: StoreAttrs) -> str:
    """sha256 of a store's synthgen attributes (layout and shapes, schema, intensity, provenance)."""
    text = json.dumps(attrs.to_dict(), sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _schema_key(schema: LabelSchema) -> list[tuple[str, int]]:
    return [(c.name, c.value) for c in schema.classes]


def check_format(data: Any, fmt: str, version: int, what: str, where: str) -> Mapping[str, Any]:
    """Raise a :class:`CheckpointError` unless ``data`` is a ``fmt`` spec of format ``version``."""
    if not isinstance(data, Mapping) or data.get("format") != fmt:
        raise CheckpointError(f"Expected a synthgen {what} spec (format {fmt!r}) in {where}. Got none.")
    if data.get("format_version") != version:
        raise CheckpointError(
            f"Expected {what} format version {version} in {where}. "
            f"Got {data.get('format_version')!r} instead: use the synthgen release that wrote it."
        )
    return data


@dataclass(frozen=True)
class GeneratorSpec:
    """Everything needed to rebuild a generator and to check what it may be used with."""

    arch: str
    model: Mapping[str, Any]  # the architecture config, to_dict() form
    image_size: int
    channels: int
    image_dtype: str
    intensity: Intensity
    schema: LabelSchema
    style_dim: int
    store_hash: str
    split: str = "all"
    step: int = 0
    synthgen_version: str = __version__

    @property
    def data_shape(self) -> DataShape:
        return DataShape(self.schema.num_classes, self.channels, self.image_size)

    def model_config(self) -> Any:
        return model_config_from_dict(self.model)

    def check_compatible(
        self,
        *,
        schema: LabelSchema | None = None,
        image_size: int | None = None,
        channels: int | None = None,
        image_dtype: str | None = None,
    ) -> None:
        """Raise :class:`CheckpointError` where the generator does not fit what it is used with."""
        if schema is not None and _schema_key(schema) != _schema_key(self.schema):
            raise CheckpointError(
                f"Expected label schema {self.schema.name!r} {_schema_key(self.schema)} (the generator was "
                f"trained on it). Got schema {schema.name!r} {_schema_key(schema)} instead: use a generator "
                "trained on a store of this schema, or remap the labels."
            )
        checks = (("image size", image_size, self.image_size), ("channels", channels, self.channels))
        for what, got, expected in (*checks, ("image dtype", image_dtype, self.image_dtype)):
            if got is not None and got != expected:
                raise CheckpointError(
                    f"Expected {what} {expected} (the generator's). Got {got} instead: resize or convert the "
                    "data, or use a generator trained for it."
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "arch": self.arch,
            "model": dict(self.model),
            "image_size": self.image_size,
            "channels": self.channels,
            "image_dtype": self.image_dtype,
            "intensity": self.intensity.to_dict(),
            "label_schema": self.schema.to_dict(),
            "style_dim": self.style_dim,
            "store_hash": self.store_hash,
            "split": self.split,
            "step": self.step,
            "synthgen_version": self.synthgen_version,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "the checkpoint") -> GeneratorSpec:
        check_format(data, FORMAT, FORMAT_VERSION, "generator", where)
        try:
            spec = cls(
                arch=str(data["arch"]),
                model=dict(data["model"]),
                image_size=int(data["image_size"]),
                channels=int(data["channels"]),
                image_dtype=str(data["image_dtype"]),
                intensity=Intensity.from_dict(data["intensity"]),
                schema=LabelSchema.from_dict(data["label_schema"]),
                style_dim=int(data["style_dim"]),
                store_hash=str(data["store_hash"]),
                split=str(data.get("split", "all")),
                step=int(data.get("step", 0)),
                synthgen_version=str(data.get("synthgen_version", "unknown")),
            )
            if spec.arch != spec.model.get("arch"):
                raise CheckpointError(f"Expected arch {spec.arch!r} in the model config of {where}.")
            spec.model_config()
        except KeyError as e:
            raise CheckpointError(f"Expected key {e.args[0]!r} in {where}. It is missing.") from e
        except (ConfigError, SchemaError, TypeError, ValueError) as e:
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(f"Malformed generator spec in {where}: {e}") from e
        return spec


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise CheckpointError(f"Expected {path.name} in checkpoint {path.parent}. It is missing.") from e
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"Cannot read {path}: {e}.") from e


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError as e:
        raise CheckpointError(f"Expected {path.name} in checkpoint {path.parent}. It is missing.") from e
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"Cannot read safetensors file {path}: {e}.") from e


def write_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def load_weights(module: nn.Module, tensors: Mapping[str, torch.Tensor], where: str) -> None:
    """``load_state_dict`` (strict) whose mismatches become a :class:`CheckpointError`."""
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(
            f"The weights in {where} do not fit the architecture in its spec: {' '.join(first[:3])}"
        ) from e


def write_checkpoint(
    directory: str | Path, module: nn.Module, weights_name: str, spec: Mapping[str, Any], spec_name: str
) -> Path:
    """Write ``module``'s weights (safetensors) and its JSON spec into ``directory`` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_tensors(directory / weights_name, module.state_dict())
    (directory / spec_name).write_text(json.dumps(spec, indent=2) + "\n")
    return directory


def save_generator(directory: str | Path, generator: nn.Module, spec: GeneratorSpec) -> Path:
    """Write ``generator.json`` and ``generator.safetensors`` (``generator`` without spectral norm)."""
    return write_checkpoint(directory, generator, GENERATOR_WEIGHTS, spec.to_dict(), GENERATOR_JSON)


def read_spec(path: Path) -> GeneratorSpec:
    """The spec of the checkpoint folder ``path``."""
    return GeneratorSpec.from_dict(read_json(path / GENERATOR_JSON), str(path / GENERATOR_JSON))


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, GeneratorSpec]:
    """The generator of a checkpoint folder, in eval mode, and its spec. Validates both."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"Expected a generator checkpoint folder at {path}. There is none.")
    spec = read_spec(path)
    generator = build_generator(spec.model_config(), spec.data_shape)
    load_weights(generator, read_tensors(path / GENERATOR_WEIGHTS), str(path / GENERATOR_WEIGHTS))
    return generator.to(device).eval(), spec


def replace_folder(tmp: Path, final: Path) -> None:
    """Move a finished ``tmp`` folder to ``final``, replacing it; a crash leaves one complete copy."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def check_run_folder(out: Path, ckpt: Path | None, resume: bool) -> None:
    """A new run needs a folder without a checkpoint; a resumed run needs one."""
    if ckpt is not None and not resume:
        raise ConfigError(
            f"Expected a new output folder. {out} already holds a checkpoint: resume it or choose another."
        )
    if ckpt is None and resume:
        raise CheckpointError(f"Expected a checkpoint to resume in {out}. There is none.")


def latest_checkpoint(out_dir: str | Path, name: str = "checkpoint") -> Path | None:
    """The checkpoint folder of a run (or its previous copy, if a crash hit the replacement)."""
    for candidate in (Path(out_dir) / name, Path(out_dir) / f"{name}.old"):
        if (candidate / GENERATOR_JSON).is_file():
            return candidate
    return None
