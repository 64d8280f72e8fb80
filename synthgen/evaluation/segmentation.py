"""``synthgen evaluate seg``: a trained segmenter (``train-seg`` checkpoint) predicts every sample of a store (or of
its held-out ``test`` patients, :func:`~synthgen.storage.splits.split_indices`) at its training size;
the logits are upsampled bilinearly to the store's own size and compared there with the stored labels
(:mod:`synthgen.evaluation.metrics`). A store without patient metadata is split by sample index (the same
rule, :func:`~synthgen.storage.splits.select_split`). Where the checkpoint's ``splits.json`` (written by
``train-seg``) shows that it trained or validated on evaluated samples (the same patients of the same
store, or of a store cut from the same one), the result says so (``seen``, ``summary.json``), and
``strict`` refuses. Distances are in mm where the spacing is known (``--spacing`` or the
store's ``spacing`` attribute), in pixels of the store otherwise. Outputs: ``per_sample.csv``,
``summary.json`` and ``summary.md`` (median, mean, 2.5-97.5 percentiles, bootstrap 95% interval of the
mean, per class and metric).
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

from synthgen.errors import ConfigError, SchemaError, StoreError
from synthgen.evaluation.metrics import METRICS, class_metrics, summarize
from synthgen.kernels import resize_images
from synthgen.models import SegmenterSpec, load_segmenter
from synthgen.schemas import label_lut
from synthgen.storage import RunSplits, StoreReader, StoreSplit, atomic_write, select_split

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


def model_input(images: np.ndarray, size: Sequence[int]) -> torch.Tensor:
    """Images in [0, 1] (n, C, H, W) -> a tensor at the segmenter's input size."""
    return torch.from_numpy(np.ascontiguousarray(resize_images(images.astype(np.float32), tuple(size))))


@torch.no_grad()
def predict(model: torch.nn.Module, spec: SegmenterSpec, images: np.ndarray) -> np.ndarray:
    """Class indices (n, H, W) at the images' own size: predicted at the model's size, logits resized."""
    device = next(model.parameters()).device
    logits = model(model_input(images, spec.image_size).to(device)).float().cpu().numpy()
    return resize_images(logits, images.shape[-2:]).argmax(1).astype(np.uint8)


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
class SeenSamples:
    """Evaluated samples the segmenter trained or validated on, by its checkpoint's ``splits.json``."""

    trained: int
    validated: int
    message: str  # which were seen, one line; "" where none

    @property
    def warning(self) -> str:
        return f"{self.message}: these scores are not held out." if self.message else ""

    def to_dict(self) -> dict[str, Any]:
        return {"trained": self.trained, "validated": self.validated, "warning": self.warning or None}


def seen_samples(checkpoint: str | Path, spec: SegmenterSpec, evaluated: StoreSplit) -> SeenSamples | None:
    """Which of the ``evaluated`` samples the segmenter at ``checkpoint`` trained or validated on;
    None where the checkpoint records neither its splits nor its stores."""
    record = RunSplits.read(checkpoint, spec.train_config)
    if record is None:
        return None
    trained, validated = record.overlap(evaluated)
    seen = trained | validated
    if not seen.any():
        return SeenSamples(0, 0, "")
    parts = [f"trained on {evaluated.describe(trained)}"] * bool(trained.any())
    parts += [f"validated on {evaluated.describe(validated)}"] * bool(validated.any())
    message = (
        f"{int(seen.sum())} of the {evaluated.n} evaluated samples of {evaluated.url} (split "
        f"{evaluated.split!r}) were seen by the segmenter ({'; '.join(parts)})"
    )
    return SeenSamples(int(trained.sum()), int(validated.sum()), message)


@dataclass(frozen=True)
class SegEvaluation:
    rows: list[dict[str, Any]]  # one per sample
    summary: dict[str, dict[str, dict[str, float]]]  # class -> metric -> statistic
    unit: str
    n: int
    seen: SeenSamples | None = None  # None: the checkpoint records no training data


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
    strict: bool = False,
) -> SegEvaluation:
    """Score a segmenter checkpoint on ``split`` of ``store``; write the CSV and summaries to ``out_dir``.
    With ``strict``, evaluated samples the segmenter trained or validated on are an error."""
    model, spec = load_segmenter(checkpoint)
    reader = StoreReader(store)
    chosen = select_split(reader, split).head(limit)
    if chosen.n == 0:
        raise StoreError(f"Expected samples in split {split!r} of {store}. Found none.")
    seen = seen_samples(checkpoint, spec, chosen)
    if strict and seen is not None and seen.message:
        raise ConfigError(
            f"Expected samples the segmenter never saw (--strict). Got {seen.message}: evaluate "
            "--split test, or another store."
        )
    sp, unit = resolve_spacing(reader, spacing)
    rows = segmentation_rows(model, spec, reader, chosen.indices, sp)
    result = SegEvaluation(rows, summarize_rows(rows, spec.schema.names), unit, len(rows), seen)
    if out_dir is not None:
        context = {"checkpoint": str(checkpoint), "store": store, "split": split}
        write_seg_outputs(Path(out_dir), result, context)
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
    seen = result.seen.to_dict() if result.seen is not None else None
    payload = context | {"n": result.n, "distance_unit": result.unit, "seen_by_segmenter": seen}
    payload |= {"summary": result.summary}
    atomic_write(out / "summary.json", json.dumps(payload, indent=1) + "\n")
    atomic_write(out / "summary.md", seg_table(result) + "\n")
