"""Inference with a trained generator: label maps (uint8, schema values) -> images in the store dtype.

:func:`generate` is pure: the same model, labels and styles give the same images. Styles come from
explicit per-sample seeds (sample i's style depends on its seed only, not on the batch it is in), a
``torch.Generator`` or explicit vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from synthgen.errors import CheckpointError, ConfigError
from synthgen.trainers.data import from_unit, labels_to_indices
from synthgen.trainers.layers import onehot
from synthgen.trainers.spec import GeneratorSpec

Style = torch.Generator | Sequence[int] | np.ndarray | torch.Tensor | None


def style_vectors(seeds: Sequence[int] | np.ndarray, style_dim: int) -> torch.Tensor:
    """(N, style_dim) styles from N(0, I), one ``torch.Generator`` per seed."""
    out = torch.empty(len(seeds), style_dim)
    for i, seed in enumerate(np.asarray(seeds, np.int64).tolist()):
        out[i] = torch.randn(style_dim, generator=torch.Generator().manual_seed(seed))
    return out


def _styles(style: Style, n: int, style_dim: int) -> torch.Tensor | None:
    if style_dim == 0:
        return None
    if style is None:
        raise ConfigError(
            "Expected styles (seeds, a torch.Generator or vectors) for this generator. Got none."
        )
    if isinstance(style, torch.Generator):
        return torch.randn(n, style_dim, generator=style, device=style.device).cpu()
    arr = style if isinstance(style, torch.Tensor) else torch.as_tensor(np.asarray(style))
    if arr.ndim == 1 and not arr.is_floating_point():
        z = style_vectors(arr.numpy(), style_dim)
    else:
        z = arr.float()
    if z.shape != (n, style_dim):
        raise ConfigError(
            f"Expected {n} seeds or styles of shape ({n}, {style_dim}). Got shape {tuple(arr.shape)} instead."
        )
    return z


def generate(
    model: nn.Module, spec: GeneratorSpec, labels: np.ndarray, style: Style = None, *, batch_size: int = 64
) -> np.ndarray:
    """Images for label maps ``labels`` (N, S, S) uint8, in the spec's dtype and intensity convention.

    Returns (N, S, S) for single-channel generators, (N, C, S, S) otherwise. ``model`` must be in eval
    mode (as :func:`~synthgen.trainers.checkpoint.load_generator` returns it).
    """
    labels = np.asarray(labels)
    if labels.dtype != np.uint8 or labels.ndim != 3:
        raise ConfigError(f"Expected label maps (N, H, W) uint8. Got {labels.shape} {labels.dtype} instead.")
    size = spec.image_size
    if labels.shape[1:] != (size, size):
        raise CheckpointError(
            f"Expected label maps of {size} x {size} (the generator's image size). Got "
            f"{labels.shape[1]} x {labels.shape[2]} instead: resize them (nearest neighbour) or use another generator."
        )
    indices = torch.from_numpy(
        labels_to_indices(labels, spec.schema, "the label maps given to the generator")
    )
    z = _styles(style, len(labels), spec.style_dim)
    device = next(model.parameters()).device
    out = [np.zeros((0, spec.channels, size, size), np.float32)]
    with torch.inference_mode():
        for start in range(0, len(labels), batch_size):
            x = onehot(indices[start : start + batch_size].to(device), spec.schema.num_classes)
            if z is None:
                y = model(x)
            else:
                y = model(x, z[start : start + batch_size].to(device))
            out.append(y.float().cpu().numpy())
    images = from_unit(np.concatenate(out), spec.intensity, spec.image_dtype)
    return images[:, 0] if spec.channels == 1 else images
