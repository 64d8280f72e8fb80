"""Fixed acquisition shifts of real test images: how far a segmenter's Dice falls on another scanner.

Each shift changes one thing about the acquisition, at one fixed strength, through the appearance kernel
(:func:`synthgen.kernels.appearance`, the base image restyled, every other quantity neutral):

- ``gamma``: intensities to the power :data:`LEVELS` ``gamma``;
- ``bias``: a smooth multiplicative bias field (log standard deviation ``bias``), drawn per image;
- ``noise``: the modality's noise at level ``noise`` (echo: speckle; MR: Rician; CT: Gaussian), per image;
- ``blur``: Gaussian blur of sigma ``blur`` pixels (at the store's resolution);
- ``resolution``: resolution lost by a factor ``resolution`` along each axis (down, then up);
- ``inversion`` (MR only): 1 - intensity (another contrast: T1 against T2, say).

What is drawn per image (the bias field, the noise) comes from the image's own key,
:func:`~synthgen.seeding.shift_keys` of (seed, shift, store index): every segmenter scored under a shift
sees exactly the same shifted images. Images are in [0, 1] in and out, at the store's own size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from synthgen.errors import ConfigError
from synthgen.kernels import appearance
from synthgen.schemas import MODALITIES, AppearanceConfig
from synthgen.seeding import shift_keys

SHIFTS = ("gamma", "bias", "noise", "blur", "resolution", "inversion")
MR_ONLY = ("inversion",)
# one fixed strength per shift (ranges of AppearanceConfig, lo == hi); echo noise is speckle
LEVELS: dict[str, dict[str, float]] = {
    "gamma": {"gamma": 1.6},
    "bias": {"bias": 0.35},
    "noise": {"noise": 0.08},
    "blur": {"blur": 1.5},
    "resolution": {"resolution": 2.5},
}
ECHO_NOISE = 0.5  # speckle level: multiplicative, so stronger than additive noise for the same effect
SCHEMA_MODALITY = {"camus": "echo", "acdc": "mr", "mmwhs": "ct"}
# everything neutral: no gamma, contrast, brightness, blur, resolution loss, bias, noise or sector
NEUTRAL = AppearanceConfig(
    texture=False,
    sector=False,
    gamma=(1.0, 1.0),
    contrast=(1.0, 1.0),
    brightness=(0.0, 0.0),
    blur=(0.0, 0.0),
    resolution=(1.0, 1.0),
    bias=(0.0, 0.0),
    noise=(0.0, 0.0),
)


def store_modality(schema_name: str, modality: str | None = None) -> str:
    """``modality`` where given, else the modality of a known schema (camus: echo, acdc: mr, mmwhs: ct)."""
    chosen = modality or SCHEMA_MODALITY.get(schema_name)
    if chosen not in MODALITIES:
        raise ConfigError(
            f"Expected a modality in {MODALITIES} for the shifts (--modality). Got {modality!r} for a "
            f"store of schema {schema_name!r}, whose modality is not known."
        )
    return chosen


def shifts_for(modality: str) -> tuple[str, ...]:
    """The shifts that make sense for ``modality`` (intensity inversion for MR only)."""
    return tuple(s for s in SHIFTS if modality == "mr" or s not in MR_ONLY)


@dataclass(frozen=True)
class AcquisitionShift:
    """One shift of :data:`SHIFTS` for images of ``modality``; its per-image draws from ``seed``."""

    name: str
    modality: str
    seed: int = 0

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ConfigError(f"Expected a modality in {MODALITIES}. Got {self.modality!r} instead.")
        if self.name not in shifts_for(self.modality):
            raise ConfigError(
                f"Expected a shift in {shifts_for(self.modality)} for {self.modality} images. "
                f"Got {self.name!r} instead."
            )

    @property
    def config(self) -> AppearanceConfig | None:
        """The appearance ranges of this shift (None for the inversion, which needs none)."""
        if self.name == "inversion":
            return None
        level = dict(LEVELS[self.name])
        if self.name == "noise" and self.modality == "echo":
            level["noise"] = ECHO_NOISE
        return replace(NEUTRAL, modality=self.modality, **{k: (v, v) for k, v in level.items()})

    def to_dict(self) -> dict[str, Any]:
        cfg = self.config
        levels = {} if cfg is None else {k: getattr(cfg, k)[0] for k in LEVELS.get(self.name, {})}
        return {"name": self.name, "modality": self.modality, "seed": self.seed, "level": levels}

    def __call__(self, images: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """Images (n, C, H, W) in [0, 1] of store samples ``indices`` -> the shifted images, float32, same
        shape (every channel of an image under the same draw)."""
        x = np.asarray(images, np.float32)
        if x.ndim != 4 or len(indices) != len(x):
            raise ConfigError(
                f"Expected images (n, C, H, W) and n store indices. Got {x.shape} and {len(indices)} instead."
            )
        if self.name == "inversion":
            return 1.0 - x
        n, c, h, w = x.shape
        keys = np.repeat(shift_keys(self.seed, SHIFTS.index(self.name), indices), c)
        out, _ = appearance(
            np.zeros((n * c, h, w), np.uint8),  # class maps matter only to textures and sectors: none here
            keys,
            np.asarray(self.config.ranges(), np.float64),
            num_classes=1,
            modality=self.modality,
            texture=False,
            sector=False,
            base=x.reshape(n * c, h, w),
        )
        return out.reshape(x.shape)
