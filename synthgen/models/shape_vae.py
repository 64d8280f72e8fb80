"""A shape VAE over label maps: new anatomies in between the real ones (as cardiGAN and Amirrajab et al.).

A convolutional VAE on one-hot label maps (K classes, background first, from the training store's
schema): stride-2 convolutions down to a small grid, a linear layer to the mean and log-variance of a
``latent_dim`` Gaussian, and the mirror image up to per-pixel class logits. Group normalisation only
(no batch statistics), so a map decoded alone equals the same map decoded in a batch.

New anatomies are argmax maps of decoded latents ``z = m + L eps`` with ``eps ~ N(0, I)`` drawn from an
explicit ``torch.Generator`` (or a NumPy one, by the label source), then checked by the plausibility
gate (:func:`synthgen.sources.label_sources.gate_samples`): what cardiGAN's authors sorted out by hand (7% of their samples) is
counted here per reason. ``m`` and ``L L^T`` (buffers saved with the weights) are the VAE prior
N(0, I) until :func:`fit_prior` replaces them by a Gaussian fitted to the aggregate posterior of the
training maps ("ex-post density estimation", Ghosh et al., ICLR 2020): a briefly trained VAE's codes
do not fill N(0, I), and on CAMUS this raised the gate pass rate of samples from 9% to 92%.

A checkpoint is a folder: ``shape_vae.json`` (:class:`ShapeVaeSpec`: model config, label schema,
training-store hash, step, last gate report) and ``shape_vae.safetensors``; no pickle.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synthgen import __version__
from synthgen.errors import CheckpointError, ConfigError
from synthgen.models.weights import load_weights, read_tensors, write_checkpoint
from synthgen.schemas import LabelSchema, check_format, check_range, fields_from_dict, read_json, spec_errors

FORMAT = "synthgen-shape-vae"
FORMAT_VERSION = 1
SHAPE_VAE_JSON, WEIGHTS = "shape_vae.json", "shape_vae.safetensors"


@dataclass(frozen=True)
class ShapeVaeConfig:
    """``depth`` stride-2 levels from ``image_size`` (``width`` channels at the first, doubling up to
    ``max_width``) to an image_size / 2**depth grid, then a ``latent_dim`` Gaussian."""

    image_size: int = 64
    latent_dim: int = 32
    width: int = 16
    max_width: int = 128
    depth: int = 4

    def __post_init__(self) -> None:
        for name in ("image_size", "latent_dim", "width", "max_width", "depth"):
            check_range(getattr(self, name), f"shape VAE {name}", 1)
        if self.image_size % 2**self.depth:
            raise ConfigError(
                f"Expected an image size divisible by 2**depth = {2**self.depth} (shape VAE). "
                f"Got {self.image_size} instead: change the depth or the image size."
            )

    def channels(self, level: int) -> int:
        return min(self.width * 2**level, self.max_width)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: Any) -> ShapeVaeConfig:
        return cls(**fields_from_dict(cls, data, "the shape VAE config"))


def _block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    conv = nn.Conv2d(c_in, c_out, 4, 2, 1) if stride == 2 else nn.Conv2d(c_in, c_out, 3, 1, 1)
    return [conv, nn.GroupNorm(min(8, c_out), c_out), nn.LeakyReLU(0.2)]


class ShapeVae(nn.Module):
    """one-hot maps (N, K, S, S) -> (mu, logvar) (N, latent_dim); z -> class logits (N, K, S, S)."""

    def __init__(self, cfg: ShapeVaeConfig, num_classes: int) -> None:
        super().__init__()
        self.cfg, self.num_classes = cfg, num_classes
        self.grid = cfg.image_size // 2**cfg.depth
        down: list[nn.Module] = []
        for i in range(cfg.depth):
            down += _block(num_classes if i == 0 else cfg.channels(i - 1), cfg.channels(i), 2)
        self.encoder = nn.Sequential(*down, nn.Flatten())
        flat = cfg.channels(cfg.depth - 1) * self.grid**2
        self.to_latent = nn.Linear(flat, 2 * cfg.latent_dim)
        self.from_latent = nn.Linear(cfg.latent_dim, flat)
        up: list[nn.Module] = []
        for i in reversed(range(cfg.depth)):
            up += [nn.Upsample(scale_factor=2.0, mode="nearest")]
            up += _block(cfg.channels(i), cfg.channels(max(i - 1, 0)), 1)
        self.decoder = nn.Sequential(*up, nn.Conv2d(cfg.channels(0), num_classes, 3, 1, 1))
        # the sampling prior z = mean + eps @ chol.T (N(0, I) until fit_prior)
        self.register_buffer("prior_mean", torch.zeros(cfg.latent_dim))
        self.register_buffer("prior_chol", torch.eye(cfg.latent_dim))

    def encode(self, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.to_latent(self.encoder(onehot)).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        c = self.cfg.channels(self.cfg.depth - 1)
        return self.decoder(self.from_latent(z).view(-1, c, self.grid, self.grid))

    def latent(self, eps: torch.Tensor) -> torch.Tensor:
        """Standard normal draws (N, latent_dim) -> latents of the sampling prior."""
        return self.prior_mean + eps.to(self.prior_chol.dtype) @ self.prior_chol.T


@torch.no_grad()
def fit_prior(model: ShapeVae, batches: Iterable[torch.Tensor]) -> None:
    """Set the sampling prior to the Gaussian of the aggregate posterior of the class-index maps in
    ``batches`` (each (B, S, S)): mean E[mu], covariance Cov(mu) + E[diag(sigma^2)] (in float64),
    Cholesky factor."""
    device = model.prior_mean.device
    mus, variances = [], []
    for maps in batches:
        x = F.one_hot(maps.to(device).long(), model.num_classes).permute(0, 3, 1, 2).float()
        mu, logvar = model.encode(x)
        mus.append(mu.double())
        variances.append(logvar.double().exp())
    mu, var = torch.cat(mus), torch.cat(variances)
    d = mu.shape[1]
    cov = torch.cov(mu.T).reshape(d, d) if len(mu) > 1 else mu.new_zeros(d, d)
    cov = cov + torch.diag(var.mean(0)) + 1e-6 * torch.eye(d, dtype=mu.dtype, device=mu.device)
    model.prior_mean.copy_(mu.mean(0))
    model.prior_chol.copy_(torch.linalg.cholesky(cov))


def init_vae(model: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise every weight from ``generator``: U(-b, b) with b = 1 / sqrt(fan_in) (PyTorch's
    default scale), biases 0, so nothing depends on the global RNG at construction time."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                bound = 1.0 / m.weight[0].numel() ** 0.5
                m.weight.uniform_(-bound, bound, generator=generator)
                nn.init.zeros_(m.bias)


def vae_loss(
    model: ShapeVae, onehot: torch.Tensor, eps: torch.Tensor, kl_weight: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Negative ELBO with a weighted KL: cross-entropy summed over pixels + kl_weight * KL, per map."""
    mu, logvar = model.encode(onehot)
    z = mu + eps * torch.exp(0.5 * logvar)
    logits = model.decode(z)
    target = onehot.argmax(1)
    ce = F.cross_entropy(logits, target, reduction="none").sum(dim=(1, 2)).mean()
    kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()
    accuracy = (logits.argmax(1) == target).float().mean()
    pixels = target.shape[1] * target.shape[2]
    logs = {"recon_ce": ce.item() / pixels, "kl": kl.item(), "pixel_accuracy": accuracy.item()}
    return ce + kl_weight * kl, logs


@dataclass(frozen=True)
class ShapeVaeSpec:
    """What a shape VAE checkpoint needs to be rebuilt and used."""

    model: ShapeVaeConfig
    schema: LabelSchema
    store_hash: str
    step: int = 0
    gate: Mapping[str, Any] = field(default_factory=dict)  # GateReport.to_dict() of the last check
    train_config: Mapping[str, Any] = field(default_factory=dict)
    synthgen_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": self.model.to_dict(),
            "label_schema": self.schema.to_dict(),
            "store_hash": self.store_hash,
            "step": self.step,
            "gate": dict(self.gate),
            "train_config": dict(self.train_config),
            "synthgen_version": self.synthgen_version,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "the checkpoint") -> ShapeVaeSpec:
        check_format(data, FORMAT, FORMAT_VERSION, "shape VAE", where)
        with spec_errors("shape VAE", where):
            return cls(
                model=ShapeVaeConfig.from_dict(data["model"]),
                schema=LabelSchema.from_dict(data["label_schema"]),
                store_hash=str(data["store_hash"]),
                step=int(data.get("step", 0)),
                gate=dict(data.get("gate", {})),
                train_config=dict(data.get("train_config", {})),
                synthgen_version=str(data.get("synthgen_version", "unknown")),
            )


def save_vae(directory: str | Path, model: ShapeVae, spec: ShapeVaeSpec) -> Path:
    return write_checkpoint(directory, model, WEIGHTS, spec.to_dict(), SHAPE_VAE_JSON)


def read_vae_spec(path: str | Path) -> ShapeVaeSpec:
    path = Path(path)
    if not (path / SHAPE_VAE_JSON).is_file():
        raise CheckpointError(
            f"Expected a shape VAE checkpoint folder with {SHAPE_VAE_JSON} at {path}. There is none "
            "(train-shape writes one to OUT/checkpoint)."
        )
    return ShapeVaeSpec.from_dict(read_json(path / SHAPE_VAE_JSON), str(path / SHAPE_VAE_JSON))


def load_vae(path: str | Path, device: str | torch.device = "cpu") -> tuple[ShapeVae, ShapeVaeSpec]:
    """The VAE of a checkpoint folder, in eval mode, and its spec. Validates both."""
    spec = read_vae_spec(path)
    model = ShapeVae(spec.model, spec.schema.num_classes)
    load_weights(model, read_tensors(Path(path) / WEIGHTS), str(Path(path) / WEIGHTS))
    return model.to(device).eval(), spec


@torch.no_grad()
def decode_labels(model: ShapeVae, z: torch.Tensor, schema: LabelSchema, batch_size: int = 256) -> np.ndarray:
    """Latents (N, latent_dim) -> (N, S, S) uint8 label maps in ``schema``'s values (argmax classes)."""
    values = np.array([0, *schema.values], np.uint8)
    device = next(model.parameters()).device
    out = [
        model.decode(z[a : a + batch_size].to(device)).argmax(1).cpu().numpy()
        for a in range(0, len(z), batch_size)
    ]
    return (
        values[np.concatenate(out)]
        if out
        else np.zeros((0, model.cfg.image_size, model.cfg.image_size), np.uint8)
    )


def sample_labels(model: ShapeVae, schema: LabelSchema, n: int, generator: torch.Generator) -> np.ndarray:
    """``n`` new label maps (N, S, S) uint8: eps ~ N(0, I) drawn from ``generator``, then the prior."""
    eps = torch.randn(n, model.cfg.latent_dim, generator=generator, device=generator.device)
    return decode_labels(model, model.latent(eps.to(model.prior_mean.device)), schema)
