"""``synthgen evaluate realism``, and a first check of a generator against real pairs it did not train on.

Realism (see :func:`evaluate_realism`): FID and KID on the mean-pooled bottleneck features of a
segmenter trained on the real domain (no ImageNet weights can be downloaded here, so an
Inception network is not an option: the features are a documented choice and figures are comparable
only between runs that use the same feature checkpoint), label adherence (Dice of that frozen
segmenter on the synthetic images against their own labels) and a memorisation check (nearest real
training image of every synthetic image). A segmenter whose training data included the judged store
is refused (:func:`check_not_trained_on`): it would flatter that store.

Against real pairs (:func:`compare_with_real`): for each held-out real pair, generate an image from its
label map and compare it with the real image: SSIM (Wang et al. 2004: Gaussian window, sigma 1.5) and
PSNR, plus the 1-Wasserstein distance between the grey-level distributions of all real and all
generated images. A GAN is not asked to reproduce the exact speckle, so SSIM and PSNR against the real
image are low even for realistic images; they rank generators and catch gross failure. A side-by-side
grid is written for looking at.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.ndimage as ndi
import torch

from synthgen import seeding
from synthgen.errors import ConfigError, StoreError
from synthgen.evaluation.segmentation import (
    check_store_for,
    model_input,
    read_samples,
    segmentation_rows,
    summarize_rows,
    trained_normalisation,
    write_csv,
)
from synthgen.inference import open_generator
from synthgen.kernels import from_unit, psnr, resize_images
from synthgen.models import SegmenterSpec, load_segmenter
from synthgen.storage import RunSplits, StoreReader, atomic_write, select_split, split_indices
from synthgen.trainers import load_training_pairs, sample_grid, save_png


# -- FID, KID, adherence, memorisation ----------------------------------------------------------
def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to feature sets ``a`` and ``b`` (n, D), n >= 2 each.

    tr sqrt(S_a S_b) is computed as the trace of the square root of the symmetric PSD matrix
    sqrt(S_a) S_b sqrt(S_a) (same eigenvalues), by eigendecomposition: no complex round-off.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2 or a.shape[1] != b.shape[1]:
        raise ConfigError(f"Expected two feature sets of >= 2 rows and one width. Got {a.shape}, {b.shape}.")
    sa, sb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = np.linalg.eigh(sa)
    root = (v * np.sqrt(w.clip(0))) @ v.T
    m = root @ sb @ root
    cross = np.sqrt(np.linalg.eigvalsh((m + m.T) / 2).clip(0)).sum()
    diff = a.mean(0) - b.mean(0)
    return float(diff @ diff + np.trace(sa) + np.trace(sb) - 2 * cross)


def mmd2_polynomial(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased squared MMD with the kernel k(u, v) = (u.v / D + 1)^3 (the KID kernel)."""
    d = x.shape[1]
    kxx, kyy, kxy = ((p @ q.T / d + 1) ** 3 for p, q in ((x, x), (y, y), (x, y)))
    m, n = len(x), len(y)
    within = (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within - 2 * kxy.mean())


def kernel_distance(
    a: np.ndarray, b: np.ndarray, rng: np.random.Generator, subsets: int = 100, subset_size: int = 1000
) -> tuple[float, float]:
    """KID: mean and standard deviation of :func:`mmd2_polynomial` over random subsets (without replacement)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    size = min(subset_size, len(a), len(b))
    if size < 2:
        raise ConfigError(f"Expected >= 2 feature rows on each side for KID. Got {len(a)} and {len(b)}.")
    values = [
        mmd2_polynomial(
            a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)]
        )
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


@torch.no_grad()
def store_features(
    model: torch.nn.Module, spec: SegmenterSpec, reader: StoreReader, indices: np.ndarray, memo_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(network features (n, D), images at memo_size x memo_size flattened (n, C * memo_size**2)) of samples;
    the network sees each image normalised as it trained (its spec's ``normalise``)."""
    feats, pixels = [], []
    for _, images, _ in read_samples(reader, indices):
        features = model.features(model_input(images, spec.image_size, trained_normalisation(spec)))
        feats.append(features.double().numpy())
        pixels.append(resize_images(images, (memo_size, memo_size)).reshape(len(images), -1))
    return np.concatenate(feats), np.concatenate(pixels)


def nearest_neighbours(
    queries: np.ndarray, refs: np.ndarray, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """For each query row: the index of the nearest reference row and the RMS pixel difference to it."""
    ref_sq = (refs.astype(np.float64) ** 2).sum(1)
    index, dist = np.empty(len(queries), np.int64), np.empty(len(queries))
    for a in range(0, len(queries), chunk):
        q = queries[a : a + chunk].astype(np.float64)
        d2 = (q**2).sum(1)[:, None] + ref_sq[None] - 2 * q @ refs.T.astype(np.float64)
        index[a : a + chunk] = d2.argmin(1)
        dist[a : a + chunk] = np.sqrt(d2.min(1).clip(0) / refs.shape[1])
    return index, dist


def quantiles(x: np.ndarray) -> dict[str, float]:
    qs = (0, 1, 5, 25, 50, 75, 95, 100)
    return {f"p{q}": float(np.percentile(x, q)) for q in qs} | {"mean": float(np.mean(x))}


def pair_sheet(path: Path, left: np.ndarray, right: np.ndarray, size: int) -> None:
    """PNG: one row per pair, synthetic | nearest real (grey, first channel), 2x nearest upscaled."""
    from PIL import Image

    rows = [
        np.concatenate([a.reshape(-1, size, size)[0], b.reshape(-1, size, size)[0]], 1)
        for a, b in zip(left, right, strict=True)
    ]
    sheet = (np.concatenate(rows, 0).clip(0, 1) * 255 + 0.5).astype(np.uint8)
    Image.fromarray(sheet.repeat(2, 0).repeat(2, 1)).save(path)


@dataclass(frozen=True)
class RealismConfig:
    synth: str  # synthetic store
    real: str  # real store (the domain the segmenter was trained on)
    segmenter: str  # train-seg checkpoint trained on the real store: feature extractor and frozen segmenter
    out_dir: str | None = None
    real_split: str = "train"  # the real images the generator may have seen (memorisation reference)
    reference_split: str = (
        "test"  # unseen real images: the floor of FID/KID and of nearest distances; "" none
    )
    memo_size: int = 64  # images compared at memo_size x memo_size, intensities in [0, 1]
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    closest: int = 16
    limit: int | None = None  # first N synthetic samples only
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_not_trained_on(checkpoint: str, spec: SegmenterSpec, judged: StoreReader) -> None:
    """A :class:`ConfigError` where the segmenter's training data (its ``splits.json``, or the stores
    its config names) included samples of the judged store: its features and its label adherence
    would flatter that store."""
    record = RunSplits.read(checkpoint, spec.train_config)
    if record is None:
        return
    store = select_split(judged, "all")
    if any(seen.covers(store).any() for seen in record.learned_from):
        raise ConfigError(
            f"Expected a segmenter that never trained on the judged store {judged.url}. Got {checkpoint}, "
            "whose training data included it: train one on the real store only (train-seg REAL)."
        )


def evaluate_realism(cfg: RealismConfig) -> dict[str, Any]:
    """FID, KID, label adherence and the memorisation check; writes realism.json and friends to out_dir."""
    model, spec = load_segmenter(cfg.segmenter)
    synth, real = StoreReader(cfg.synth), StoreReader(cfg.real)
    for reader in (synth, real):
        check_store_for(spec, reader)
    check_not_trained_on(cfg.segmenter, spec, synth)
    synth_idx = synth.available_indices()[: cfg.limit]
    train_idx = split_indices(real, cfg.real_split)
    if synth_idx.size < 2 or train_idx.size < 2:
        raise StoreError(
            f"Expected >= 2 samples in {cfg.synth} and in split {cfg.real_split!r} of {cfg.real}."
        )
    f_syn, p_syn = store_features(model, spec, synth, synth_idx, cfg.memo_size)
    f_train, p_train = store_features(model, spec, real, train_idx, cfg.memo_size)
    rng = seeding.rng(cfg.seed, seeding.FID_SUBSETS)
    kid = (cfg.kid_subsets, cfg.kid_subset_size)
    nn_idx, nn_dist = nearest_neighbours(p_syn, p_train)
    report: dict[str, Any] = {
        "config": cfg.to_dict(),
        "feature_extractor": {
            "checkpoint": cfg.segmenter,
            "what": f"mean-pooled bottleneck activations of the {spec.model.arch} segmenter "
            f"(width {spec.model.width}, depth {spec.model.depth}) at {spec.image_size[0]} x {spec.image_size[1]}",
            "dims": int(f_syn.shape[1]),
            "trained_on": spec.train_config.get("train"),
        },
        "n": {"synthetic": int(synth_idx.size), f"real_{cfg.real_split}": int(train_idx.size)},
        "fid": {"synthetic_vs_real": frechet_distance(f_syn, f_train)},
        "kid": {"synthetic_vs_real": kernel_distance(f_syn, f_train, rng, *kid)},
    }
    memo: dict[str, Any] = {
        "distance": f"RMS difference of intensities in [0, 1] at {cfg.memo_size} x {cfg.memo_size}",
        "synthetic_to_nearest_real": quantiles(nn_dist),
    }
    if cfg.reference_split:
        ref_idx = split_indices(real, cfg.reference_split)
        f_ref, p_ref = store_features(model, spec, real, ref_idx, cfg.memo_size)
        report["n"][f"real_{cfg.reference_split}"] = int(ref_idx.size)
        report["fid"]["real_reference_vs_real"] = frechet_distance(f_ref, f_train)
        report["kid"]["real_reference_vs_real"] = kernel_distance(f_ref, f_train, rng, *kid)
        _, ref_dist = nearest_neighbours(p_ref, p_train)
        memo["reference_to_nearest_real"] = quantiles(ref_dist)
        memo["synthetic_closer_than_closest_reference"] = float(np.mean(nn_dist < ref_dist.min()))
        memo["synthetic_closer_than_reference_p5"] = float(np.mean(nn_dist < np.percentile(ref_dist, 5)))
    order = np.argsort(nn_dist)[: cfg.closest]
    memo["closest_pairs"] = [
        {"synthetic": int(synth_idx[i]), "real": int(train_idx[nn_idx[i]]), "distance": float(nn_dist[i])}
        for i in order
    ]
    report["memorisation"] = memo
    adherence = segmentation_rows(model, spec, synth, synth_idx, (1.0, 1.0))
    report["label_adherence"] = {
        name: {m: stats[m] for m in ("dice", "hd95")}
        for name, stats in summarize_rows(adherence, spec.schema.names).items()
    }
    if cfg.out_dir is not None:
        out = Path(cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "realism.json", json.dumps(report, indent=1) + "\n")
        write_csv(out / "label_adherence.csv", adherence)
        write_csv(
            out / "memorisation.csv",
            [
                {"synthetic": int(s), "nearest_real": int(train_idx[j]), "distance": float(d)}
                for s, j, d in zip(synth_idx, nn_idx, nn_dist, strict=True)
            ],
        )
        pair_sheet(out / "closest_pairs.png", p_syn[order], p_train[nn_idx[order]], cfg.memo_size)
    return report


def realism_lines(report: dict[str, Any]) -> list[str]:
    """A short human summary of :func:`evaluate_realism`'s report."""
    lines = [
        f"features      {report['feature_extractor']['what']} ({report['feature_extractor']['dims']} dims)"
    ]
    for key, value in report["fid"].items():
        mean, std = report["kid"][key]
        lines.append(f"{key:<28} FID {value:9.3f}   KID {mean:.4f} +- {std:.4f}")
    for name, stats in report["label_adherence"].items():
        d = stats["dice"]
        lines.append(f"label adherence {name:<14} Dice median {d['median']:.3f}, mean {d['mean']:.3f}")
    memo = report["memorisation"]
    q = memo["synthetic_to_nearest_real"]
    lines.append(f"nearest real (synthetic)     min {q['p0']:.4f}  p5 {q['p5']:.4f}  median {q['p50']:.4f}")
    if "reference_to_nearest_real" in memo:
        r = memo["reference_to_nearest_real"]
        lines.append(
            f"nearest real (unseen real)   min {r['p0']:.4f}  p5 {r['p5']:.4f}  median {r['p50']:.4f}"
        )
        lines.append(
            f"synthetic closer to a training image than any unseen real image: "
            f"{100 * memo['synthetic_closer_than_closest_reference']:.1f}%"
        )
    return lines


# -- against real pairs --------------------------------------------------------------------------
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
    checkpoint: str | Path,
    store: str,
    *,
    split: str = "test",
    seed: int = 0,
    grid: str | Path | None = None,
    grid_rows: int = 8,
    backend: str = "torch",
) -> RealismReport:
    """Generate from every label map of ``split`` in ``store`` (resized to the generator's size) with
    the generator at ``checkpoint`` (through :func:`~synthgen.inference.open_generator`; sample ``i``'s
    style from ``seeding.style_vectors(seed, ...)``) and compare with the real images, resized alike;
    optionally write a labels | real | generated grid."""
    gen = open_generator(checkpoint, backend=backend, threads=None)
    spec = gen.spec
    reader = StoreReader(store)
    spec.check_compatible(schema=reader.schema)
    data = load_training_pairs(reader, spec.image_size, split)
    values = np.array([0, *spec.schema.values], np.uint8)
    labels = values[data.labels.numpy()]
    real = from_unit(data.images.numpy(), spec.intensity, spec.image_dtype)[:, 0]
    rows_all = np.arange(len(labels))
    styles = seeding.style_vectors(seed, rows_all, spec.style_dim) if spec.style_dim else None
    fake = gen.images(labels, styles)
    data_range = spec.intensity.high - spec.intensity.low
    s = np.array([ssim(r, f, data_range) for r, f in zip(real, fake, strict=True)])
    p = np.array([psnr(r, f, data_range) for r, f in zip(real, fake, strict=True)])
    if grid is not None:
        rows = np.linspace(0, len(labels) - 1, min(grid_rows, len(labels))).astype(int)
        fakes = [fake[rows]]
        if spec.style_dim:
            fakes.append(gen.images(labels[rows], seeding.style_vectors(seed + 1, rows, spec.style_dim)))
        unit = [(f[:, None].astype(np.float32) - spec.intensity.low) / data_range * 2 - 1 for f in fakes]
        save_png(
            Path(grid), sample_grid(data.labels.numpy()[rows], data.images.numpy()[rows], unit, spec.schema)
        )
    return RealismReport(len(labels), s.mean(), s.std(), p.mean(), p.std(), wasserstein_1d(real, fake))
