"""pix2pix (Isola et al. 2017), as Habijan et al. used it on whole-heart CT: a U-Net generator, a
conditional PatchGAN discriminator, least-squares GAN loss plus L1 to the real image.

The generator is a plain function of the one-hot label map. It has no dropout (the original uses
dropout as its only noise, drawn from the global RNG, and its authors report that the output barely
varies with it), so it gives one image per label map; use SPADE with a style encoder for several.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from synthgen.errors import ConfigError
from synthgen.models import losses
from synthgen.models.discriminators import PatchDiscriminator
from synthgen.models.gan import Batch, GanModel, GeneratorOutput
from synthgen.models.layers import norm_layer, parse_norm
from synthgen.schemas import DataShape, check_range, fields_from_dict


@dataclass(frozen=True)
class Pix2PixConfig:
    """U-Net with ``depth`` stride-2 levels (``width`` channels at the first, doubling up to
    ``max_width``), a ``disc_layers``-layer PatchGAN, and the L1 weight."""

    arch: ClassVar[str] = "pix2pix"
    width: int = 32
    max_width: int = 256
    depth: int = 7
    norm: str = "batch"
    spectral_norm: bool = False
    disc_width: int = 32
    disc_layers: int = 3
    lambda_l1: float = 100.0

    def __post_init__(self) -> None:
        for name in ("width", "max_width", "depth", "disc_width", "disc_layers"):
            check_range(getattr(self, name), f"pix2pix {name}", 1)
        check_range(self.lambda_l1, "pix2pix lambda_l1", 0.0)
        parse_norm(self.norm, "the pix2pix normalisation")

    def channels(self, level: int) -> int:
        return min(self.width * 2**level, self.max_width)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch} | {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: Any) -> Pix2PixConfig:
        return cls(**fields_from_dict(cls, data, "the pix2pix config", skip=("arch",)))


class UNetGenerator(nn.Module):
    """one-hot labels (N, K, S, S) -> images (N, C, S, S) in [-1, 1]; skip connections at every level."""

    def __init__(self, cfg: Pix2PixConfig, shape: DataShape) -> None:
        super().__init__()
        if shape.image_size % 2**cfg.depth:
            raise ConfigError(
                f"Expected an image size divisible by 2**depth = {2**cfg.depth} (pix2pix depth {cfg.depth}). "
                f"Got {shape.image_size} instead: change the depth or the image size."
            )
        d = cfg.depth
        down: list[nn.Module] = []
        for i in range(d):
            c_in = shape.num_classes if i == 0 else cfg.channels(i - 1)
            layers: list[nn.Module] = [] if i == 0 else [nn.LeakyReLU(0.2)]
            layers.append(nn.Conv2d(c_in, cfg.channels(i), 4, 2, 1))
            if 0 < i < d - 1:
                layers.append(norm_layer(cfg.norm, cfg.channels(i)))
            down.append(nn.Sequential(*layers))
        up: list[nn.Module] = []
        for i in reversed(range(d)):
            c_in = cfg.channels(i) if i == d - 1 else 2 * cfg.channels(i)
            c_out = shape.channels if i == 0 else cfg.channels(i - 1)
            layers = [nn.ReLU(), nn.ConvTranspose2d(c_in, c_out, 4, 2, 1)]
            layers.append(nn.Tanh() if i == 0 else norm_layer(cfg.norm, c_out))
            up.append(nn.Sequential(*layers))
        self.down = nn.ModuleList(down)
        self.up = nn.ModuleList(up)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        skips = []
        x = labels
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        skips.pop()  # the innermost output feeds the first up layer directly
        for layer in self.up:
            x = layer(x)
            if skips:
                x = torch.cat([x, skips.pop()], dim=1)
        return x


class Pix2PixGan(GanModel):
    arch = "pix2pix"

    def __init__(self, cfg: Pix2PixConfig, shape: DataShape) -> None:
        super().__init__(cfg, shape)
        self.cfg: Pix2PixConfig = cfg
        self.generator = UNetGenerator(cfg, shape)
        self.discriminator = PatchDiscriminator(
            shape.num_classes + shape.channels, cfg.disc_width, cfg.disc_layers, sn=cfg.spectral_norm
        )

    def g_parameters(self) -> list[nn.Parameter]:
        return list(self.generator.parameters())

    def d_parameters(self) -> list[nn.Parameter]:
        return list(self.discriminator.parameters())

    def generator_step(self, batch: Batch, noise: torch.Generator) -> GeneratorOutput:
        fake = self.generator(batch.labels)
        g_gan = losses.lsgan_g([self.discriminator(batch.labels, fake)])
        l1 = F.l1_loss(fake.float(), batch.images.float())
        loss = g_gan + self.cfg.lambda_l1 * l1
        return GeneratorOutput(loss, {"g_gan": g_gan.item(), "g_l1": l1.item()}, fake)

    def discriminator_step(self, batch: Batch, fakes: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        pred_fake = self.discriminator(batch.labels, fakes.detach())
        pred_real = self.discriminator(batch.labels, batch.images)
        loss = losses.lsgan_d([pred_real], [pred_fake])
        return loss, {"d_lsgan": loss.item()}
