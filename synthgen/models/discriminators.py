"""Conditional patch discriminators: one PatchGAN (pix2pix) or several at decreasing scales (SPADE).

Both see the one-hot label map concatenated with the image, and return every intermediate feature
map (for feature matching) with the patch predictions last.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from synthgen.models.layers import conv, norm_layer


class PatchDiscriminator(nn.Module):
    """PatchGAN: ``layers`` stride-2 4x4 convolutions, one stride-1, then a 1-channel patch map.

    With 3 layers each output sees a 70 x 70 patch of the input (pix2pix).
    """

    def __init__(
        self, in_channels: int, width: int = 64, layers: int = 3, norm: str = "instance", sn: bool = False
    ) -> None:
        super().__init__()
        blocks = [nn.Sequential(conv(in_channels, width, 4, 2, 2, sn=sn), nn.LeakyReLU(0.2))]
        c = width
        for i in range(1, layers + 1):
            c_next = min(width * 2**i, width * 8)
            stride = 2 if i < layers else 1
            blocks.append(
                nn.Sequential(
                    conv(c, c_next, 4, stride, 2, sn=sn),
                    norm_layer(norm, c_next, affine=False),
                    nn.LeakyReLU(0.2),
                )
            )
            c = c_next
        blocks.append(nn.Sequential(conv(c, 1, 4, 1, 2, sn=sn)))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, labels: torch.Tensor, images: torch.Tensor) -> list[torch.Tensor]:
        x = torch.cat([labels, images], dim=1)
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return features


class MultiScaleDiscriminator(nn.Module):
    """``scales`` patch discriminators, the k-th on the input average-pooled k times (pix2pixHD/SPADE)."""

    def __init__(
        self,
        in_channels: int,
        width: int = 64,
        layers: int = 3,
        scales: int = 2,
        norm: str = "instance",
        sn: bool = False,
    ) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            PatchDiscriminator(in_channels, width, layers, norm, sn) for _ in range(scales)
        )

    def forward(self, labels: torch.Tensor, images: torch.Tensor) -> list[list[torch.Tensor]]:
        outputs = []
        for k, d in enumerate(self.discriminators):
            if k:
                labels = F.avg_pool2d(labels, 3, 2, 1, count_include_pad=False)
                images = F.avg_pool2d(images, 3, 2, 1, count_include_pad=False)
            outputs.append(d(labels, images))
        return outputs
