"""Random affine maps (rotation, anisotropic scale, shear, translation) as sample_params then apply.

:func:`sample_affine_params` draws an :class:`AffineParams` from an explicit generator once per sample;
everything after is deterministic. :meth:`AffineParams.matrix` gives the float64 sampling matrix
(output pixel (row, col) -> source position), which :func:`synthgen.kernels.deformation_field` and
:func:`synthgen.kernels.deform_labels` add to the elastic field, so one sample is resampled once.

Conventions (rows point down, columns right, the centre of the image stays fixed): content is scaled
by ``scale_y`` along rows and ``scale_x`` along columns (> 1 enlarges), then sheared (column shift of
``tan(shear)`` per row), then rotated by ``rotation`` degrees (positive turns content
counter-clockwise as displayed), then moved by (``translate_y``, ``translate_x``) pixels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from synthgen.errors import ConfigError
from synthgen.schemas import parse_float, parse_mapping, reject_unknown_keys


@dataclass(frozen=True)
class AffineParams:
    """One drawn affine map; the identity by default. Angles in degrees, translations in pixels."""

    rotation: float = 0.0
    scale_y: float = 1.0
    scale_x: float = 1.0
    shear: float = 0.0
    translate_y: float = 0.0
    translate_x: float = 0.0

    def __post_init__(self) -> None:
        for name in _AFFINE_NAMES:
            value = getattr(self, name)
            if type(value) is not float or not math.isfinite(value):  # a finite float is kept as it is
                object.__setattr__(self, name, parse_float(value, f"affine {name}"))
        if not (self.scale_y > 0 and self.scale_x > 0):
            raise ConfigError(f"Expected positive scales. Got ({self.scale_y}, {self.scale_x}) instead.")
        if not abs(self.shear) < 89:
            raise ConfigError(f"Expected a shear angle in (-89, 89) degrees. Got {self.shear} instead.")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AffineParams:
        data = parse_mapping(data, "affine parameters")
        reject_unknown_keys(data, {f.name for f in fields(cls)}, "affine parameters")
        return cls(**data)

    def matrix(self, shape: tuple[int, int]) -> np.ndarray:
        """(2, 3) float64 ``A`` with source = ``A[:, :2] @ (row, col) + A[:, 2]`` for an image of ``shape``."""
        return _matrices([self], shape)[0]


def _matrices(params: Sequence[AffineParams], shape: tuple[int, int]) -> np.ndarray:
    """(n, 2, 3) sampling matrices of ``params``, formed in one pass (the same arithmetic for one map or
    many: sines and cosines in ``math``, products and inverses stacked in NumPy)."""
    n = len(params)
    rot, shear, scale = np.zeros((n, 2, 2)), np.zeros((n, 2, 2)), np.zeros((n, 2, 2))
    for k, p in enumerate(params):
        theta = math.radians(p.rotation)
        rot[k] = ((math.cos(theta), -math.sin(theta)), (math.sin(theta), math.cos(theta)))
        shear[k] = ((1.0, 0.0), (math.tan(math.radians(p.shear)), 1.0))
        scale[k, 0, 0], scale[k, 1, 1] = p.scale_y, p.scale_x
    inverse = np.linalg.inv(rot @ shear @ scale)
    centre = np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2])
    moved = centre + np.array([(p.translate_y, p.translate_x) for p in params]).reshape(n, 2)
    offset = centre - (inverse @ moved[:, :, None])[:, :, 0]
    return np.ascontiguousarray(np.concatenate([inverse, offset[:, :, None]], axis=2))


_AFFINE_NAMES = tuple(f.name for f in fields(AffineParams))


@dataclass(frozen=True)
class AffineRanges:
    """How far random affine maps reach; each parameter is drawn uniformly (scales log-uniformly)."""

    max_rotation: float = 10.0  # degrees either way
    min_scale: float = 0.9
    max_scale: float = 1.1
    max_anisotropy: float = 0.05  # scale_y / scale_x within [1 / (1 + a), 1 + a]
    max_shear: float = 3.0  # degrees either way
    max_translation: float = 8.0  # pixels either way, per axis

    def __post_init__(self) -> None:
        parse_float(self.max_rotation, "max_rotation", lo=0.0, hi=180.0)
        parse_float(self.min_scale, "min_scale", lo=1e-3, hi=1e3)
        parse_float(self.max_scale, "max_scale", lo=self.min_scale, hi=1e3)
        parse_float(self.max_anisotropy, "max_anisotropy", lo=0.0, hi=10.0)
        parse_float(self.max_shear, "max_shear", lo=0.0, hi=60.0)
        parse_float(self.max_translation, "max_translation", lo=0.0, hi=1e6)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AffineRanges:
        data = parse_mapping(data, "affine ranges")
        reject_unknown_keys(data, {f.name for f in fields(cls)}, "affine ranges")
        return cls(**data)


def sample_affine_params(rng: np.random.Generator, ranges: AffineRanges) -> AffineParams:
    """Draw one :class:`AffineParams` from ``rng`` (six draws, in a fixed order)."""
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(f"Expected a numpy.random.Generator. Got {type(rng).__name__} instead.")
    rotation, log_scale, log_aspect, shear, ty, tx = rng.uniform(-1.0, 1.0, size=6)
    lo, hi = math.log(ranges.min_scale), math.log(ranges.max_scale)
    scale = math.exp(lo + (hi - lo) * (log_scale + 1) / 2)
    aspect = math.exp(log_aspect * math.log1p(ranges.max_anisotropy))
    return AffineParams(
        rotation=float(rotation * ranges.max_rotation),
        scale_y=scale * math.sqrt(aspect),
        scale_x=scale / math.sqrt(aspect),
        shear=float(shear * ranges.max_shear),
        translate_y=float(ty * ranges.max_translation),
        translate_x=float(tx * ranges.max_translation),
    )


def affine_matrices(affine: Any, n: int, shape: tuple[int, int]) -> np.ndarray:
    """(n, 2, 3) float64 sampling matrices from None (identity), n AffineParams or an (n, 2, 3) array."""
    if affine is None:
        return np.ascontiguousarray(np.broadcast_to(AffineParams().matrix(shape), (n, 2, 3)))
    if isinstance(affine, np.ndarray):
        if affine.shape != (n, 2, 3) or not np.isfinite(affine).all():
            raise ConfigError(
                f"Expected finite affine matrices of shape {(n, 2, 3)}. Got {affine.shape} instead."
            )
        return np.ascontiguousarray(affine, dtype=np.float64)
    params = list(affine)
    if len(params) != n or not all(isinstance(p, AffineParams) for p in params):
        raise ConfigError(f"Expected {n} AffineParams, one per sample. Got {len(params)} items instead.")
    return _matrices(params, shape)


def affine_field(params: AffineParams, shape: tuple[int, int]) -> np.ndarray:
    """The exact (2, H, W) float32 displacement of the affine map alone (source minus output position)."""
    a = params.matrix(shape)
    rows, cols = np.meshgrid(np.arange(shape[0], dtype=np.float64), np.arange(shape[1]), indexing="ij")
    src_rows = a[0, 0] * rows + a[0, 1] * cols + a[0, 2]
    src_cols = a[1, 0] * rows + a[1, 1] * cols + a[1, 2]
    return np.stack([src_rows - rows, src_cols - cols]).astype(np.float32)
