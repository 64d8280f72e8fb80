"""What a GAN architecture provides to the shared training loop (:mod:`synthgen.trainers.gan`).

An architecture is a :class:`GanModel`: it owns its networks and losses, and exposes two parameter
groups (generator side, discriminator side) and two steps. The loop owns everything else: data,
optimisers, schedules, mixed precision, logging, sample grids and checkpoints. A new architecture
(CycleGAN, say) subclasses :class:`GanModel`, gives a frozen config dataclass with ``arch``,
``to_dict`` and ``from_dict``, and registers both in :mod:`synthgen.models.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from synthgen.models.layers import plain_state_dict
from synthgen.schemas import DataShape


class ModelConfig(Protocol):
    """The architecture arguments: enough to rebuild the networks (stored in every checkpoint)."""

    arch: ClassVar[str]

    def to_dict(self) -> dict[str, Any]: ...


@dataclass
class Batch:
    """One training batch: one-hot labels (N, K, H, W) and images (N, C, H, W) in [-1, 1]."""

    labels: torch.Tensor
    images: torch.Tensor


@dataclass
class GeneratorOutput:
    loss: torch.Tensor
    logs: dict[str, float]
    fakes: Any  # whatever discriminator_step needs (detached there)


class GanModel(nn.Module):
    """Base class of the trainable GANs. Subclasses set ``generator`` and implement the two steps."""

    arch: ClassVar[str]
    generator: nn.Module

    def __init__(self, cfg: ModelConfig, shape: DataShape) -> None:
        super().__init__()
        self.cfg = cfg
        self.shape = shape

    @property
    def style_dim(self) -> int:
        """Length of the style/noise vector the generator takes; 0 when it takes none."""
        return 0

    def g_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def d_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def generator_step(self, batch: Batch, noise: torch.Generator) -> GeneratorOutput:
        """Generator-side losses for one batch (the loop back-propagates and steps)."""
        raise NotImplementedError

    def discriminator_step(self, batch: Batch, fakes: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """Discriminator-side loss for one batch, given the generator step's ``fakes``."""
        raise NotImplementedError

    def generate(self, labels: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """Images in [-1, 1] from one-hot labels and (if ``style_dim``) style vectors."""
        return self.generator(labels, z) if self.style_dim else self.generator(labels)

    def inference_generator(self) -> nn.Module:
        """The generator as it is saved and exported: a copy in eval mode, spectral norm folded in."""
        from synthgen.models.registry import build_generator

        plain = build_generator(self.cfg, self.shape)
        plain.load_state_dict(plain_state_dict(self.generator))
        return plain.to(next(self.generator.parameters()).device).eval()
