"""The configuration of a dataset build (``synthgen build-dataset``): a frozen dataclass, JSON round-trip.

A build is fully determined by its :class:`BuildConfig`: the same config gives the same bytes, whatever
the scheduler or the number of workers. Where the build runs (scheduler, workers) is not part of it.
Configs come from a preset, then a TOML file, then command-line flags, each overriding the last.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from synthgen.errors import ConfigError
from synthgen.schemas.appearance import APPEARANCE, RANDOMISED, AppearanceConfig, appearance_from_dict
from synthgen.schemas.parse import (
    merge_overrides,
    parse_float,
    parse_int,
    parse_mapping,
    parse_str,
    reject_unknown_keys,
)
from synthgen.schemas.sources import CONFIGS, ProceduralSourceConfig, SourceConfig, source_config_from_dict
from synthgen.schemas.store_layout import IMAGE_DTYPES

BUNDLED = "bundled"  # the generator bundled for the preset (generator_spec.default_generator_path)
RANDOMISED_GENERATOR = "randomised"  # --generator randomised: images drawn from the label maps alone
BACKENDS = (
    "auto",
    "torch",
    "torch-compile",
    "onnxruntime",
    "onnxruntime-int8",
    "tensorrt",
)  # the generator backends (synthgen.inference)


@dataclass(frozen=True)
class DeformConfig:
    """Label deformation: elastic (B-spline control grid) plus a random affine, resampled once."""

    enabled: bool = True
    spacing: float = 32.0  # control-point spacing, pixels
    max_displacement: float = 4.0  # largest elastic displacement per component, pixels
    rotation: float = 8.0  # degrees, drawn from [-rotation, rotation]
    scale: float = 0.08  # relative: the overall scale lies in [1 - scale, 1 + scale]
    anisotropy: float = 0.05  # scale_y / scale_x within [1 / (1 + a), 1 + a]
    shear: float = 4.0  # degrees
    translate: float = 0.04  # fraction of the smaller image side

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"Expected deform.enabled to be true or false. Got {self.enabled!r} instead.")
        parse_float(self.spacing, "deform.spacing", lo=2.0)
        parse_float(self.max_displacement, "deform.max_displacement", lo=0.0)
        parse_float(self.rotation, "deform.rotation", lo=0.0, hi=180.0)
        parse_float(self.scale, "deform.scale", lo=0.0, hi=0.9)
        parse_float(self.anisotropy, "deform.anisotropy", lo=0.0, hi=1.0)
        parse_float(self.shear, "deform.shear", lo=0.0, hi=45.0)
        parse_float(self.translate, "deform.translate", lo=0.0, hi=0.5)


@dataclass(frozen=True)
class BuildConfig:
    """Everything that decides the bytes of a built dataset."""

    preset: str = "echo"
    n: int = 10_000
    seed: int = 0
    image_size: tuple[int, int] = (128, 128)
    shard_size: int = 256
    source: SourceConfig = field(default_factory=ProceduralSourceConfig)  # or its dict, parsed here
    deform: DeformConfig = field(default_factory=DeformConfig)
    gate: bool = True
    max_attempts: int = 20  # draws per sample before the gate gives up and keeps the last one, flagged
    generator: str = BUNDLED
    backend: str = "auto"
    batch_size: int = 32
    image_dtype: str = "uint8"
    sector_mask: bool = True  # the fixed CAMUS sector (not for the randomised generator, which draws its own)
    appearance: AppearanceConfig = APPEARANCE  # the stage after a trained generator ([appearance])
    randomised: AppearanceConfig = RANDOMISED  # the randomised generator's ranges ([randomised])

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"Expected a build preset in {sorted(PRESETS)}. Got {self.preset!r} instead.")
        parse_int(self.n, "n (the number of samples)", lo=1)
        parse_int(self.seed, "seed", lo=0, hi=2**63 - 1)
        size = tuple(self.image_size)
        if len(size) != 2 or any(not isinstance(s, int) or not 8 <= s <= 4096 for s in size):
            raise ConfigError(
                f"Expected image_size [H, W] with each in [8, 4096]. Got {self.image_size!r} instead."
            )
        object.__setattr__(self, "image_size", size)
        object.__setattr__(
            self, "appearance", appearance_from_dict(self.appearance, APPEARANCE, "appearance")
        )
        object.__setattr__(
            self, "randomised", appearance_from_dict(self.randomised, RANDOMISED, "randomised")
        )
        if not isinstance(self.source, tuple(CONFIGS.values())):
            object.__setattr__(self, "source", source_config_from_dict(self.source))
        parse_int(self.shard_size, "shard_size", lo=1, hi=65536)
        parse_int(self.max_attempts, "max_attempts", lo=1, hi=1000)
        parse_str(self.generator, "generator")
        if self.backend not in BACKENDS:
            raise ConfigError(f"Expected a backend in {BACKENDS}. Got {self.backend!r} instead.")
        parse_int(self.batch_size, "batch_size", lo=1, hi=4096)
        if self.image_dtype not in IMAGE_DTYPES:
            raise ConfigError(f"Expected image_dtype in {IMAGE_DTYPES}. Got {self.image_dtype!r} instead.")
        for name in ("gate", "sector_mask"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"Expected {name} to be true or false. Got {getattr(self, name)!r} instead."
                )

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["image_size"] = list(self.image_size)
        out["source"] = self.source.to_dict()
        out["deform"] = {f.name: getattr(self.deform, f.name) for f in fields(DeformConfig)}
        out["appearance"] = self.appearance.to_dict()
        out["randomised"] = self.randomised.to_dict()
        return out

    @property
    def randomised_generator(self) -> bool:
        return self.generator == RANDOMISED_GENERATOR

    @property
    def restyle(self) -> AppearanceConfig | None:
        """The appearance draw applied to every image: the randomised generator's, or the stage after a
        trained generator where it is enabled; None for neither."""
        if self.randomised_generator:
            return self.randomised
        return self.appearance if self.appearance.enabled else None

    @property
    def fixed_sector(self) -> bool:
        """Whether the fixed CAMUS sector mask applies: always with ``sector_mask``, except to the
        randomised generator's images. A trained generator draws the sector of its training images, so
        a sector drawn by the appearance stage is intersected with it (no wider fan than it learned)."""
        return self.sector_mask and not self.randomised_generator

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BuildConfig:
        data = dict(parse_mapping(data, "the build config"))
        reject_unknown_keys(data, {f.name for f in fields(cls)}, "the build config")
        if "deform" in data:
            deform = parse_mapping(data["deform"], "deform")
            reject_unknown_keys(deform, {f.name for f in fields(DeformConfig)}, "deform")
            data["deform"] = DeformConfig(**deform)
        if "image_size" in data:
            size = data["image_size"]
            if isinstance(size, str) or not isinstance(size, list | tuple):
                raise ConfigError(f"Expected image_size as [H, W]. Got {size!r} instead.")
            data["image_size"] = tuple(size)
        return cls(**data)

    def with_overrides(self, overrides: Mapping[str, Any]) -> BuildConfig:
        """A copy with ``overrides`` applied (:func:`~synthgen.schemas.parse.merge_overrides`)."""
        return BuildConfig.from_dict(merge_overrides(self.to_dict(), overrides))


# Each preset is a complete config; a TOML file or flags change what they name. generator = BUNDLED means
# the preset's bundled generator (generator_spec.BUNDLED_GENERATORS: echo CAMUS, sa-mr ACDC); ct has none
# and needs --generator CHECKPOINT trained on its schema.
PRESETS: dict[str, dict[str, Any]] = {
    "echo": {"source": {"kind": "procedural", "view": "apical"}, "sector_mask": True},
    "sa-mr": {
        "source": {"kind": "procedural", "view": "short_axis"},
        "sector_mask": False,
        "appearance": replace(APPEARANCE, modality="mr", sector=False),
        "randomised": replace(RANDOMISED, modality="mr", sector=False),
    },
    "ct": {
        "source": {"kind": "procedural", "view": "ct_axial"},
        "sector_mask": False,
        "image_size": (256, 256),
        "appearance": replace(APPEARANCE, modality="ct", sector=False),
        "randomised": replace(RANDOMISED, modality="ct", sector=False),
    },
}


def preset_config(name: str) -> BuildConfig:
    if name not in PRESETS:
        raise ConfigError(f"Expected a build preset in {sorted(PRESETS)}. Got {name!r} instead.")
    return replace(BuildConfig(preset=name), **PRESETS[name])


def load_build_config(path: str | Path | None, overrides: Mapping[str, Any]) -> BuildConfig:
    """Preset (from the file or the flags, default ``echo``), then the TOML file, then the flags."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except OSError as e:
            raise ConfigError(f"Cannot read build config {path}: {e.strerror}.") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"Cannot parse build config {path}: {e}.") from e
    preset = overrides.get("preset") or data.get("preset") or "echo"
    return preset_config(preset).with_overrides(data).with_overrides(overrides)
