"""Appearance randomisation: the ranges that the randomised generator and the appearance stage draw from.

One :class:`AppearanceConfig` describes both uses of :mod:`synthgen.kernels.randomise`:

- the **randomised generator** (``--generator randomised``, in the spirit of SynthSeg, Billot et al.
  2023) draws each class's intensity from its own Gaussian (``texture``), then applies everything
  below with wide ranges (:data:`RANDOMISED`);
- the **appearance stage** applies the same randomisations, milder (:data:`APPEARANCE`), to the output
  of a trained generator, so that GAN realism and randomised variety combine (``[appearance]``).

Every range is ``(lo, hi)``, drawn uniformly per sample (``gamma`` log-uniformly). The ultrasound
sector's ranges are those measured on the CAMUS images (``bench/sector_geometry.py``): apex position
as fractions of the image height and width, half opening angle and tilt in degrees (in pixel space),
and the far boundary, an ellipse about the apex (CAMUS frames were cropped to the fan and stretched
to a square): its semi-axes below the apex (``sector_depth``, fraction of the height) and across
(``sector_width``, fraction of the width).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from synthgen.errors import ConfigError
from synthgen.schemas.parse import parse_mapping, reject_unknown_keys

MODALITIES = ("echo", "mr", "ct")

Range = tuple[float, float]

# The drawn quantities, in the order of the kernel's parameter vector (synthgen.kernels.randomise).
RANGED = (
    "gamma",
    "contrast",
    "brightness",
    "blur",  # Gaussian blur sigma in pixels, drawn per axis
    "blur",
    "resolution",  # resolution loss factor (>= 1), drawn per axis
    "resolution",
    "bias",  # standard deviation of the log bias field
    "noise",
    "speckle_width",
    "sector_apex_y",
    "sector_apex_x",
    "sector_half_angle",
    "sector_tilt",
    "sector_depth",
    "sector_width",
    "sector_spill",
)

_BOUNDS: dict[str, Range] = {
    "class_mean": (0.0, 1.0),
    "class_std": (0.0, 0.5),
    "gamma": (0.5, 4.0),
    "contrast": (0.1, 4.0),
    "brightness": (-0.5, 0.5),
    "blur": (0.0, 8.0),
    "resolution": (1.0, 8.0),
    "bias": (0.0, 2.0),
    "noise": (0.0, 1.0),
    "speckle_width": (0.0, 0.1),
    "sector_apex_y": (-0.5, 0.5),
    "sector_apex_x": (0.0, 1.0),
    "sector_half_angle": (5.0, 80.0),
    "sector_tilt": (-30.0, 30.0),
    "sector_depth": (0.2, 2.0),
    "sector_width": (0.2, 2.0),
    "sector_spill": (0.0, 0.5),
}


def _parse_range(value: Any, name: str, section: str) -> Range:
    lo_bound, hi_bound = _BOUNDS[name]
    if isinstance(value, str) or not isinstance(value, list | tuple) or len(value) != 2:
        raise ConfigError(f"Expected {section}.{name} as [lo, hi]. Got {value!r} instead.")
    lo, hi = value
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, int | float) or v != v:
            raise ConfigError(f"Expected numbers in {section}.{name}. Got {value!r} instead.")
    if not lo_bound <= lo <= hi <= hi_bound:
        raise ConfigError(
            f"Expected {section}.{name} = [lo, hi] with {lo_bound} <= lo <= hi <= {hi_bound}. "
            f"Got {list(value)} instead."
        )
    return float(lo), float(hi)


def _check(config: Mapping[str, Any], section: str) -> None:
    """Raise a ConfigError naming ``section`` for the first malformed field of ``config``."""
    for name in ("enabled", "texture", "sector"):
        if name in config and not isinstance(config[name], bool):
            raise ConfigError(f"Expected {section}.{name} to be true or false. Got {config[name]!r} instead.")
    if "modality" in config and config["modality"] not in MODALITIES:
        raise ConfigError(f"Expected {section}.modality in {MODALITIES}. Got {config['modality']!r} instead.")
    for name in _BOUNDS:
        if name in config:
            _parse_range(config[name], name, section)


@dataclass(frozen=True)
class AppearanceConfig:
    """What one appearance draw may do (see the module docstring); ``enabled`` switches the stage."""

    enabled: bool = True
    modality: str = "echo"  # echo: speckle and sector; mr: Rician noise; ct: Gaussian noise
    texture: bool = False  # draw each class's intensity (the randomised generator) instead of an input image
    class_mean: Range = (0.0, 1.0)
    class_std: Range = (0.0, 0.1)
    gamma: Range = (0.8, 1.25)
    contrast: Range = (0.85, 1.15)
    brightness: Range = (-0.05, 0.05)
    blur: Range = (0.0, 0.35)  # below 0.25 no blur: the trained generator's images are smooth already
    resolution: Range = (1.0, 1.0)  # factors below 1.25 are none
    bias: Range = (0.0, 0.15)
    noise: Range = (0.0, 0.15)
    speckle_width: Range = (0.002, 0.012)  # lateral speckle correlation at full depth, fraction of the width
    sector: bool = True  # echo only: blank outside an anti-aliased sector drawn per sample
    # CAMUS, 1st to 99th percentile (bench/results/sector_geometry.json), tilt and apex widened a little
    sector_apex_y: Range = (-0.003, 0.0)
    sector_apex_x: Range = (0.495, 0.505)
    sector_half_angle: Range = (30.0, 36.0)  # in pixel space
    sector_tilt: Range = (-1.0, 1.0)
    sector_depth: Range = (0.97, 1.0)  # the far boundary's semi-axis below the apex, fraction of H
    sector_width: Range = (0.7, 0.95)  # its semi-axis across, fraction of W (an ellipse in pixel space)
    sector_spill: Range = (0.0, 0.04)  # share of the labelled pixels that may lie outside the sector

    def __post_init__(self) -> None:
        _check({f.name: getattr(self, f.name) for f in fields(self)}, "appearance")
        for name in _BOUNDS:
            object.__setattr__(self, name, _parse_range(getattr(self, name), name, "appearance"))

    @property
    def uses_sector(self) -> bool:
        return self.sector and self.modality == "echo"

    def to_dict(self) -> dict[str, Any]:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Any, what: str = "appearance", base: AppearanceConfig | None = None):
        """A config from a mapping (TOML ``[appearance]``); keys it does not name keep ``base``'s values."""
        data = parse_mapping(data, what)
        reject_unknown_keys(data, {f.name for f in fields(cls)}, what)
        _check(data, what)
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return replace(base or cls(), **values)

    def ranges(self) -> list[Range]:
        """The ranges of :data:`RANGED`, then ``class_mean`` and ``class_std``: the kernel's input."""
        return [getattr(self, name) for name in (*RANGED, "class_mean", "class_std")]


# Mild: on top of a trained generator's images.
APPEARANCE = AppearanceConfig()

# Wide: images drawn from label maps alone.
RANDOMISED = AppearanceConfig(
    texture=True,
    class_mean=(0.0, 1.0),
    class_std=(0.0, 0.12),
    gamma=(0.5, 2.0),
    contrast=(0.7, 1.4),
    brightness=(-0.1, 0.1),
    blur=(0.0, 1.5),
    resolution=(1.0, 2.5),
    bias=(0.0, 0.4),
    noise=(0.05, 0.5),
    speckle_width=(0.002, 0.02),
    sector_apex_y=(-0.05, 0.02),
    sector_apex_x=(0.46, 0.54),
    sector_half_angle=(26.0, 45.0),
    sector_tilt=(-6.0, 6.0),
    sector_depth=(0.85, 1.0),
    sector_width=(0.6, 1.0),
)


def appearance_from_dict(data: Mapping[str, Any] | AppearanceConfig, base: AppearanceConfig, what: str):
    """``data`` parsed over ``base`` (an :class:`AppearanceConfig` passes through)."""
    if isinstance(data, AppearanceConfig):
        return data
    return AppearanceConfig.from_dict(data, what, base)
