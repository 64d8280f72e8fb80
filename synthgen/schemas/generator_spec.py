"""Generator specs: what a generator checkpoint holds besides its weights, readable without torch.

``generator.json`` in a checkpoint folder is a :class:`GeneratorSpec` (architecture arguments, image
size, channels, dtype, intensity convention, label schema, a hash of the training store). The build
reads it in every process, and on the ONNX Runtime or TensorRT paths nothing else of the checkpoint is
needed there, so this module imports neither torch nor the architectures: rebuilding the network
(:meth:`GeneratorSpec.model_config`, then :func:`synthgen.models.weights.load_generator`) does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from synthgen import __version__
from synthgen.errors import CheckpointError, ConfigError, SchemaError
from synthgen.schemas.labels import LabelSchema
from synthgen.schemas.store_layout import Intensity, StoreAttrs

DEFAULT_GENERATOR = "camus_pix2pix_128"
# The generator bundled for each build preset (a folder of synthgen/assets/generators, with a README that
# says how it was trained); a preset missing here has none and needs --generator CHECKPOINT.
BUNDLED_GENERATORS: dict[str, str] = {"echo": DEFAULT_GENERATOR, "sa-mr": "acdc_pix2pix_128"}


def default_generator_path(preset: str = "echo") -> Path:
    """The generator bundled with synthgen for build preset ``preset``: pix2pix at 128 x 128, trained on
    CAMUS for 'echo' and on ACDC for 'sa-mr' (see each folder's README)."""
    if preset not in BUNDLED_GENERATORS:
        raise ConfigError(
            f"Expected a preset with a bundled generator ({', '.join(sorted(BUNDLED_GENERATORS))}). "
            f"Got {preset!r} instead: pass --generator CHECKPOINT, trained on its label schema "
            "with 'synthgen train-gan'."
        )
    return Path(str(files("synthgen") / "assets" / "generators" / BUNDLED_GENERATORS[preset]))


@dataclass(frozen=True)
class DataShape:
    """What the training store dictates: never a user flag."""

    num_classes: int  # including background
    channels: int
    image_size: int


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


@contextlib.contextmanager
def spec_errors(what: str, where: str) -> Iterator[None]:
    """Turn a missing key or a malformed value met while reading a ``what`` spec into one
    :class:`CheckpointError` that names the file."""
    try:
        yield
    except CheckpointError:
        raise
    except KeyError as e:
        raise CheckpointError(f"Expected key {e.args[0]!r} in {where}. It is missing.") from e
    except (ConfigError, SchemaError, TypeError, ValueError) as e:
        raise CheckpointError(f"Malformed {what} spec in {where}: {e}") from e


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
        with spec_errors("generator", where):
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
        return spec


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise CheckpointError(f"Expected {path.name} in checkpoint {path.parent}. It is missing.") from e
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"Cannot read {path}: {e}.") from e


def read_spec(path: Path) -> GeneratorSpec:
    """The spec of the checkpoint folder ``path``."""
    return GeneratorSpec.from_dict(read_json(path / GENERATOR_JSON), str(path / GENERATOR_JSON))
