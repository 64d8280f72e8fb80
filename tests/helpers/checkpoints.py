"""Randomly initialised generator checkpoints: for tests, and for benchmarks where no trained one exists.

Weights are drawn from an explicit ``torch.Generator`` with fan-in scaling (activations stay of order
one through every layer, so differences between backends show), and batch-norm running statistics
are random too, so folding them into the convolutions is exercised.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from synthgen.models.registry import build_generator, default_model_config
from synthgen.models.weights import save_generator
from synthgen.schemas.generator_spec import DataShape, GeneratorSpec
from synthgen.schemas.labels import LabelSchema
from synthgen.schemas.store_layout import Intensity


def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Re-draw every weight, bias and batch-norm statistic of ``module`` from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
                fan_in = (
                    m.weight[0].numel() if not isinstance(m, nn.ConvTranspose2d) else m.weight[:, 0].numel()
                )
                m.weight.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=gen)
                if m.bias is not None:
                    m.bias.normal_(0.0, 0.1, generator=gen)
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.2, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)
                if m.affine:
                    m.weight.uniform_(0.8, 1.2, generator=gen)
                    m.bias.normal_(0.0, 0.1, generator=gen)
    return module.eval()


def random_checkpoint(
    directory: str | Path,
    arch: str,
    schema: LabelSchema,
    *,
    image_size: int,
    channels: int = 1,
    seed: int = 0,
    **model: Any,
) -> Path:
    """Write a checkpoint folder (spec + weights) of a random ``arch`` generator; return its path."""
    cfg = default_model_config(arch, **model)
    generator = randomize(build_generator(cfg, DataShape(schema.num_classes, channels, image_size)), seed)
    spec = GeneratorSpec(
        arch=arch,
        model=cfg.to_dict(),
        image_size=image_size,
        channels=channels,
        image_dtype="uint8",
        intensity=Intensity.for_dtype("uint8"),
        schema=schema,
        style_dim=getattr(cfg, "style_dim", 0),
        store_hash="none (randomly initialised)",
    )
    return save_generator(directory, generator, spec)
