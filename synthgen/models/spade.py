"""SPADE (Park et al. 2019): a generator whose every normalisation is modulated by the label map, a
multi-scale patch discriminator, hinge loss and feature matching, and an optional VAE-style style
encoder so that one label map gives many images.

The generator is a plain function of (one-hot labels, style vector): a linear layer maps the style to
a small feature map, SPADE residual blocks upsample it to the image size. With the style encoder,
training encodes the real image to N(mu, sigma) and the KL term keeps styles near N(0, I), so at
generation a style drawn from N(0, I) gives a plausible, different image. Without it the style is
plain noise, which SPADE generators learn to ignore (one look per map). Normalisation is BatchNorm by
default (folds into the convolutions for export); spectral norm is removed before saving.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from synthgen.errors import ConfigError
from synthgen.models import losses
from synthgen.models.discriminators import MultiScaleDiscriminator
from synthgen.models.gan import Batch, GanModel, GeneratorOutput
from synthgen.models.layers import StyleEncoder, conv, norm_layer, parse_norm
from synthgen.schemas import DataShape, check_range, fields_from_dict


@dataclass(frozen=True)
class SpadeConfig:
    """SPADE architecture and loss weights. Channels at full resolution are ``width``, doubling at each
    halving of the resolution up to ``max_width``; generation starts at image_size / 2**depth."""

    arch: ClassVar[str] = "spade"
    width: int = 16
    max_width: int = 128
    depth: int = 4
    hidden: int = 32  # channels of each SPADE block's label embedding (capped by the block's width)
    style_dim: int = 32
    style_encoder: bool = True
    spectral_norm: bool = True
    norm: str = "batch"
    disc_width: int = 32
    disc_layers: int = 3
    disc_scales: int = 2
    lambda_fm: float = 10.0
    lambda_kld: float = 0.05
    lambda_l1: float = 0.0  # L1 to the real image (meaningful with the style encoder)

    def __post_init__(self) -> None:
        for name, lo in (("width", 1), ("max_width", 1), ("depth", 0), ("hidden", 1), ("style_dim", 1)):
            check_range(getattr(self, name), f"SPADE {name}", lo)
        for name in ("disc_width", "disc_layers", "disc_scales"):
            check_range(getattr(self, name), f"SPADE {name}", 1)
        for name in ("lambda_fm", "lambda_kld", "lambda_l1"):
            check_range(getattr(self, name), f"SPADE {name}", 0.0)
        parse_norm(self.norm, "the SPADE normalisation")

    def channels(self, stage: int) -> int:
        """Channels of generator stage ``stage`` (0 = lowest resolution)."""
        return min(self.width * 2 ** (self.depth - stage), self.max_width)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch} | {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: Any) -> SpadeConfig:
        return cls(**fields_from_dict(cls, data, "the SPADE config", skip=("arch",)))


class Spade(nn.Module):
    """Parameter-free normalisation, then a per-pixel scale and shift predicted from the label map."""

    def __init__(self, channels: int, num_classes: int, hidden: int, norm: str) -> None:
        super().__init__()
        self.norm = norm_layer(norm, channels, affine=False)
        self.embed = nn.Sequential(conv(num_classes, hidden), nn.ReLU())
        self.gamma_beta = conv(hidden, 2 * channels)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``labels`` are one-hot at the resolution of ``x``."""
        gamma, beta = self.gamma_beta(self.embed(labels)).chunk(2, dim=1)
        return self.norm(x) * (1 + gamma) + beta


class SpadeResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, num_classes: int, cfg: SpadeConfig) -> None:
        super().__init__()
        c_mid = min(c_in, c_out)
        hidden = min(cfg.hidden, max(c_in, c_out))
        sn = cfg.spectral_norm
        self.norm_0 = Spade(c_in, num_classes, hidden, cfg.norm)
        self.conv_0 = conv(c_in, c_mid, sn=sn)
        self.norm_1 = Spade(c_mid, num_classes, hidden, cfg.norm)
        self.conv_1 = conv(c_mid, c_out, sn=sn)
        self.learned_shortcut = c_in != c_out
        if self.learned_shortcut:
            self.norm_s = Spade(c_in, num_classes, hidden, cfg.norm)
            self.conv_s = conv(c_in, c_out, 1, sn=sn)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        skip = self.conv_s(self.norm_s(x, labels)) if self.learned_shortcut else x
        h = self.conv_0(F.leaky_relu(self.norm_0(x, labels), 0.2))
        h = self.conv_1(F.leaky_relu(self.norm_1(h, labels), 0.2))
        return skip + h


class SpadeGenerator(nn.Module):
    """(one-hot labels (N, K, S, S), style (N, style_dim)) -> images (N, C, S, S) in [-1, 1]."""

    def __init__(self, cfg: SpadeConfig, shape: DataShape) -> None:
        super().__init__()
        if shape.image_size % 2**cfg.depth:
            raise ConfigError(
                f"Expected an image size divisible by 2**depth = {2**cfg.depth} (SPADE depth {cfg.depth}). "
                f"Got {shape.image_size} instead: change the depth or the image size."
            )
        self.start = shape.image_size // 2**cfg.depth
        self.start_channels = cfg.channels(0)
        self.fc = nn.Linear(cfg.style_dim, self.start_channels * self.start**2)
        self.blocks = nn.ModuleList(
            SpadeResBlock(cfg.channels(max(i - 1, 0)), cfg.channels(i), shape.num_classes, cfg)
            for i in range(cfg.depth + 1)
        )
        self.out = conv(cfg.channels(cfg.depth), shape.channels)

    def forward(self, labels: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        # static shapes except the batch axis (ONNX export with a dynamic batch)
        x = self.fc(z).unflatten(1, (self.start_channels, self.start, self.start))
        for i, block in enumerate(self.blocks):
            size = self.start * 2**i
            if i:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = block(x, F.interpolate(labels, size=(size, size), mode="nearest"))
        return torch.tanh(self.out(F.leaky_relu(x, 0.2)))


class SpadeGan(GanModel):
    arch = "spade"

    def __init__(self, cfg: SpadeConfig, shape: DataShape) -> None:
        super().__init__(cfg, shape)
        self.cfg: SpadeConfig = cfg
        self.generator = SpadeGenerator(cfg, shape)
        self.encoder = (
            StyleEncoder(
                shape.channels, cfg.width, cfg.max_width, cfg.depth, cfg.style_dim, sn=cfg.spectral_norm
            )
            if cfg.style_encoder
            else None
        )
        self.discriminator = MultiScaleDiscriminator(
            shape.num_classes + shape.channels,
            cfg.disc_width,
            cfg.disc_layers,
            cfg.disc_scales,
            sn=cfg.spectral_norm,
        )

    @property
    def style_dim(self) -> int:
        return self.cfg.style_dim

    def g_parameters(self) -> list[nn.Parameter]:
        params = list(self.generator.parameters())
        return params + (list(self.encoder.parameters()) if self.encoder is not None else [])

    def d_parameters(self) -> list[nn.Parameter]:
        return list(self.discriminator.parameters())

    def generator_step(self, batch: Batch, noise: torch.Generator) -> GeneratorOutput:
        n, dev = batch.images.shape[0], batch.images.device
        eps = torch.randn(n, self.cfg.style_dim, generator=noise, device=noise.device).to(dev)
        logs: dict[str, float] = {}
        loss = batch.images.new_zeros(())
        if self.encoder is not None:
            mu, logvar = self.encoder(batch.images)
            z = mu + eps * torch.exp(0.5 * logvar)
            kld = losses.kl_normal(mu, logvar)
            loss = loss + self.cfg.lambda_kld * kld
            logs["g_kld"] = kld.item()
        else:
            z = eps
        fake = self.generator(batch.labels, z)
        pred_fake = self.discriminator(batch.labels, fake)
        with torch.no_grad():
            pred_real = self.discriminator(batch.labels, batch.images)
        g_gan = losses.hinge_g(pred_fake)
        fm = losses.feature_matching(pred_real, pred_fake)
        loss = loss + g_gan + self.cfg.lambda_fm * fm
        logs |= {"g_gan": g_gan.item(), "g_fm": fm.item()}
        if self.cfg.lambda_l1:
            l1 = F.l1_loss(fake.float(), batch.images.float())
            loss = loss + self.cfg.lambda_l1 * l1
            logs["g_l1"] = l1.item()
        return GeneratorOutput(loss, logs, fake)

    def discriminator_step(self, batch: Batch, fakes: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        pred_fake = self.discriminator(batch.labels, fakes.detach())
        pred_real = self.discriminator(batch.labels, batch.images)
        loss = losses.hinge_d(pred_real, pred_fake)
        return loss, {"d_hinge": loss.item()}
