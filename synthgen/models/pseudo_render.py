"""The pseudo-image renderer of the unpaired route (Gilbert et al., IEEE TMI 2021): label map -> crude image.

Each class gets a flat intensity drawn from its range, the map is blurred (soft class borders), noise
is added (multiplicative Rayleigh speckle for echo, additive Gaussian for MR and CT) and, for echo,
everything outside the ultrasound sector is black. CycleGAN then learns to turn these crude images
into real-looking ones (:mod:`synthgen.models.cyclegan`).

Two implementations of one function, tested against each other:

- :func:`render` (NumPy, ``render(labels, params)`` after ``sample_render_params(rng, schema)``): the
  readable reference, for previews and audits; every draw is in :class:`RenderParams`.
- :class:`PseudoRenderer` (torch): the same function of one-hot labels and a *style* vector, computed
  inside the CycleGAN generator, so an exported generator stays a pure function of (labels, style).

The style vector (standard normal, ``style_dim(config)`` long) encodes every random draw: slot ``k``
of the first ``intensity_slots`` gives class ``k`` its intensity ``lo + Phi(z) * (hi - lo)`` (uniform
in its range: ``Phi`` is the normal CDF), the next value gives the noise strength (uniform in
[``noise_min``, ``noise_max``]), and the last ``2 * noise_fields`` values are two mixing vectors ``a``,
``b`` over a fixed bank of ``noise_fields`` smooth unit-variance Gaussian fields (drawn once from
``noise_seed``). ``a / |a|`` mixes the bank into a field ``A`` that is N(0, 1) at every pixel, likewise
``B``; speckle is the Rayleigh magnitude ``sqrt((A^2 + B^2) / 2)``. No per-pixel randomness enters the
graph, so ONNX Runtime, TensorRT and torch compute the same image, and a stored style replays it.

Speckle multiplies by ``1 + s * (R / E[R] - 1)``; Gaussian noise adds ``0.15 * s * A`` (``s`` the
strength). Intensities are in [0, 1]; :func:`render` returns [0, 1], the torch module [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import ndtr
from torch import nn

from synthgen import seeding
from synthgen.errors import ConfigError
from synthgen.kernels import sector_mask
from synthgen.schemas import BACKGROUND, LabelSchema, parse_mapping, reject_unknown_keys

MODALITIES = ("echo", "mr", "ct")
RAYLEIGH_MEAN = math.sqrt(math.pi) / 2  # E[R] for R = sqrt((A^2 + B^2) / 2), A, B ~ N(0, 1)
GAUSSIAN_STD = 0.15  # additive noise std at strength 1, in intensity units

# Documented default intensity ranges, by exact class name (see intensity_ranges_for)
BLOOD = ("lv_cavity", "rv_cavity", "left_atrium", "right_atrium", "aorta", "pulmonary_artery")
MUSCLE = ("lv_myocardium",)
RANGES: dict[str, dict[str, tuple[float, float]]] = {
    # B-mode: blood dark, myocardium bright, surrounding tissue mid-grey
    "echo": {BACKGROUND: (0.15, 0.45), "blood": (0.0, 0.12), "muscle": (0.5, 0.9), "other": (0.3, 0.6)},
    # cine bSSFP: blood bright, myocardium dark
    "mr": {BACKGROUND: (0.0, 0.3), "blood": (0.65, 1.0), "muscle": (0.15, 0.35), "other": (0.3, 0.6)},
    # contrast CT: blood bright, myocardium intermediate
    "ct": {BACKGROUND: (0.0, 0.25), "blood": (0.6, 0.9), "muscle": (0.35, 0.5), "other": (0.3, 0.6)},
}


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True)
class RenderConfig:
    """The fixed part of the renderer. ``intensity_ranges`` (one (lo, hi) per class index, background
    first) default to :func:`auto_ranges` when empty; :func:`intensity_ranges_for` gives the
    modality-typed ranges of a schema."""

    modality: str = "echo"
    blur_sigma: float = 1.0  # pixels, of the class map
    grain_sigma: float = 0.7  # pixels, correlation length of the noise fields
    noise_min: float = 0.3
    noise_max: float = 0.8
    noise_fields: int = 8
    noise_seed: int = 0
    intensity_slots: int = 8  # the most classes the style can give an intensity to
    intensity_ranges: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        _check(
            self.modality in MODALITIES,
            f"Expected a modality in {MODALITIES}. Got {self.modality!r} instead.",
        )
        for name in ("blur_sigma", "grain_sigma"):
            _check(
                0 <= getattr(self, name) <= 8,
                f"Expected {name} in [0, 8]. Got {getattr(self, name)} instead.",
            )
        _check(
            0 <= self.noise_min <= self.noise_max <= 1,
            f"Expected 0 <= noise_min <= noise_max <= 1. Got {self.noise_min} and {self.noise_max} instead.",
        )
        _check(
            1 <= self.noise_fields <= 64,
            f"Expected noise_fields in [1, 64]. Got {self.noise_fields} instead.",
        )
        _check(self.noise_seed >= 0, f"Expected noise_seed >= 0. Got {self.noise_seed} instead.")
        _check(
            2 <= self.intensity_slots <= 256,
            f"Expected intensity_slots in [2, 256]. Got {self.intensity_slots} instead.",
        )
        for lo, hi in self.intensity_ranges:
            _check(
                0 <= lo <= hi <= 1, f"Expected intensity ranges with 0 <= lo <= hi <= 1. Got ({lo}, {hi})."
            )

    @property
    def style_dim(self) -> int:
        return self.intensity_slots + 1 + 2 * self.noise_fields

    @property
    def sector(self) -> bool:
        return self.modality == "echo"

    def ranges(self, num_classes: int) -> np.ndarray:
        """(num_classes, 2) float64 intensity ranges, checked against the class count."""
        _check(
            num_classes <= self.intensity_slots,
            f"Expected at most intensity_slots = {self.intensity_slots} classes (background included). "
            f"Got {num_classes} instead: raise intensity_slots.",
        )
        if not self.intensity_ranges:
            return auto_ranges(num_classes, self.modality)
        _check(
            len(self.intensity_ranges) == num_classes,
            f"Expected {num_classes} intensity ranges (one per class of the store, background first). "
            f"Got {len(self.intensity_ranges)} instead.",
        )
        return np.asarray(self.intensity_ranges, np.float64)

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["intensity_ranges"] = [list(r) for r in self.intensity_ranges]
        return out

    @classmethod
    def from_dict(cls, data: Any) -> RenderConfig:
        data = dict(parse_mapping(data, "the render config"))
        reject_unknown_keys(data, set(cls.__dataclass_fields__), "the render config")
        if "intensity_ranges" in data:
            data["intensity_ranges"] = parse_ranges(data["intensity_ranges"])
        return cls(**data)


def parse_ranges(value: Any) -> tuple[tuple[float, float], ...]:
    """[[lo, hi], ...] -> a tuple of float pairs (range checks are the config's)."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(f"Expected intensity_ranges as [[lo, hi], ...]. Got {value!r} instead.")
    out = []
    for pair in value:
        if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise ConfigError(f"Expected each intensity range as [lo, hi]. Got {pair!r} instead.")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in pair):
            raise ConfigError(f"Expected numbers in each intensity range. Got {pair!r} instead.")
        out.append((float(pair[0]), float(pair[1])))
    return tuple(out)


def auto_ranges(num_classes: int, modality: str) -> np.ndarray:
    """Index-based ranges for schemas without a name table: background as the modality's, then one
    band of width 0.16 per class, centres evenly spaced over [0.35, 0.9] in class order."""
    out = np.empty((num_classes, 2))
    out[0] = RANGES[modality][BACKGROUND]
    centres = np.linspace(0.35, 0.9, max(num_classes - 1, 1))
    out[1:, 0] = centres[: num_classes - 1] - 0.08
    out[1:, 1] = np.minimum(centres[: num_classes - 1] + 0.08, 1.0)
    return out


def intensity_ranges_for(schema: LabelSchema, modality: str) -> tuple[tuple[float, float], ...]:
    """The documented ranges (:data:`RANGES`) for ``schema``'s classes: blood pools and myocardium by
    exact class name, any other class 'other'. Put them in a config's ``intensity_ranges``."""
    _check(modality in MODALITIES, f"Expected a modality in {MODALITIES}. Got {modality!r} instead.")
    table = RANGES[modality]
    kinds = [BACKGROUND] + [
        "blood" if n in BLOOD else "muscle" if n in MUSCLE else "other" for n in schema.names
    ]
    return tuple(table[k] for k in kinds)


@dataclass(frozen=True)
class RenderParams:
    """Every value one rendering depends on (random draws and fixed settings), for ``meta/``."""

    intensities: tuple[float, ...]  # per class index, background first
    strength: float
    weights_a: tuple[float, ...]  # unit-norm mixing weights over the noise bank
    weights_b: tuple[float, ...]
    modality: str
    blur_sigma: float
    grain_sigma: float
    noise_seed: int

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RenderParams:
        data = dict(parse_mapping(data, "render params"))
        reject_unknown_keys(data, set(cls.__dataclass_fields__), "render params")
        for key in ("intensities", "weights_a", "weights_b"):
            data[key] = tuple(float(v) for v in data[key])
        return cls(**data)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v) + 1e-12)


def params_from_style(z: np.ndarray, num_classes: int, config: RenderConfig) -> RenderParams:
    """The render parameters a style vector encodes (see the module docstring)."""
    z = np.asarray(z, np.float64)
    _check(z.shape == (config.style_dim,), f"Expected a style of shape ({config.style_dim},). Got {z.shape}.")
    u = ndtr(z[: config.intensity_slots + 1])
    ranges = config.ranges(num_classes)
    intensities = ranges[:, 0] + u[:num_classes] * (ranges[:, 1] - ranges[:, 0])
    strength = config.noise_min + u[-1] * (config.noise_max - config.noise_min)
    m, start = config.noise_fields, config.intensity_slots + 1
    return RenderParams(
        intensities=tuple(float(v) for v in intensities),
        strength=float(strength),
        weights_a=tuple(float(v) for v in _unit(z[start : start + m])),
        weights_b=tuple(float(v) for v in _unit(z[start + m :])),
        modality=config.modality,
        blur_sigma=config.blur_sigma,
        grain_sigma=config.grain_sigma,
        noise_seed=config.noise_seed,
    )


def sample_render_params(
    rng: np.random.Generator, schema: LabelSchema, config: RenderConfig | None = None
) -> RenderParams:
    """Draw one rendering's parameters: a standard normal style from ``rng``, decoded."""
    config = config or RenderConfig()
    return params_from_style(rng.standard_normal(config.style_dim), schema.num_classes, config)


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalised 1D Gaussian taps, radius ceil(3 sigma); [1] for sigma 0."""
    if sigma <= 0:
        return np.ones(1)
    radius = math.ceil(3 * sigma)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of the last two axes, mirror padding without the edge (torch 'reflect')."""
    k = gaussian_kernel(sigma)
    r = len(k) // 2
    if r == 0:
        return image.copy()
    _check(
        r < min(image.shape[-2:]),
        f"Expected an image larger than the blur radius {r}. Got {image.shape[-2:]} instead.",
    )
    out = image.astype(np.float64)
    for axis in (-2, -1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (r, r)
        padded = np.pad(out, pad, mode="reflect")
        n = out.shape[axis]
        out = sum(w * np.take(padded, np.arange(i, i + n), axis=axis) for i, w in enumerate(k))
    return out


@lru_cache(maxsize=8)
def noise_bank(seed: int, fields: int, shape: tuple[int, int], grain_sigma: float) -> np.ndarray:
    """(fields, H, W) float32 smooth Gaussian fields, each of mean 0 and variance 1 (read-only)."""
    rng = seeding.rng(seed, seeding.NOISE_BANK)
    bank = blur(rng.standard_normal((fields, *shape)), grain_sigma)
    bank = (bank - bank.mean(axis=(1, 2), keepdims=True)) / bank.std(axis=(1, 2), keepdims=True)
    bank = bank.astype(np.float32)
    bank.setflags(write=False)
    return bank


def render(labels: np.ndarray, params: RenderParams) -> np.ndarray:
    """(H, W) class indices -> (H, W) float32 pseudo-image in [0, 1]."""
    labels = np.asarray(labels)
    k = len(params.intensities)
    if labels.ndim != 2 or labels.dtype.kind not in "ui" or (labels.size and labels.max() >= k):
        raise ConfigError(
            f"Expected an (H, W) map of class indices below {k}. Got {labels.shape} {labels.dtype} "
            f"with maximum {labels.max() if labels.size else None} instead."
        )
    base = blur(np.asarray(params.intensities)[labels], params.blur_sigma)
    bank = noise_bank(params.noise_seed, len(params.weights_a), labels.shape, params.grain_sigma)
    a = np.tensordot(np.asarray(params.weights_a), bank, axes=1)
    if params.modality == "echo":
        b = np.tensordot(np.asarray(params.weights_b), bank, axes=1)
        rayleigh = np.sqrt((a**2 + b**2) / 2)
        image = base * (1 + params.strength * (rayleigh / RAYLEIGH_MEAN - 1))
        image = image * sector_mask(labels.shape)
    else:
        image = base + GAUSSIAN_STD * params.strength * a
    return np.clip(image, 0, 1).astype(np.float32)


class PseudoRenderer(nn.Module):
    """(one-hot labels (N, K, S, S), style (N, style_dim)) -> pseudo-images (N, 1, S, S) in [-1, 1].

    No parameters: its constants (ranges, kernel, noise bank, sector) are non-persistent buffers, so
    checkpoints stay small and exports embed them.
    """

    def __init__(self, config: RenderConfig, num_classes: int, image_size: int) -> None:
        super().__init__()
        self.config = config
        ranges = torch.from_numpy(config.ranges(num_classes)).float()
        self.register_buffer("lo", ranges[:, 0].view(1, -1, 1, 1), persistent=False)
        self.register_buffer("span", (ranges[:, 1] - ranges[:, 0]).view(1, -1, 1, 1), persistent=False)
        kernel = torch.from_numpy(gaussian_kernel(config.blur_sigma)).float()
        _check(
            len(kernel) // 2 < image_size,
            f"Expected an image size above the blur radius {len(kernel) // 2}. Got {image_size} instead.",
        )
        self.register_buffer("kernel", kernel, persistent=False)
        shape = (image_size, image_size)
        bank = noise_bank(config.noise_seed, config.noise_fields, shape, config.grain_sigma)
        self.register_buffer("bank", torch.from_numpy(bank.reshape(len(bank), -1).copy()), persistent=False)
        sector = sector_mask(shape) if config.sector else np.ones(shape, bool)
        self.register_buffer(
            "sector", torch.from_numpy(sector.astype(np.float32))[None, None], persistent=False
        )
        self.num_classes, self.image_size = num_classes, image_size

    def blur(self, x: torch.Tensor) -> torch.Tensor:
        r = len(self.kernel) // 2
        if r == 0:
            return x
        x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), self.kernel.view(1, 1, -1, 1))
        return F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), self.kernel.view(1, 1, 1, -1))

    def mix(self, w: torch.Tensor) -> torch.Tensor:
        """Unit-normalised weights (N, M) over the bank -> fields (N, 1, S, S)."""
        w = w / (w.norm(dim=1, keepdim=True) + 1e-12)
        return (w @ self.bank).unflatten(1, (1, self.image_size, self.image_size))

    def forward(self, labels: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        cfg, k = self.config, self.num_classes
        u = 0.5 * (1 + torch.erf(z[:, : cfg.intensity_slots + 1] / math.sqrt(2)))
        intensities = self.lo + u[:, :k, None, None] * self.span
        base = self.blur((labels * intensities).sum(dim=1, keepdim=True))
        strength = (cfg.noise_min + u[:, -1] * (cfg.noise_max - cfg.noise_min)).view(-1, 1, 1, 1)
        m, start = cfg.noise_fields, cfg.intensity_slots + 1
        a = self.mix(z[:, start : start + m])
        if cfg.modality == "echo":
            b = self.mix(z[:, start + m : start + 2 * m])
            rayleigh = torch.sqrt((a * a + b * b) / 2)
            image = base * (1 + strength * (rayleigh / RAYLEIGH_MEAN - 1)) * self.sector
        else:
            image = base + GAUSSIAN_STD * strength * a
        return image.clamp(0, 1) * 2 - 1
