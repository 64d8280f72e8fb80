"""The randomised generator (``--generator randomised``) and the appearance stage, on the CPU.

Both run :func:`synthgen.kernels.randomise.appearance` on label maps given as schema values: the
randomised generator draws every image from its label map alone (``texture``); the appearance stage
restyles a trained generator's images. Each sample's draw depends only on its key
(:func:`synthgen.seeding.appearance_keys`), and its parameters come back to be stored under ``meta/``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from synthgen.errors import LabelValueError
from synthgen.kernels import appearance, appearance_params_size
from synthgen.schemas import AppearanceConfig, LabelSchema, label_lut


class Restyler:
    """Appearance draws for one label schema and one :class:`AppearanceConfig`."""

    def __init__(self, schema: LabelSchema, config: AppearanceConfig) -> None:
        self.schema = schema
        self.config = config
        self._lut = label_lut(schema)
        self._ranges = np.array(config.ranges(), np.float64)
        # schema values 0, 1, ..., K - 1 in order are their own class indices: no lookup needed
        self._identity = bool((self._lut[: schema.num_classes] == np.arange(schema.num_classes)).all())

    @property
    def params_size(self) -> int:
        """Length of one sample's parameter vector."""
        return appearance_params_size(self.schema.num_classes)

    def __call__(
        self, labels: np.ndarray, keys: np.ndarray, images: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(images (N, C, H, W) float32 in [-1, 1], parameters (N, params_size) float32) for label maps
        (N, H, W) uint8 (schema values) and ``keys`` (N,) uint64; ``images`` (N, C, H, W) in [-1, 1]
        to restyle, unless the config draws textures. Every channel gets the same draw."""
        if self._identity and labels.dtype == np.uint8:
            indices = labels  # the kernel refuses values past the last class
            if labels.size and labels.max() >= self.schema.num_classes:
                self.schema.check_labels(labels, "the label maps given to the appearance stage")
        else:
            indices = self._lut[labels]
            if labels.size and indices.max() == 255:
                self.schema.check_labels(labels, "the label maps given to the appearance stage")
        cfg = self.config
        kwargs = {
            "num_classes": self.schema.num_classes,
            "modality": cfg.modality,
            "texture": cfg.texture,
            "sector": cfg.uses_sector,
        }
        if cfg.texture:
            signed, params = appearance(indices, keys, self._ranges, signed=True, **kwargs)
            return signed[:, None], params
        if images is None or images.ndim != 4 or images.shape[0] != len(labels):
            raise LabelValueError(f"Expected images (N, C, H, W) for {len(labels)} label maps to restyle.")
        out = np.empty(images.shape, np.float32)
        params = np.empty((len(labels), self.params_size), np.float32)
        for c in range(images.shape[1]):
            base = (np.clip(images[:, c], -1, 1) + 1) / 2
            out[:, c], params = appearance(indices, keys, self._ranges, base=base, signed=True, **kwargs)
        return out, params


class RandomisedGenerator:
    """The randomised generator: a :class:`Restyler` that draws textures, with the attributes the
    build reads from a generator."""

    backend = "randomised"
    device = "cpu"
    style_dim = 0
    reason = "images drawn from label maps (no trained network)"

    def __init__(self, schema: LabelSchema, config: AppearanceConfig) -> None:
        if not config.texture:
            config = replace(config, texture=True)
        self.restyler = Restyler(schema, config)

    def __repr__(self) -> str:
        return f"<RandomisedGenerator modality={self.restyler.config.modality!r}>"
