"""Paired augmentation of images and label maps: :func:`sample_params` then :func:`apply`.

One random affine warp per sample (rotation, zoom, shift about the centre), the same for the image and
its label map, then a gamma, contrast and brightness change of the image alone. :func:`sample_params`
draws an :class:`AugmentParams` (one row per sample) from an explicit generator; :func:`apply` is
deterministic, so any batch can be replayed from its parameters.

Images are resampled bilinearly (outside -> 0, black), label maps by nearest neighbour (outside -> 0,
background), so a label map only ever holds values it held before. The ranges are an
:class:`AugmentConfig`; :class:`SegAugment` (the segmenter trainer) and :class:`GanAugment` (the GAN
trainer) are the same config with their own defaults.

``train-seg --augment`` chooses one of :data:`AUGMENT_LEVELS`: ``none``, ``light`` (:class:`SegAugment`)
or ``strong`` (:class:`~synthgen.trainers.augment_strong.StrongAugment`, nnU-Net's set);
:func:`sample_params` and :func:`apply` serve both sets, dispatching on the config and parameter types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from synthgen.errors import ConfigError
from synthgen.schemas import parse_float, parse_mapping, reject_unknown_keys
from synthgen.trainers.augment_strong import (
    StrongAugment,
    StrongParams,
    apply_strong,
    sample_strong_params,
    set_param_arrays,
)

# the upper bound of each range (all lower bounds are 0, which turns that part off)
_LIMITS = {"rotation": 180.0, "scale": 0.9, "shift": 1.0, "gamma": 2.0, "contrast": 1.0, "brightness": 1.0}
Arrays = TypeVar("Arrays", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class AugmentConfig:
    """How far the random changes reach; every parameter is drawn uniformly. All zero: the identity."""

    rotation: float = 0.0  # degrees, uniform in +-rotation
    scale: float = 0.0  # zoom uniform in 1 +- scale
    shift: float = 0.0  # translation, fraction of the image, uniform in +-shift per axis
    gamma: float = 0.0  # gamma = exp(uniform(+-gamma))
    contrast: float = 0.0  # multiply by uniform 1 +- contrast
    brightness: float = 0.0  # add uniform +-brightness

    def __post_init__(self) -> None:
        for f in fields(self):
            value = parse_float(getattr(self, f.name), f"augmentation {f.name}", lo=0.0, hi=_LIMITS[f.name])
            object.__setattr__(self, f.name, value)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AugmentConfig:
        data = parse_mapping(data, "augmentation config")
        reject_unknown_keys(data, {f.name for f in fields(cls)}, "augmentation config")
        return cls(**data)

    def __call__(self, images: Arrays, labels: Arrays, rng: np.random.Generator | torch.Generator):
        """Draw the parameters of this batch from ``rng`` and apply them (the loader's augment hook)."""
        return apply(images, labels, sample_params(rng, len(images), self))


@dataclass(frozen=True)
class SegAugment(AugmentConfig):
    """The segmenter trainer's light on-the-fly augmentation (affine warp + intensity change)."""

    rotation: float = 10.0
    scale: float = 0.1
    shift: float = 0.05
    gamma: float = 0.3
    contrast: float = 0.1
    brightness: float = 0.05


@dataclass(frozen=True)
class GanAugment(AugmentConfig):
    """The GAN trainer's small affine warps of image and labels (no intensity change)."""

    rotation: float = 5.0
    scale: float = 0.05
    shift: float = 0.03


@dataclass(frozen=True)
class AugmentParams:
    """The drawn parameters of ``n`` samples, one entry (or row) per sample."""

    angle: np.ndarray  # (n,) radians, positive turns content counter-clockwise as displayed
    zoom: np.ndarray  # (n,) > 1 enlarges
    shift: np.ndarray  # (n, 2) x, y in affine_grid coordinates (the image spans 2)
    gamma: np.ndarray  # (n,)
    contrast: np.ndarray  # (n,)
    brightness: np.ndarray  # (n,)

    def __post_init__(self) -> None:
        set_param_arrays(self, pairs=("shift",))

    def __len__(self) -> int:
        return len(self.angle)

    @classmethod
    def identity(cls, n: int) -> AugmentParams:
        """Parameters that change nothing."""
        zeros, ones = np.zeros(n), np.ones(n)
        return cls(zeros, ones, np.zeros((n, 2)), ones, ones, zeros)

    def to_dict(self) -> dict[str, list]:
        return {f.name: getattr(self, f.name).tolist() for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AugmentParams:
        data = parse_mapping(data, "augmentation parameters")
        reject_unknown_keys(data, {f.name for f in fields(cls)}, "augmentation parameters")
        return cls(**data)


def _uniform(rng: np.random.Generator | torch.Generator, shape: tuple[int, int]) -> np.ndarray:
    """float64 draws uniform in [-1, 1) from either kind of explicit generator."""
    if isinstance(rng, np.random.Generator):
        return rng.uniform(-1.0, 1.0, shape)
    if isinstance(rng, torch.Generator):
        u = torch.rand(shape, generator=rng, dtype=torch.float64, device=rng.device)
        return u.cpu().numpy() * 2 - 1
    raise ConfigError(
        f"Expected a numpy.random.Generator or a torch.Generator. Got {type(rng).__name__} instead."
    )


def sample_params(rng: np.random.Generator | torch.Generator, n: int, config: AugmentConfig | StrongAugment):
    """Draw the parameters of ``n`` samples from ``rng`` (seven draws per sample, in a fixed order);
    a :class:`StrongAugment` gives :class:`StrongParams` (:func:`sample_strong_params`)."""
    if isinstance(config, StrongAugment):
        return sample_strong_params(rng, n, config)
    u = _uniform(rng, (n, 7))
    return AugmentParams(
        angle=np.radians(config.rotation) * u[:, 0],
        zoom=1 + config.scale * u[:, 1],
        shift=config.shift * 2 * u[:, 2:4],
        gamma=np.exp(config.gamma * u[:, 4]),
        contrast=1 + config.contrast * u[:, 5],
        brightness=config.brightness * u[:, 6],
    )


def apply(images: Arrays, labels: Arrays, params: AugmentParams | StrongParams) -> tuple[Arrays, Arrays]:
    """Apply ``params`` to images (N, H, W) or (N, C, H, W) in [0, 1] and integer label maps (N, H, W).

    A NumPy array in gives a NumPy array out; a tensor gives a tensor on the same device. Inputs are not
    modified. The image stays in [0, 1]; the label map keeps its dtype and only values it held (or 0).
    :class:`StrongParams` go to :func:`apply_strong`.
    """
    if isinstance(params, StrongParams):
        return apply_strong(images, labels, params)
    x = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
    y = torch.from_numpy(labels) if isinstance(labels, np.ndarray) else labels
    n, (h, w) = len(x), y.shape[-2:]
    if y.is_floating_point() or y.dim() != 3 or tuple(x.shape[-2:]) != (h, w) or len(y) != n:
        raise ConfigError(
            f"Expected integer label maps (N, H, W) matching images (N, [C,] H, W). "
            f"Got labels {y.dtype} {tuple(y.shape)} and images {tuple(x.shape)} instead."
        )
    if len(params) != n:
        raise ConfigError(f"Expected augmentation parameters for {n} samples. Got {len(params)} instead.")
    cos, sin = np.cos(params.angle) / params.zoom, np.sin(params.angle) / params.zoom
    theta = np.stack(
        [np.stack([cos, -sin, params.shift[:, 0]], 1), np.stack([sin, cos, params.shift[:, 1]], 1)], 1
    )
    theta = torch.from_numpy(theta).to(x.device, torch.float32)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    warped = F.grid_sample(x.reshape(n, -1, h, w).float(), grid, mode="bilinear", align_corners=False)
    y_out = F.grid_sample(y[:, None].float(), grid, mode="nearest", align_corners=False)[:, 0]

    def per_sample(values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(values).to(x.device, torch.float32).view(n, 1, 1, 1)

    warped = warped.clamp_(0, 1) ** per_sample(params.gamma) * per_sample(params.contrast)
    warped = (warped + per_sample(params.brightness)).clamp_(0, 1)
    x_out, y_out = warped.reshape(x.shape).to(x.dtype), y_out.round_().to(y.dtype)
    x_out = x_out.numpy() if isinstance(images, np.ndarray) else x_out
    return x_out, y_out.numpy() if isinstance(labels, np.ndarray) else y_out


AUGMENT_LEVELS = ("none", "light", "strong")
SegAugmentation = SegAugment | StrongAugment | None  # what train-seg's config holds: one per level


def seg_augment(level: str) -> SegAugmentation:
    """The augmentation of a ``train-seg --augment`` level, with its default ranges."""
    if level not in AUGMENT_LEVELS:
        raise ConfigError(f"Expected an augmentation level in {list(AUGMENT_LEVELS)}. Got {level!r} instead.")
    return {"none": None, "light": SegAugment(), "strong": StrongAugment()}[level]


def augment_level(augment: SegAugmentation) -> str:
    """``none``, ``light`` or ``strong``: the level of an augmentation (whatever its ranges)."""
    if augment is None:
        return "none"
    if isinstance(augment, StrongAugment):
        return "strong"
    if isinstance(augment, AugmentConfig):
        return "light"
    raise ConfigError(
        f"Expected a SegAugment, a StrongAugment or None. Got {type(augment).__name__} instead."
    )


def augment_to_dict(augment: SegAugmentation) -> dict[str, Any]:
    """``{"level": ..., **ranges}``: what a segmenter's spec records of the augmentation that trained it."""
    return {"level": augment_level(augment)} | (augment.to_dict() if augment is not None else {})


def augment_from_dict(data: Mapping[str, Any] | None) -> SegAugmentation:
    """Inverse of :func:`augment_to_dict`. Configs written before levels were recorded hold None (no
    augmentation) or the light ranges without a level."""
    if data is None:
        return None
    data = dict(parse_mapping(data, "augmentation config"))
    level = data.pop("level", "light")
    if level == "none" and data:
        raise ConfigError(f"Expected no augmentation ranges with level 'none'. Got {sorted(data)} instead.")
    augment = seg_augment(level)
    return None if augment is None else type(augment).from_dict(data)
