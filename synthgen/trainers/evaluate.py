"""``synthgen evaluate seg`` and ``synthgen evaluate realism``.

Segmentation: a trained segmenter (``train-seg`` checkpoint) predicts every sample of a store (or of
its held-out ``test`` patients, :func:`~synthgen.trainers.splits.split_indices`) at its training size;
the logits are upsampled bilinearly to the store's own size and compared there with the stored labels
(:mod:`synthgen.trainers.metrics`). Distances are in mm where the spacing is known (``--spacing`` or the
store's ``spacing`` attribute), in pixels of the store otherwise. Outputs: ``per_sample.csv``,
``summary.json`` and ``summary.md`` (median, mean, 2.5-97.5 percentiles, bootstrap 95% interval of the
mean, per class and metric).

Realism (see :func:`evaluate_realism`): FID and KID on the mean-pooled bottleneck features of a
segmenter trained on the real domain (no ImageNet weights can be downloaded here, so an
Inception network is not an option: the features are a documented choice and figures are comparable
only between runs that use the same feature checkpoint), label adherence (Dice of that frozen
segmenter on the synthetic images against their own labels) and a memorisation check (nearest real
training image of every synthetic image).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from synthgen.engine.store import StoreReader
from synthgen.errors import ConfigError, SchemaError, StoreError
from synthgen.schemas.labels import label_lut
from synthgen.trainers.metrics import METRICS, class_metrics, summarize
from synthgen.trainers.seg_models import SegmenterSpec, load_segmenter
from synthgen.trainers.splits import split_indices

META_COLUMNS = ("patient", "view", "phase")


def read_samples(
    reader: StoreReader, indices: np.ndarray, batch: int = 64
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(indices, images float32 (n, C, H, W) in [0, 1], label values (n, H, W)) in store order, shard by
    shard (sequential reads), at most ``batch`` samples at a time."""
    lo, hi = reader.attrs.intensity.low, reader.attrs.intensity.high
    wanted = np.zeros(reader.layout.n, bool)
    wanted[indices] = True
    for k in reader.complete_shards:
        start, stop = reader.layout.shard_bounds(k)
        keep = np.flatnonzero(wanted[start:stop])
        if keep.size == 0:
            continue
        images, labels = reader.read_block(start + keep[0], start + keep[-1] + 1)
        images, labels = images[keep - keep[0]], labels[keep - keep[0]]
        images = ((images.astype(np.float32) - lo) / (hi - lo)).clip(0, 1)
        images = images.reshape(len(images), -1, *labels.shape[-2:])
        for a in range(0, len(keep), batch):
            yield start + keep[a : a + batch], images[a : a + batch], labels[a : a + batch]


def resize_images(images: np.ndarray, size: Sequence[int]) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images))
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, tuple(size), mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)


@torch.no_grad()
def predict(model: torch.nn.Module, spec: SegmenterSpec, images: np.ndarray) -> np.ndarray:
    """Class indices (n, H, W) at the images' own size: predicted at the model's size, logits upsampled."""
    device = next(model.parameters()).device
    logits = model(resize_images(images, spec.image_size).to(device))
    if tuple(logits.shape[-2:]) != images.shape[-2:]:
        logits = F.interpolate(logits, images.shape[-2:], mode="bilinear", align_corners=False)
    return logits.argmax(1).cpu().numpy().astype(np.uint8)


def check_store_for(spec: SegmenterSpec, reader: StoreReader) -> None:
    key = [(c.name, c.value) for c in spec.schema.classes]
    got = [(c.name, c.value) for c in reader.schema.classes]
    if key != got:
        raise SchemaError(
            f"Expected a store of the segmenter's schema {spec.schema.name!r} {key}. "
            f"Got {reader.schema.name!r} {got} in {reader.url} instead."
        )
    channels = 1 if len(reader.layout.image_shape) == 2 else reader.layout.image_shape[0]
    if channels != spec.channels:
        raise ConfigError(f"Expected {spec.channels}-channel images in {reader.url}. Got {channels}.")


def resolve_spacing(reader: StoreReader, spacing: Sequence[float] | None) -> tuple[tuple[float, float], str]:
    """(row, col) spacing and its unit: the given one, else the store's attribute (mm), else pixels."""
    if spacing is not None:
        return (float(spacing[0]), float(spacing[1])), "mm"
    if reader.attrs.spacing is not None:
        return (float(reader.attrs.spacing[-2]), float(reader.attrs.spacing[-1])), "mm"
    return (1.0, 1.0), "px"


def read_meta_column(reader: StoreReader, name: str) -> np.ndarray:
    """``meta/<name>`` over the whole store (-1 where a shard is not complete)."""
    out = np.full(reader.layout.n, -1, np.int64)
    for k in reader.complete_shards:
        start, stop = reader.layout.shard_bounds(k)
        out[start:stop] = reader.read_meta(name, start, stop)
    return out


@dataclass(frozen=True)
class SegEvaluation:
    rows: list[dict[str, Any]]  # one per sample
    summary: dict[str, dict[str, dict[str, float]]]  # class -> metric -> statistic
    unit: str
    n: int


def segmentation_rows(
    model: torch.nn.Module,
    spec: SegmenterSpec,
    reader: StoreReader,
    indices: np.ndarray,
    spacing: tuple[float, float],
) -> list[dict[str, Any]]:
    """One row per sample: store index, patient/view/phase where stored, every metric of every class."""
    check_store_for(spec, reader)
    lut = label_lut(spec.schema)
    classes = {name: i for i, name in enumerate(spec.schema.names, start=1)}
    meta = {m: read_meta_column(reader, m) for m in META_COLUMNS if m in {f.name for f in reader.layout.meta}}
    rows = []
    for idx, images, labels in read_samples(reader, indices):
        spec.schema.check_labels(labels, f"{reader.url} samples {idx[0]}..{idx[-1]}")
        pred = predict(model, spec, images)
        for i, p, r in zip(idx, pred, lut[labels], strict=True):
            row: dict[str, Any] = {"index": int(i)} | {m: int(v[i]) for m, v in meta.items()}
            for name, values in class_metrics(p, r, classes, spacing).items():
                row |= {f"{name}_{k}": v for k, v in values.items()}
            rows.append(row)
    return rows


def summarize_rows(
    rows: list[dict[str, Any]], names: Sequence[str]
) -> dict[str, dict[str, dict[str, float]]]:
    return {n: {m: summarize([r[f"{n}_{m}"] for r in rows]) for m in METRICS} for n in names}


def evaluate_segmentation(
    checkpoint: str | Path,
    store: str,
    out_dir: str | Path | None = None,
    *,
    split: str = "all",
    spacing: Sequence[float] | None = None,
    limit: int | None = None,
) -> SegEvaluation:
    """Score a segmenter checkpoint on ``split`` of ``store``; write the CSV and summaries to ``out_dir``."""
    model, spec = load_segmenter(checkpoint)
    reader = StoreReader(store)
    indices = split_indices(reader, split)[:limit]
    if indices.size == 0:
        raise StoreError(f"Expected samples in split {split!r} of {store}. Found none.")
    sp, unit = resolve_spacing(reader, spacing)
    rows = segmentation_rows(model, spec, reader, indices, sp)
    result = SegEvaluation(rows, summarize_rows(rows, spec.schema.names), unit, len(rows))
    if out_dir is not None:
        write_seg_outputs(
            Path(out_dir), result, {"checkpoint": str(checkpoint), "store": store, "split": split}
        )
    return result


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)


def seg_table(result: SegEvaluation) -> str:
    """Markdown: one row per class, median [2.5, 97.5 percentile] and mean of each metric."""
    head = "| class | " + " | ".join(METRICS) + " |"
    lines = [head, "|" + " --- |" * (len(METRICS) + 1)]
    for name, stats in result.summary.items():
        cells = []
        for m in METRICS:
            s = stats[m]
            undefined = f", {s['undefined']} undefined" if s["undefined"] else ""
            cells.append(
                f"{s['median']:.3f} [{s['p2.5']:.3f}, {s['p97.5']:.3f}] (mean {s['mean']:.3f}{undefined})"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    note = f"\n{result.n} samples; median [2.5, 97.5 percentile] (mean); distances in {result.unit}."
    return "\n".join(lines) + note


def write_seg_outputs(out: Path, result: SegEvaluation, context: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "per_sample.csv", result.rows)
    payload = context | {"n": result.n, "distance_unit": result.unit, "summary": result.summary}
    (out / "summary.json").write_text(json.dumps(payload, indent=1) + "\n")
    (out / "summary.md").write_text(seg_table(result) + "\n")


# -- realism ------------------------------------------------------------------------------------
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
    """(network features (n, D), images at memo_size x memo_size flattened (n, C * memo_size**2)) of samples."""
    feats, pixels = [], []
    for _, images, _ in read_samples(reader, indices):
        feats.append(model.features(resize_images(images, spec.image_size)).double().numpy())
        pixels.append(resize_images(images, (memo_size, memo_size)).reshape(len(images), -1).numpy())
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


def evaluate_realism(cfg: RealismConfig) -> dict[str, Any]:
    """FID, KID, label adherence and the memorisation check; writes realism.json and friends to out_dir."""
    model, spec = load_segmenter(cfg.segmenter)
    synth, real = StoreReader(cfg.synth), StoreReader(cfg.real)
    for reader in (synth, real):
        check_store_for(spec, reader)
    synth_idx = synth.available_indices()[: cfg.limit]
    train_idx = split_indices(real, cfg.real_split)
    if synth_idx.size < 2 or train_idx.size < 2:
        raise StoreError(
            f"Expected >= 2 samples in {cfg.synth} and in split {cfg.real_split!r} of {cfg.real}."
        )
    f_syn, p_syn = store_features(model, spec, synth, synth_idx, cfg.memo_size)
    f_train, p_train = store_features(model, spec, real, train_idx, cfg.memo_size)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0xF1D]))
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
        (out / "realism.json").write_text(json.dumps(report, indent=1) + "\n")
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
