"""Segmentation networks and their checkpoints (safetensors weights + JSON spec, never pickle).

Two architectures, chosen by :class:`SegModelConfig.arch`:

- ``unet``: the U-Net of Ronneberger et al. (two 3x3 conv + batch norm + ReLU per level, max-pool down,
  transposed-conv up, concatenated skips). ``width`` channels at full resolution, doubled per level.
- ``lite``: a light alternative with depthwise-separable residual blocks, strided depthwise downsampling,
  bilinear upsampling and *additive* skips (LinkNet-style); about 10x fewer weights and operations than
  the U-Net of the same width.

Both take images (B, C, H, W) in [0, 1] (H and W multiples of 2**(depth-1)) and return class logits
(B, K, H, W). :meth:`features` returns the mean-pooled bottleneck activations, the feature space
that ``synthgen evaluate realism`` uses for FID and KID (no ImageNet network can be downloaded here).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from synthgen import __version__
from synthgen.errors import CheckpointError, ConfigError
from synthgen.models.weights import load_weights, read_tensors, write_checkpoint
from synthgen.schemas import LabelSchema, check_format, read_json, spec_errors

ARCHES = ("unet", "lite")
FORMAT = "synthgen-segmenter"
FORMAT_VERSION = 1
SEGMENTER_JSON, WEIGHTS = "segmenter.json", "segmenter.safetensors"


@dataclass(frozen=True)
class SegModelConfig:
    arch: str = "unet"
    width: int = 16
    depth: int = 4  # resolution levels; the input is downsampled 2**(depth-1) times

    def __post_init__(self) -> None:
        if self.arch not in ARCHES:
            raise ConfigError(f"Expected a segmenter architecture in {ARCHES}. Got {self.arch!r} instead.")
        if not 1 <= self.width <= 512:
            raise ConfigError(f"Expected a width in [1, 512]. Got {self.width} instead.")
        if not 1 <= self.depth <= 7:
            raise ConfigError(f"Expected a depth in [1, 7]. Got {self.depth} instead.")

    @property
    def multiple(self) -> int:
        """Input sizes must be multiples of this."""
        return 2 ** (self.depth - 1)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "width": self.width, "depth": self.depth}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SegModelConfig:
        unknown = sorted(set(data) - {"arch", "width", "depth"})
        if unknown:
            raise ConfigError(f"Expected model keys arch, width, depth. Got unknown keys {unknown}.")
        return cls(**dict(data))


def _conv_bn_relu(cin: int, cout: int, **kw: Any) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False, **kw), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(*_conv_bn_relu(cin, cout), *_conv_bn_relu(cout, cout))


class UNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, config: SegModelConfig) -> None:
        super().__init__()
        widths = [config.width * 2**i for i in range(config.depth)]
        self.down = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.down.append(_DoubleConv(cin, w))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(nn.ConvTranspose2d(w * 2, w, 2, stride=2) for w in widths[:-1])
        self.merge = nn.ModuleList(_DoubleConv(w * 2, w) for w in widths[:-1])
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for i, block in enumerate(self.down):
            x = block(self.pool(x) if i else x)
            skips.append(x)
        return skips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = self.encode(x)
        x = skips.pop()
        for up, merge in zip(reversed(self.up), reversed(self.merge), strict=True):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[-1].mean(dim=(2, 3))


class _SeparableBlock(nn.Module):
    """Depthwise 3x3 (optionally strided) + pointwise 1x1, batch norm, ReLU; residual where shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False),
            nn.BatchNorm2d(cin),
            nn.Conv2d(cin, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.residual = stride == 1 and cin == cout
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return self.act(y + x if self.residual else y)


class LiteSeg(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, config: SegModelConfig) -> None:
        super().__init__()
        widths = [config.width * 2**i for i in range(config.depth)]
        self.stem = nn.Sequential(*_conv_bn_relu(in_channels, widths[0]))
        self.down = nn.ModuleList([_SeparableBlock(widths[0], widths[0])])
        for cin, cout in itertools.pairwise(widths):
            self.down.append(nn.Sequential(_SeparableBlock(cin, cout, stride=2), _SeparableBlock(cout, cout)))
        self.reduce = nn.ModuleList(
            nn.Sequential(nn.Conv2d(w * 2, w, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
            for w in widths[:-1]
        )
        self.refine = nn.ModuleList(_SeparableBlock(w, w) for w in widths[:-1])
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        return skips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = self.encode(x)
        x = skips.pop()
        for reduce, refine in zip(reversed(self.reduce), reversed(self.refine), strict=True):
            skip = skips.pop()
            x = nn.functional.interpolate(
                reduce(x), size=skip.shape[-2:], mode="bilinear", align_corners=False
            )
            x = refine(x + skip)
        return self.head(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[-1].mean(dim=(2, 3))


def build_segmenter(config: SegModelConfig, in_channels: int, num_classes: int) -> nn.Module:
    cls = UNet if config.arch == "unet" else LiteSeg
    return cls(in_channels, num_classes, config)


@dataclass(frozen=True)
class SegmenterSpec:
    """What a segmenter checkpoint needs to be rebuilt and used: model, input size, schema, training."""

    model: SegModelConfig
    image_size: tuple[int, int]
    channels: int
    schema: LabelSchema
    step: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)  # validation figures at this step
    train_config: Mapping[str, Any] = field(default_factory=dict)
    synthgen_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": self.model.to_dict(),
            "image_size": list(self.image_size),
            "channels": self.channels,
            "label_schema": self.schema.to_dict(),
            "step": self.step,
            "metrics": dict(self.metrics),
            "train_config": dict(self.train_config),
            "synthgen_version": self.synthgen_version,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "the checkpoint") -> SegmenterSpec:
        check_format(data, FORMAT, FORMAT_VERSION, "segmenter", where)
        with spec_errors("segmenter", where):
            size = tuple(int(s) for s in data["image_size"])
            if len(size) != 2:
                raise CheckpointError(f"Expected image_size [H, W] in {where}. Got {size} instead.")
            return cls(
                model=SegModelConfig.from_dict(data["model"]),
                image_size=size,  # type: ignore[arg-type]
                channels=int(data["channels"]),
                schema=LabelSchema.from_dict(data["label_schema"]),
                step=int(data.get("step", 0)),
                metrics={k: float(v) for k, v in dict(data.get("metrics", {})).items()},
                train_config=dict(data.get("train_config", {})),
                synthgen_version=str(data.get("synthgen_version", "unknown")),
            )


def save_segmenter(directory: str | Path, model: nn.Module, spec: SegmenterSpec) -> Path:
    """Write ``segmenter.json`` and ``segmenter.safetensors`` into ``directory`` (created if needed)."""
    return write_checkpoint(directory, model, WEIGHTS, spec.to_dict(), SEGMENTER_JSON)


def load_segmenter(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, SegmenterSpec]:
    """The segmenter of a checkpoint folder, in eval mode, and its spec. Validates both."""
    path = Path(path)
    if not (path / SEGMENTER_JSON).is_file():
        raise CheckpointError(
            f"Expected a segmenter checkpoint folder with {SEGMENTER_JSON} at {path}. There is none "
            "(train-seg writes one to OUT_DIR/best)."
        )
    spec = SegmenterSpec.from_dict(read_json(path / SEGMENTER_JSON), str(path / SEGMENTER_JSON))
    model = build_segmenter(spec.model, spec.channels, spec.schema.num_classes)
    load_weights(model, read_tensors(path / WEIGHTS), str(path / WEIGHTS))
    return model.to(device).eval(), spec


def init_segmenter(model: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise every weight from ``generator`` (He normal for convolutions, norms 1 / 0, biases 0),
    so nothing depends on the global RNG state at construction time."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
