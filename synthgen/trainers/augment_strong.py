"""The strong paired augmentation (``train-seg --augment strong``): nnU-Net's default 2D set.

Per sample, each transform is on with its own probability and its strength is drawn in its range
(:class:`StrongAugment`): rotation, zoom, elastic deformation, mirroring along each axis, then on the
image alone Gaussian noise, Gaussian blur, brightness, contrast, simulated low resolution, inverted
gamma and gamma (nnU-Net's order). :func:`sample_strong_params` draws a :class:`StrongParams` (one row
per sample, a fixed number of draws per sample whatever is switched on) from an explicit generator;
:func:`apply_strong` is deterministic, so any batch can be replayed from its parameters. The same
``sample_params`` / ``apply`` of :mod:`synthgen.trainers.augment` dispatch here for these types.

Geometry is one resampling per sample that has any (rotation, zoom and the elastic displacement of
:func:`synthgen.kernels.elastic_field` in one sampling grid): images bilinear, label maps nearest
neighbour, outside the image black and background, as in the light set; mirroring is an exact flip.
A sample without a transform keeps its exact values. Images are in [0, 1] in and out; a label map
keeps its dtype and only values it held (or 0).

Ranges are at the training size: elastic displacement and control spacing are fractions of the
shorter side (the spacing at least :data:`~synthgen.kernels.FIELD_STEP` pixels), blur sigmas are in
pixels. Zoom and gamma are drawn log-uniformly, everything else uniformly. Noise is a standard normal
field from the sample's own seed, times its drawn standard deviation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from synthgen.errors import ConfigError
from synthgen.kernels import FIELD_STEP, elastic_field, resize_images
from synthgen.schemas import parse_float, parse_mapping, reject_unknown_keys

Arrays = TypeVar("Arrays", np.ndarray, torch.Tensor)
Range = tuple[float, float]

# the bounds of each range (lo <= hi within them), and of each single strength
_RANGES = {
    "zoom": (0.1, 10.0),
    "blur": (0.0, 10.0),
    "brightness": (0.0, 10.0),
    "contrast": (0.0, 10.0),
    "low_res": (0.05, 1.0),
    "gamma": (0.1, 10.0),
}
_STRENGTHS = {"rotation": 180.0, "elastic": 0.5, "elastic_spacing": 4.0, "noise": 1.0}


def _parse_range(value: Any, name: str) -> Range:
    lo_bound, hi_bound = _RANGES[name]
    if isinstance(value, str) or not isinstance(value, list | tuple) or len(value) != 2:
        raise ConfigError(f"Expected augmentation {name} as [lo, hi]. Got {value!r} instead.")
    lo, hi = (parse_float(v, f"each end of augmentation {name}") for v in value)
    if not lo_bound <= lo <= hi <= hi_bound:
        raise ConfigError(
            f"Expected augmentation {name} = [lo, hi] with {lo_bound} <= lo <= hi <= {hi_bound}. "
            f"Got {list(value)} instead."
        )
    return lo, hi


@dataclass(frozen=True)
class StrongAugment:
    """What each transform may do and how often (``p_*``: its probability per sample).

    The defaults are nnU-Net's 2D defaults (``nnUNetTrainer.get_training_transforms``), except that
    elastic deformation is on for one sample in five (nnU-Net v1's rate; v2 turns it off).
    """

    rotation: float = 180.0  # degrees, uniform in +-rotation (180: the full circle)
    p_rotation: float = 0.2
    zoom: Range = (0.7, 1.4)  # > 1 enlarges
    p_zoom: float = 0.2
    elastic: float = 0.05  # largest displacement, uniform in [0, elastic] x the shorter side
    elastic_spacing: float = 0.25  # control points every this x the shorter side
    p_elastic: float = 0.2
    p_mirror: float = 0.5  # along each axis
    noise: float = 0.05  # Gaussian noise, standard deviation uniform in [0, noise]
    p_noise: float = 0.1
    blur: Range = (0.5, 1.0)  # Gaussian sigma in pixels
    p_blur: float = 0.2
    brightness: Range = (0.75, 1.25)  # multiplies the image
    p_brightness: float = 0.15
    contrast: Range = (0.75, 1.25)  # multiplies the distance from the sample's mean
    p_contrast: float = 0.15
    low_res: Range = (0.5, 1.0)  # down to this fraction of the size, then back up
    p_low_res: float = 0.25
    gamma: Range = (0.7, 1.5)  # x ** gamma
    p_gamma: float = 0.3
    p_gamma_inverted: float = 0.1  # 1 - (1 - x) ** gamma, drawn from the same range

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("p_"):
                value = parse_float(value, f"augmentation {f.name}", lo=0.0, hi=1.0)
            elif f.name in _RANGES:
                value = _parse_range(value, f.name)
            else:
                value = parse_float(value, f"augmentation {f.name}", lo=0.0, hi=_STRENGTHS[f.name])
            object.__setattr__(self, f.name, value)
        if self.elastic_spacing <= 0:
            raise ConfigError(f"Expected a positive elastic_spacing. Got {self.elastic_spacing} instead.")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StrongAugment:
        data = parse_mapping(data, "strong augmentation config")
        reject_unknown_keys(data, {f.name for f in fields(cls)}, "strong augmentation config")
        return cls(**data)

    def __call__(self, images: Arrays, labels: Arrays, rng: np.random.Generator):
        """Draw the parameters of this batch from ``rng`` and apply them (the loader's augment hook)."""
        return apply_strong(images, labels, sample_strong_params(rng, len(images), self))


_NEUTRAL = {"angle": 0.0, "zoom": 1.0, "elastic": 0.0, "elastic_spacing": 0.25, "noise": 0.0, "blur": 0.0}
_NEUTRAL |= {"brightness": 1.0, "contrast": 1.0, "low_res": 1.0, "gamma_inverted": 1.0, "gamma": 1.0}


def set_param_arrays(
    params: Any, pairs: tuple[str, ...] = (), dtypes: Mapping[str, Any] | None = None
) -> None:
    """Turn every field of the frozen per-sample ``params`` into an array of one value per sample (two
    for the fields in ``pairs``), float64 unless ``dtypes`` says otherwise; raise a ConfigError for a
    wrong shape or a non-finite float."""
    n = len(params.angle)
    for f in fields(params):
        kind = (dtypes or {}).get(f.name, np.float64)
        value = np.asarray(getattr(params, f.name), dtype=kind)
        want = (n, 2) if f.name in pairs else (n,)
        if value.shape != want or (kind is np.float64 and not np.isfinite(value).all()):
            raise ConfigError(
                f"Expected finite augmentation {f.name} of shape {want}. Got {value.shape} instead."
            )
        object.__setattr__(params, f.name, value)


@dataclass(frozen=True)
class StrongParams:
    """The drawn parameters of ``n`` samples, one entry (or row) per sample; neutral values are off."""

    angle: np.ndarray  # (n,) radians, positive turns content counter-clockwise as displayed
    zoom: np.ndarray  # (n,) > 1 enlarges
    elastic: np.ndarray  # (n,) largest displacement, fraction of the shorter side (0: none)
    elastic_spacing: np.ndarray  # (n,) control-point spacing, fraction of the shorter side
    elastic_seed: np.ndarray  # (n,) uint64 seed of the elastic field
    flip: np.ndarray  # (n, 2) bool: mirror rows (upside down), mirror columns (left-right)
    noise: np.ndarray  # (n,) standard deviation (0: none)
    noise_seed: np.ndarray  # (n,) uint64 seed of the noise field
    blur: np.ndarray  # (n,) sigma in pixels (0: none)
    brightness: np.ndarray  # (n,) factor
    contrast: np.ndarray  # (n,) factor about the sample's mean
    low_res: np.ndarray  # (n,) fraction of the size (1: none)
    gamma_inverted: np.ndarray  # (n,)
    gamma: np.ndarray  # (n,)

    def __post_init__(self) -> None:
        set_param_arrays(
            self, pairs=("flip",), dtypes={"flip": bool, "elastic_seed": np.uint64, "noise_seed": np.uint64}
        )

    def __len__(self) -> int:
        return len(self.angle)

    @classmethod
    def identity(cls, n: int) -> StrongParams:
        """Parameters that change nothing."""
        neutral = {k: np.full(n, v) for k, v in _NEUTRAL.items()}
        seeds = np.zeros(n, np.uint64)
        return cls(**neutral, elastic_seed=seeds, noise_seed=seeds, flip=np.zeros((n, 2), bool))

    def to_dict(self) -> dict[str, list]:
        return {f.name: getattr(self, f.name).tolist() for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StrongParams:
        data = parse_mapping(data, "strong augmentation parameters")
        reject_unknown_keys(data, {f.name for f in fields(cls)}, "strong augmentation parameters")
        return cls(**data)


def sample_strong_params(rng: np.random.Generator, n: int, config: StrongAugment) -> StrongParams:
    """Draw the parameters of ``n`` samples from ``rng``: 22 uniforms and two seeds per sample, always."""
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(f"Expected a numpy.random.Generator. Got {type(rng).__name__} instead.")
    u = rng.random((n, 22))
    seeds = rng.integers(0, 2**63, (n, 2), dtype=np.uint64)
    c = config

    def on(column: int, p: float) -> np.ndarray:
        return u[:, column] < p

    def within(column: int, bounds: Range, log: bool = False) -> np.ndarray:
        lo, hi = np.log(bounds) if log else bounds
        value = lo + (hi - lo) * u[:, column]
        return np.exp(value) if log else value

    def chosen(column: int, p: float, value: np.ndarray, neutral: float) -> np.ndarray:
        return np.where(on(column, p), value, neutral)

    return StrongParams(
        angle=chosen(0, c.p_rotation, np.radians(c.rotation) * (2 * u[:, 1] - 1), 0.0),
        zoom=chosen(2, c.p_zoom, within(3, c.zoom, log=True), 1.0),
        elastic=chosen(4, c.p_elastic, c.elastic * u[:, 5], 0.0),
        elastic_spacing=np.full(n, c.elastic_spacing),
        elastic_seed=seeds[:, 0],
        flip=np.stack([on(6, c.p_mirror), on(7, c.p_mirror)], axis=1),
        noise=chosen(8, c.p_noise, c.noise * u[:, 9], 0.0),
        noise_seed=seeds[:, 1],
        blur=chosen(10, c.p_blur, within(11, c.blur), 0.0),
        brightness=chosen(12, c.p_brightness, within(13, c.brightness), 1.0),
        contrast=chosen(14, c.p_contrast, within(15, c.contrast), 1.0),
        low_res=chosen(16, c.p_low_res, within(17, c.low_res), 1.0),
        gamma_inverted=chosen(18, c.p_gamma_inverted, within(19, c.gamma, log=True), 1.0),
        gamma=chosen(20, c.p_gamma, within(21, c.gamma, log=True), 1.0),
    )


def _sampling_grid(params: StrongParams, which: np.ndarray, h: int, w: int) -> torch.Tensor:
    """(len(which), H, W, 2) grid_sample grid: rotation and zoom about the centre plus the elastic field."""
    angle, zoom = params.angle[which], params.zoom[which]
    cos, sin, zero = np.cos(angle) / zoom, np.sin(angle) / zoom, np.zeros(len(which))
    theta = np.stack([np.stack([cos, -sin, zero], 1), np.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(torch.from_numpy(theta).float(), [len(which), 1, h, w], align_corners=False)
    side = min(h, w)
    for j, i in enumerate(which):
        if params.elastic[i] > 0:
            spacing = max(float(FIELD_STEP), params.elastic_spacing[i] * side)
            field = elastic_field(int(params.elastic_seed[i]), (h, w), spacing, params.elastic[i] * side)
            # pixels (rows, columns) -> grid units (x, y): the image spans 2
            grid[j, ..., 0] += torch.from_numpy(field[1]) * (2 / w)
            grid[j, ..., 1] += torch.from_numpy(field[0]) * (2 / h)
    return grid


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (C, H, W), edges clamped, taps to 3 sigma."""
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel = torch.from_numpy(taps / taps.sum()).to(x)
    c = x.shape[0]
    y = F.pad(x[:, None], (radius, radius, radius, radius), mode="replicate")
    y = F.conv2d(y, kernel.view(1, 1, 1, -1))
    return F.conv2d(y, kernel.view(1, 1, -1, 1)).reshape(c, *x.shape[1:])


def apply_strong(images: Arrays, labels: Arrays, params: StrongParams) -> tuple[Arrays, Arrays]:
    """Apply ``params`` to images (N, H, W) or (N, C, H, W) in [0, 1] and integer label maps (N, H, W).

    A NumPy array in gives a NumPy array out; a tensor gives a tensor (computed on the CPU, returned on
    its device). Inputs are not modified.
    """
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
    device = x.device
    xs = x.detach().cpu().reshape(n, -1, h, w).to(torch.float32, copy=True)
    ys = y.detach().cpu().clone()

    moved = np.flatnonzero((params.angle != 0) | (params.zoom != 1) | (params.elastic > 0))
    if moved.size:
        grid, k = _sampling_grid(params, moved, h, w), torch.from_numpy(moved)
        xs[k] = F.grid_sample(xs[k], grid, mode="bilinear", align_corners=False)
        warped = F.grid_sample(ys[k][:, None].float(), grid, mode="nearest", align_corners=False)
        ys[k] = warped[:, 0].round_().to(ys.dtype)
    for i in np.flatnonzero(params.flip.any(axis=1)):
        dims = [d for d, on in zip((-2, -1), params.flip[i], strict=True) if on]
        xs[i], ys[i] = xs[i].flip(dims), ys[i].flip(dims)

    xs.clamp_(0, 1)
    for i in np.flatnonzero(params.noise > 0):
        noise = np.random.default_rng(params.noise_seed[i]).standard_normal(xs.shape[1:], np.float32)
        xs[i] += torch.from_numpy(noise) * float(params.noise[i])
    for i in np.flatnonzero(params.blur > 0):
        xs[i] = _gaussian_blur(xs[i], float(params.blur[i]))
    for i in np.flatnonzero(params.brightness != 1):
        xs[i] *= float(params.brightness[i])
    for i in np.flatnonzero(params.contrast != 1):
        mean = xs[i].mean(dim=(-2, -1), keepdim=True)
        xs[i] = (xs[i] - mean) * float(params.contrast[i]) + mean
    for i in np.flatnonzero(params.low_res != 1):
        small = (max(1, round(h * params.low_res[i])), max(1, round(w * params.low_res[i])))
        xs[i] = torch.from_numpy(resize_images(resize_images(xs[i].numpy(), small), (h, w)))
    xs.clamp_(0, 1)
    for i in np.flatnonzero(params.gamma_inverted != 1):
        xs[i] = 1 - (1 - xs[i]) ** float(params.gamma_inverted[i])
    for i in np.flatnonzero(params.gamma != 1):
        xs[i] = xs[i] ** float(params.gamma[i])
    xs.clamp_(0, 1)

    x_out, y_out = xs.reshape(x.shape).to(device, x.dtype), ys.to(device)
    x_out = x_out.numpy() if isinstance(images, np.ndarray) else x_out
    return x_out, y_out.numpy() if isinstance(labels, np.ndarray) else y_out
