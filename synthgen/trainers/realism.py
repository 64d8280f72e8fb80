"""A first realism check of a generator against real pairs it did not train on.

For each held-out real pair, generate an image from its label map and compare it with the real image:
SSIM (Wang et al. 2004: Gaussian window, sigma 1.5) and PSNR, plus the 1-Wasserstein distance
between the grey-level distributions of all real and all generated images. A GAN is not asked to
reproduce the exact speckle, so SSIM and PSNR against the real image are low even for realistic
images; they rank generators and catch gross failure. A side-by-side grid is written for looking at.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi
import torch

from synthgen.engine.store import StoreReader
from synthgen.trainers.data import from_unit, load_training_pairs
from synthgen.trainers.generate import generate
from synthgen.trainers.spec import GeneratorSpec
from synthgen.trainers.trainlog import sample_grid, save_png


def ssim(a: np.ndarray, b: np.ndarray, data_range: float, sigma: float = 1.5) -> float:
    """Mean structural similarity of two 2D images (Gaussian-weighted local statistics, reflect borders)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(x: np.ndarray) -> np.ndarray:
        return ndi.gaussian_filter(x, sigma, truncate=3.5, mode="reflect")

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


def psnr(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(data_range**2 / mse)


def wasserstein_1d(a: np.ndarray, b: np.ndarray, quantiles: int = 1000) -> float:
    """1-Wasserstein distance between the value distributions of ``a`` and ``b`` (by quantiles)."""
    q = np.linspace(0, 1, quantiles)
    return float(np.mean(np.abs(np.quantile(a.ravel(), q) - np.quantile(b.ravel(), q))))


@dataclass(frozen=True)
class RealismReport:
    n: int
    ssim_mean: float
    ssim_std: float
    psnr_mean: float
    psnr_std: float
    grey_w1: float  # 1-Wasserstein distance of grey levels, in store units

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in self.__dict__.items()}


def compare_with_real(
    model: torch.nn.Module,
    spec: GeneratorSpec,
    store: str,
    *,
    split: str = "test",
    seed: int = 0,
    grid: str | Path | None = None,
    grid_rows: int = 8,
) -> RealismReport:
    """Generate from every label map of ``split`` in ``store`` (resized to the generator's size) and
    compare with the real images, resized alike; optionally write a labels | real | generated grid."""
    reader = StoreReader(store)
    spec.check_compatible(schema=reader.schema)
    data = load_training_pairs(reader, spec.image_size, split)
    values = np.array([0, *spec.schema.values], np.uint8)
    labels = values[data.labels.numpy()]
    real = from_unit(data.images.numpy(), spec.intensity, spec.image_dtype)[:, 0]
    styles = np.random.SeedSequence(seed).generate_state(len(labels), np.uint32).astype(np.int64)
    fake = generate(model, spec, labels, styles)
    data_range = spec.intensity.high - spec.intensity.low
    s = np.array([ssim(r, f, data_range) for r, f in zip(real, fake, strict=True)])
    p = np.array([psnr(r, f, data_range) for r, f in zip(real, fake, strict=True)])
    if grid is not None:
        rows = np.linspace(0, len(labels) - 1, min(grid_rows, len(labels))).astype(int)
        other = generate(model, spec, labels[rows], styles[rows] + 1) if spec.style_dim else None
        fakes = [fake[rows]] + ([other] if other is not None else [])
        unit = [(f[:, None].astype(np.float32) - spec.intensity.low) / data_range * 2 - 1 for f in fakes]
        save_png(
            Path(grid), sample_grid(data.labels.numpy()[rows], data.images.numpy()[rows], unit, spec.schema)
        )
    return RealismReport(len(labels), s.mean(), s.std(), p.mean(), p.std(), wasserstein_1d(real, fake))
