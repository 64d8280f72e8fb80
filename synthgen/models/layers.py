"""Building blocks shared by the GAN architectures: convolutions with optional spectral norm,
normalisation by name, explicit weight initialisation, spectral-norm removal for export.

Weights are initialised from an explicit ``torch.Generator`` (never the global RNG), so the same seed
builds the same network in any process.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from synthgen.errors import ConfigError

NORMS = ("batch", "instance", "none")


def parse_norm(value: str, what: str) -> str:
    if value not in NORMS:
        raise ConfigError(f"Expected {what} in {NORMS}. Got {value!r} instead.")
    return value


def norm_layer(kind: str, channels: int, *, affine: bool = True) -> nn.Module:
    """A 2D normalisation by name. ``instance`` keeps no running statistics (same in train and eval)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=affine)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=affine)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"Expected a normalisation in {NORMS}. Got {kind!r} instead.")


def conv(
    c_in: int, c_out: int, kernel: int = 3, stride: int = 1, padding: int | None = None, *, sn: bool = False
) -> nn.Module:
    """A Conv2d, wrapped in spectral normalisation when ``sn``; padding defaults to 'same' for odd kernels."""
    layer = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2 if padding is None else padding)
    return _spectral_norm(layer) if sn else layer


class StyleEncoder(nn.Module):
    """Image -> (mu, logvar) of its style: up to five stride-2 convolutions (``width`` channels,
    doubling up to ``max_width``), global average pooling, two linear heads of ``style_dim``."""

    def __init__(
        self, channels: int, width: int, max_width: int, levels: int, style_dim: int, *, sn: bool = False
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, c = channels, width
        for _ in range(min(5, max(levels, 1))):
            # no normalisation: instance norm would remove the global brightness and contrast that are
            # much of an image's style in ultrasound and MR
            layers += [conv(c_in, c, 3, 2, 1, sn=sn), nn.LeakyReLU(0.2)]
            c_in, c = c, min(2 * c, max_width)
        self.body = nn.Sequential(*layers)
        self.mu = nn.Linear(c_in, style_dim)
        self.logvar = nn.Linear(c_in, style_dim)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(images).mean(dim=(2, 3))
        return self.mu(h), self.logvar(h)


def init_weights(module: nn.Module, generator: torch.Generator, std: float = 0.02) -> None:
    """Re-initialise every weight from ``generator``: conv/linear N(0, std), norms weight 1, biases 0.

    Spectral-norm power-iteration vectors are redrawn from ``generator`` too, so nothing depends on
    the global RNG state at construction time.
    """
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
                weight = m.parametrizations.weight.original if parametrize.is_parametrized(m) else m.weight
                nn.init.normal_(weight, 0.0, std, generator=generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d | nn.InstanceNorm2d) and m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            if parametrize.is_parametrized(m, "weight"):
                for p in m.parametrizations.weight:
                    if hasattr(p, "_u"):
                        p._u.normal_(generator=generator)
                        p._v.normal_(generator=generator)
                        p._u.div_(p._u.norm().clamp_min(1e-12))
                        p._v.div_(p._v.norm().clamp_min(1e-12))


def plain_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of ``module`` with each spectral-normalised weight replaced by its effective value.

    Computed as in eval mode (no power iteration, the buffers stay as they are); it loads into the same
    architecture built without spectral norm. (A deep copy plus ``remove_parametrizations`` would be
    shorter, but the copy shares the parametrised class and removal breaks the original.)
    """
    was_training = module.training
    module.eval()
    with torch.no_grad():
        out = {k: v for k, v in module.state_dict().items() if "parametrizations.weight." not in k}
        for name, m in module.named_modules():
            if parametrize.is_parametrized(m, "weight"):
                out[f"{name}.weight" if name else "weight"] = m.weight.detach().clone()
    module.train(was_training)
    return out


def set_requires_grad(params: list[nn.Parameter], flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)


def onehot(labels: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, H, W) integer class indices -> (N, K, H, W) one-hot float."""
    return nn.functional.one_hot(labels.long(), num_classes).permute(0, 3, 1, 2).to(dtype)
