"""GAN losses as pure functions of discriminator outputs.

Discriminator outputs are lists (one per scale) of lists of feature maps, the last of which is the
patch prediction. Hinge and least-squares losses average over scales.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Features = list[list[torch.Tensor]]


def _preds(outputs: Features) -> list[torch.Tensor]:
    return [scale[-1].float() for scale in outputs]


def hinge_d(real: Features, fake: Features) -> torch.Tensor:
    """Discriminator hinge loss: mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))."""
    losses = [
        F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(_preds(real), _preds(fake), strict=True)
    ]
    return torch.stack(losses).mean()


def hinge_g(fake: Features) -> torch.Tensor:
    """Generator hinge loss: -mean(D(fake))."""
    return torch.stack([-f.mean() for f in _preds(fake)]).mean()


def lsgan_d(real: Features, fake: Features) -> torch.Tensor:
    """Least-squares discriminator loss: ((D(real) - 1)^2 + D(fake)^2) / 2."""
    losses = [
        0.5 * (((r - 1) ** 2).mean() + (f**2).mean()) for r, f in zip(_preds(real), _preds(fake), strict=True)
    ]
    return torch.stack(losses).mean()


def lsgan_g(fake: Features) -> torch.Tensor:
    """Least-squares generator loss: (D(fake) - 1)^2."""
    return torch.stack([((f - 1) ** 2).mean() for f in _preds(fake)]).mean()


def feature_matching(real: Features, fake: Features) -> torch.Tensor:
    """L1 between the discriminator's intermediate features on real and fake, averaged over scales."""
    total = []
    for r_scale, f_scale in zip(real, fake, strict=True):
        layers = [
            F.l1_loss(f.float(), r.detach().float()) for r, f in zip(r_scale[:-1], f_scale[:-1], strict=True)
        ]
        total.append(torch.stack(layers).sum())
    return torch.stack(total).mean()


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over the style dimensions, averaged over the batch."""
    mu, logvar = mu.float(), logvar.float()
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()
