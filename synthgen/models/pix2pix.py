"""pix2pix (Isola et al. 2017), as Habijan et al. used it on whole-heart CT: a U-Net generator, a
conditional PatchGAN discriminator, least-squares GAN loss plus L1 to the real image.

The generator is a plain function of the one-hot label map. It has no dropout (the original uses
dropout as its only noise, drawn from the global RNG, and its authors report that the output barely
varies with it), so by default it gives one image per label map.

With ``style_dim`` > 0 it also takes a style vector, broadcast over the image and stacked with the
label channels at the input, and trains as BicycleGAN does (Zhu et al. 2017), at the cost of plain
pix2pix: each batch is split in two halves. The first half is reconstructed from the style a style
encoder reads from its real image (cVAE-GAN: L1 to the real image, KL of the encoded style to
N(0, I)); the second half is generated from styles drawn from N(0, I), and the generator must make
images whose encoded style gives that draw back (cLR-GAN: L1 on the style, the encoder frozen for this
term so that the two cannot agree on a hidden code). The discriminator sees both halves. At generation
a style from N(0, I) then gives a plausible, different image of the same label map.

pix2pixHD's two additions (Wang et al. 2018) are options: ``disc_scales`` > 1 judges the image at
that many scales (the k-th discriminator on the input average-pooled k times, so the coarse ones see
the whole heart and the fine one the speckle), and ``lambda_fm`` > 0 adds feature matching, the L1
between the discriminators' intermediate features on the real and the generated image, which steadies
the adversarial game and pulls the image statistics (texture, contrast) towards the real ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from synthgen.errors import ConfigError
from synthgen.models import losses
from synthgen.models.discriminators import MultiScaleDiscriminator, PatchDiscriminator
from synthgen.models.gan import Batch, GanModel, GeneratorOutput
from synthgen.models.layers import StyleEncoder, norm_layer, parse_norm
from synthgen.schemas import DataShape, check_range, fields_from_dict


@dataclass(frozen=True)
class Pix2PixConfig:
    """U-Net with ``depth`` stride-2 levels (``width`` channels at the first, doubling up to
    ``max_width``), ``disc_scales`` ``disc_layers``-layer PatchGANs, and the loss weights (L1, feature
    matching); ``style_dim`` > 0 adds a style input, a style encoder and their loss weights (KL, style
    recovery)."""

    arch: ClassVar[str] = "pix2pix"
    width: int = 32
    max_width: int = 256
    depth: int = 7
    norm: str = "batch"
    spectral_norm: bool = False
    disc_width: int = 32
    disc_layers: int = 3
    disc_scales: int = 1
    lambda_l1: float = 100.0
    lambda_fm: float = 0.0
    style_dim: int = 0
    lambda_kld: float = 0.1
    lambda_latent: float = 5.0

    def __post_init__(self) -> None:
        for name in ("width", "max_width", "depth", "disc_width", "disc_layers", "disc_scales"):
            check_range(getattr(self, name), f"pix2pix {name}", 1)
        check_range(self.style_dim, "pix2pix style_dim", 0)
        for name in ("lambda_l1", "lambda_fm", "lambda_kld", "lambda_latent"):
            check_range(getattr(self, name), f"pix2pix {name}", 0.0)
        parse_norm(self.norm, "the pix2pix normalisation")

    def channels(self, level: int) -> int:
        return min(self.width * 2**level, self.max_width)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch} | {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: Any) -> Pix2PixConfig:
        return cls(**fields_from_dict(cls, data, "the pix2pix config", skip=("arch",)))


class UNetGenerator(nn.Module):
    """one-hot labels (N, K, S, S) [and styles (N, style_dim)] -> images (N, C, S, S) in [-1, 1]; skip
    connections at every level; a style is broadcast over the image and stacked with the labels."""

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
            c_in = shape.num_classes + cfg.style_dim if i == 0 else cfg.channels(i - 1)
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

    def forward(self, labels: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        skips = []
        x = labels
        if z is not None:
            x = torch.cat([labels, z[:, :, None, None].expand(-1, -1, *labels.shape[2:])], dim=1)
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
        self.encoder = (
            StyleEncoder(shape.channels, cfg.width, cfg.max_width, 5, cfg.style_dim)
            if cfg.style_dim
            else None
        )
        d_in = shape.num_classes + shape.channels
        self.discriminator = (  # one scale keeps the plain PatchGAN (and its checkpoints' names)
            PatchDiscriminator(d_in, cfg.disc_width, cfg.disc_layers, sn=cfg.spectral_norm)
            if cfg.disc_scales == 1
            else MultiScaleDiscriminator(
                d_in, cfg.disc_width, cfg.disc_layers, cfg.disc_scales, sn=cfg.spectral_norm
            )
        )

    @property
    def style_dim(self) -> int:
        return self.cfg.style_dim

    def g_parameters(self) -> list[nn.Parameter]:
        params = list(self.generator.parameters())
        return params + (list(self.encoder.parameters()) if self.encoder is not None else [])

    def d_parameters(self) -> list[nn.Parameter]:
        return list(self.discriminator.parameters())

    def judge(self, labels: torch.Tensor, images: torch.Tensor) -> list[list[torch.Tensor]]:
        """The discriminators' features, one list per scale (patch predictions last)."""
        out = self.discriminator(labels, images)
        return [out] if self.cfg.disc_scales == 1 else out

    def adversarial(self, batch: Batch, fake: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The generator's GAN loss on ``fake``, plus feature matching against the real images, and
        their logs."""
        pred_fake = self.judge(batch.labels, fake)
        loss = losses.lsgan_g(pred_fake)
        logs = {"g_gan": loss.item()}
        if self.cfg.lambda_fm:
            with torch.no_grad():
                pred_real = self.judge(batch.labels, batch.images)
            fm = losses.feature_matching(pred_real, pred_fake)
            logs["g_fm"] = fm.item()
            loss = loss + self.cfg.lambda_fm * fm
        return loss, logs

    def generator_step(self, batch: Batch, noise: torch.Generator) -> GeneratorOutput:
        if self.encoder is not None:
            return self._styled_generator_step(batch, noise)
        fake = self.generator(batch.labels)
        adversarial, logs = self.adversarial(batch, fake)
        l1 = F.l1_loss(fake.float(), batch.images.float())
        logs["g_l1"] = l1.item()
        return GeneratorOutput(adversarial + self.cfg.lambda_l1 * l1, logs, fake)

    def _styled_generator_step(self, batch: Batch, noise: torch.Generator) -> GeneratorOutput:
        """BicycleGAN's two halves (module docstring)."""
        n, dev = batch.images.shape[0], batch.images.device
        half = n - n // 2  # the larger half: a batch of one is all cVAE
        eps = torch.randn(n, self.cfg.style_dim, generator=noise, device=noise.device).to(dev)
        mu, logvar = self.encoder(batch.images[:half])
        z = torch.cat([mu + eps[:half] * torch.exp(0.5 * logvar), eps[half:]])
        fake = self.generator(batch.labels, z)
        adversarial, logs = self.adversarial(batch, fake)
        l1 = F.l1_loss(fake[:half].float(), batch.images[:half].float())
        kld = losses.kl_normal(mu, logvar)
        loss = adversarial + self.cfg.lambda_l1 * l1 + self.cfg.lambda_kld * kld
        logs |= {"g_l1": l1.item(), "g_kld": kld.item()}
        if half < n:
            frozen = {k: v.detach() for k, v in self.encoder.named_parameters()}
            recovered, _ = torch.func.functional_call(self.encoder, frozen, (fake[half:],))
            latent = F.l1_loss(recovered.float(), eps[half:].float())
            loss = loss + self.cfg.lambda_latent * latent
            logs["g_latent"] = latent.item()
        return GeneratorOutput(loss, logs, fake)

    def discriminator_step(self, batch: Batch, fakes: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        pred_fake = self.judge(batch.labels, fakes.detach())
        pred_real = self.judge(batch.labels, batch.images)
        loss = losses.lsgan_d(pred_real, pred_fake)
        return loss, {"d_lsgan": loss.item()}
