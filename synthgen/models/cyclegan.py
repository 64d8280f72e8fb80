"""CycleGAN (Zhu et al. 2017) for the unpaired route of Gilbert et al.: crude pseudo-images rendered from
label maps (:mod:`synthgen.models.pseudo_render`) are translated into the real domain.

Two ResNet translators (pseudo -> real, the one used for inference; real -> pseudo) and two PatchGAN
discriminators (one per domain, unconditional), least-squares GAN loss, cycle-consistency L1 and
identity L1 (weighted ``lambda_identity * lambda_cycle``, as in the original). Training is unpaired:
no loss compares a label map with the real image drawn with it, and the real images of a batch are
shuffled against its label maps to make that explicit. (The original's history pool of 50 fakes
is left out: it is hidden state, and exact resume would have to checkpoint it.)

The generator saved and exported is :class:`CycleGenerator`: renderer then translator, a pure
function of (one-hot labels, style). The style (``RenderConfig.style_dim`` standard normal values)
fixes the class intensities, the noise strength and the noise pattern of the pseudo-image, so one
label map gives many images and the ONNX graph holds no random op.

Anatomy guard: CycleGAN may move structures (nothing ties the translated image to its label map
but the cycle). With ``anatomy_segmenter`` (a checkpoint from ``synthgen train-seg`` on the real
store), every generator step also logs ``anatomy_dice``: the frozen segmenter's mean foreground Dice
on the translated images against the label maps they were rendered from (:func:`anatomy_dice`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synthgen.errors import ConfigError
from synthgen.kernels import batch_dice, resize_images, resize_labels
from synthgen.models import losses
from synthgen.models.discriminators import PatchDiscriminator
from synthgen.models.gan import Batch, GanModel, GeneratorOutput
from synthgen.models.layers import norm_layer, parse_norm
from synthgen.models.pseudo_render import PseudoRenderer, RenderConfig, parse_ranges
from synthgen.schemas import DataShape, check_range, fields_from_dict

_RENDER_FIELDS = tuple(f for f in RenderConfig.__dataclass_fields__)


@dataclass(frozen=True)
class CycleGanConfig:
    """Translators: ``width`` channels at full resolution, ``downsamples`` stride-2 levels (doubling),
    ``blocks`` residual blocks. The render fields are :class:`RenderConfig`'s."""

    arch: ClassVar[str] = "cyclegan"
    width: int = 16
    downsamples: int = 2
    blocks: int = 4
    norm: str = "instance"
    spectral_norm: bool = False  # discriminators only
    disc_width: int = 32
    disc_layers: int = 3
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5
    anatomy_segmenter: str = ""  # a train-seg checkpoint folder: log anatomy_dice every step
    modality: str = "echo"
    blur_sigma: float = 1.0
    grain_sigma: float = 0.7
    noise_min: float = 0.3
    noise_max: float = 0.8
    noise_fields: int = 8
    noise_seed: int = 0
    intensity_slots: int = 8
    intensity_ranges: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        for name in ("width", "blocks", "disc_width", "disc_layers"):
            check_range(getattr(self, name), f"CycleGAN {name}", 1)
        check_range(self.downsamples, "CycleGAN downsamples", 0, 5)
        for name in ("lambda_cycle", "lambda_identity"):
            check_range(getattr(self, name), f"CycleGAN {name}", 0.0)
        parse_norm(self.norm, "the CycleGAN normalisation")
        self.render_config()  # validates the render fields

    def render_config(self) -> RenderConfig:
        return RenderConfig(**{k: getattr(self, k) for k in _RENDER_FIELDS})

    @property
    def style_dim(self) -> int:
        return self.render_config().style_dim

    def to_dict(self) -> dict[str, Any]:
        out = {"arch": self.arch} | {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["intensity_ranges"] = [list(r) for r in self.intensity_ranges]
        return out

    @classmethod
    def from_dict(cls, data: Any) -> CycleGanConfig:
        own = ("intensity_ranges", "anatomy_segmenter")
        kwargs = fields_from_dict(cls, data, "the CycleGAN config", skip=("arch", *own))
        if "intensity_ranges" in data:
            kwargs["intensity_ranges"] = parse_ranges(data["intensity_ranges"])
        if "anatomy_segmenter" in data:  # "" (none) is allowed
            if not isinstance(data["anatomy_segmenter"], str):
                raise ConfigError(
                    f"Expected 'anatomy_segmenter' to be a segmenter folder or ''. Got {data['anatomy_segmenter']!r}."
                )
            kwargs["anatomy_segmenter"] = data["anatomy_segmenter"]
        return cls(**kwargs)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            norm_layer(norm, channels),
            nn.ReLU(),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            norm_layer(norm, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Translator(nn.Module):
    """The CycleGAN ResNet generator, images (N, c_in, S, S) -> (N, c_out, S, S) in [-1, 1].
    Upsampling is nearest + 3x3 convolution (no transposed-convolution checkerboard)."""

    def __init__(self, c_in: int, c_out: int, cfg: CycleGanConfig, image_size: int) -> None:
        super().__init__()
        if image_size % 2**cfg.downsamples:
            raise ConfigError(
                f"Expected an image size divisible by 2**downsamples = {2**cfg.downsamples} (CycleGAN). "
                f"Got {image_size} instead: change downsamples or the image size."
            )
        c = cfg.width
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(c_in, c, 7),
            norm_layer(cfg.norm, c),
            nn.ReLU(),
        ]
        for _ in range(cfg.downsamples):
            layers += [nn.Conv2d(c, 2 * c, 3, 2, 1), norm_layer(cfg.norm, 2 * c), nn.ReLU()]
            c *= 2
        layers += [ResidualBlock(c, cfg.norm) for _ in range(cfg.blocks)]
        for _ in range(cfg.downsamples):
            layers += [
                nn.Upsample(scale_factor=2.0, mode="nearest"),
                nn.Conv2d(c, c // 2, 3, 1, 1),
                norm_layer(cfg.norm, c // 2),
                nn.ReLU(),
            ]
            c //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(c, c_out, 7), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class CycleGenerator(nn.Module):
    """(one-hot labels (N, K, S, S), style (N, style_dim)) -> images (N, C, S, S): render, translate."""

    def __init__(self, cfg: CycleGanConfig, shape: DataShape) -> None:
        super().__init__()
        self.render = PseudoRenderer(cfg.render_config(), shape.num_classes, shape.image_size)
        self.translate = Translator(1, shape.channels, cfg, shape.image_size)

    def forward(self, labels: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.translate(self.render(labels, z))


def segment_dice(
    segmenter: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int, size: tuple[int, int]
) -> np.ndarray:
    """(N, K-1) Dice of ``segmenter`` on images in [-1, 1] against class indices (N, S, S), at the
    segmenter's input ``size`` (images bilinear, labels nearest)."""
    x = ((images.detach().float().clamp(-1, 1) + 1) / 2).cpu().numpy()  # segmenters take [0, 1]
    x, y = resize_images(x, tuple(size)), resize_labels(labels.cpu().numpy(), tuple(size))
    with torch.no_grad():
        pred = segmenter(torch.from_numpy(x).to(next(segmenter.parameters()).device)).argmax(1).cpu().numpy()
    return batch_dice(pred, y, num_classes)


def anatomy_dice(
    generator: nn.Module,
    segmenter: nn.Module,
    labels: torch.Tensor,
    styles: torch.Tensor | None = None,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """(K-1,) mean foreground Dice of a frozen ``segmenter`` (input ``size``, default the labels')
    on the images ``generator`` makes from one-hot ``labels`` (N, K, S, S) (and ``styles``, if it
    takes them): how well the generated anatomy still matches its label map."""
    with torch.no_grad():
        images = generator(labels, styles) if styles is not None else generator(labels)
    size = size or tuple(labels.shape[-2:])
    return segment_dice(segmenter, images, labels.argmax(1), labels.shape[1], size).mean(axis=0)


def load_anatomy_segmenter(path: str, shape: DataShape) -> tuple[nn.Module, tuple[int, int]]:
    from synthgen.models.segmenters import load_segmenter

    segmenter, spec = load_segmenter(path)
    if spec.schema.num_classes != shape.num_classes or spec.channels != shape.channels:
        raise ConfigError(
            f"Expected an anatomy segmenter for {shape.num_classes} classes and {shape.channels} channel(s) "
            f"(the training store's). Got {spec.schema.num_classes} classes and {spec.channels} channel(s) "
            f"in {path} instead."
        )
    for p in segmenter.parameters():
        p.requires_grad_(False)
    return segmenter, spec.image_size


class CycleGan(GanModel):
    arch = "cyclegan"

    def __init__(self, cfg: CycleGanConfig, shape: DataShape) -> None:
        super().__init__(cfg, shape)
        self.cfg: CycleGanConfig = cfg
        self.generator = CycleGenerator(cfg, shape)
        self.to_pseudo = Translator(shape.channels, 1, cfg, shape.image_size)
        sn = cfg.spectral_norm
        self.d_real = PatchDiscriminator(shape.channels, cfg.disc_width, cfg.disc_layers, sn=sn)
        self.d_pseudo = PatchDiscriminator(1, cfg.disc_width, cfg.disc_layers, sn=sn)
        # frozen and outside the module tree: not trained, not saved, not re-initialised
        self._segmenter = (
            load_anatomy_segmenter(cfg.anatomy_segmenter, shape) if cfg.anatomy_segmenter else None
        )

    @property
    def style_dim(self) -> int:
        return self.cfg.style_dim

    def g_parameters(self) -> list[nn.Parameter]:
        return list(self.generator.parameters()) + list(self.to_pseudo.parameters())

    def d_parameters(self) -> list[nn.Parameter]:
        return list(self.d_real.parameters()) + list(self.d_pseudo.parameters())

    @staticmethod
    def _d(disc: PatchDiscriminator, images: torch.Tensor) -> list[list[torch.Tensor]]:
        return [disc(images[:, :0], images)]  # unconditional: no label channels

    def generator_step(self, batch: Batch, noise: torch.Generator) -> GeneratorOutput:
        n, dev = batch.images.shape[0], batch.images.device
        z = torch.randn(n, self.style_dim, generator=noise, device=noise.device).to(dev)
        real = batch.images[torch.randperm(n, generator=noise, device=noise.device).to(dev)]
        with torch.no_grad():
            pseudo = self.generator.render(batch.labels.float(), z.float()).float()
        fake_real = self.generator.translate(pseudo)
        fake_pseudo = self.to_pseudo(real)
        g_gan = losses.lsgan_g(self._d(self.d_real, fake_real)) + losses.lsgan_g(
            self._d(self.d_pseudo, fake_pseudo)
        )
        cycle = F.l1_loss(self.to_pseudo(fake_real).float(), pseudo) + F.l1_loss(
            self.generator.translate(fake_pseudo).float(), real.float()
        )
        loss = g_gan + self.cfg.lambda_cycle * cycle
        logs = {"g_gan": g_gan.item(), "g_cycle": cycle.item()}
        if self.cfg.lambda_identity:
            identity = F.l1_loss(self.generator.translate(real).float(), real.float())
            if real.shape[1] == 1:  # pseudo -> pseudo identity needs one-channel real images
                identity = identity + F.l1_loss(self.to_pseudo(pseudo).float(), pseudo)
            loss = loss + self.cfg.lambda_identity * self.cfg.lambda_cycle * identity
            logs["g_identity"] = identity.item()
        if self._segmenter is not None:
            segmenter, size = self._segmenter
            segmenter.to(dev)
            dice = segment_dice(
                segmenter, fake_real.detach(), batch.labels.argmax(1), self.shape.num_classes, size
            )
            logs["anatomy_dice"] = float(dice.mean())
        return GeneratorOutput(loss, logs, (fake_real, fake_pseudo, real, pseudo))

    def discriminator_step(self, batch: Batch, fakes: Any) -> tuple[torch.Tensor, dict[str, float]]:
        fake_real, fake_pseudo, real, pseudo = fakes
        d_real = losses.lsgan_d(self._d(self.d_real, real), self._d(self.d_real, fake_real.detach()))
        d_pseudo = losses.lsgan_d(
            self._d(self.d_pseudo, pseudo), self._d(self.d_pseudo, fake_pseudo.detach())
        )
        return d_real + d_pseudo, {"d_real": d_real.item(), "d_pseudo": d_pseudo.item()}
