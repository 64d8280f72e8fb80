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

A store of another label schema is scored on the classes it shares with the segmenter
(:func:`~synthgen.schemas.labels.match_classes`: by name, then by alias, or pairs given by hand); the
result names the scored classes, their names in the store, and the classes skipped on either side. A
store sharing no class is refused. The images are normalised per image as the segmenter's training
was (its spec's ``train_config["normalise"]``; none for checkpoints that predate the option), at the
segmenter's input size; another choice is applied with a warning.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthgen.errors import CheckpointError, ConfigError, SchemaError, StoreError
from synthgen.evaluation.metrics import METRICS, class_metrics, summarize
from synthgen.evaluation.shift import AcquisitionShift
from synthgen.kernels import resize_images
from synthgen.models import SegmenterSpec, load_segmenter
from synthgen.schemas import ClassMatch, label_lut, match_classes, remap_table
from synthgen.storage import (
    NORMALISATIONS,
    RunSplits,
    StoreReader,
    StoreSplit,
    atomic_write,
    check_normalise,
    normalise_images,
    select_split,
)

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


def model_input(images: np.ndarray, size: Sequence[int], normalise: str = "none") -> torch.Tensor:
    """Images in [0, 1] (n, C, H, W) -> a tensor at the segmenter's input size, each image then
    normalised by ``normalise`` (:func:`~synthgen.storage.loader.normalise_images`), as in training."""
    resized = resize_images(images.astype(np.float32), tuple(size))
    if normalise != "none":
        resized = normalise_images(resized, normalise)
    return torch.from_numpy(np.ascontiguousarray(resized))


@torch.no_grad()
def predict(
    model: torch.nn.Module, spec: SegmenterSpec, images: np.ndarray, normalise: str = "none"
) -> np.ndarray:
    """Class indices (n, H, W) at the images' own size: predicted at the model's size (images
    normalised by ``normalise`` there), logits resized."""
    device = next(model.parameters()).device
    logits = model(model_input(images, spec.image_size, normalise).to(device)).float().cpu().numpy()
    return resize_images(logits, images.shape[-2:]).argmax(1).astype(np.uint8)


def trained_normalisation(spec: SegmenterSpec) -> str:
    """The per-image normalisation the segmenter trained with (``none`` where its spec predates it)."""
    method = spec.train_config.get("normalise", "none")
    if method not in NORMALISATIONS:
        raise CheckpointError(
            f"Expected a normalisation in {NORMALISATIONS} in the segmenter's train_config. "
            f"Got {method!r} instead."
        )
    return method


def check_channels(spec: SegmenterSpec, reader: StoreReader) -> None:
    channels = 1 if len(reader.layout.image_shape) == 2 else reader.layout.image_shape[0]
    if channels != spec.channels:
        raise ConfigError(f"Expected {spec.channels}-channel images in {reader.url}. Got {channels}.")


def check_store_for(spec: SegmenterSpec, reader: StoreReader) -> None:
    """A store of exactly the segmenter's schema (names and values) and channels (realism needs it)."""
    key = [(c.name, c.value) for c in spec.schema.classes]
    got = [(c.name, c.value) for c in reader.schema.classes]
    if key != got:
        raise SchemaError(
            f"Expected a store of the segmenter's schema {spec.schema.name!r} {key}. "
            f"Got {reader.schema.name!r} {got} in {reader.url} instead."
        )
    check_channels(spec, reader)


def shared_classes(
    spec: SegmenterSpec, reader: StoreReader, aliases: Mapping[str, str] | None = None
) -> ClassMatch:
    """The classes the segmenter and the store share (``aliases``: store class -> segmenter class,
    by hand); a :class:`SchemaError` where they share none, or the channels differ."""
    match = match_classes(spec.schema, reader.schema, aliases)
    if not match.pairs:
        raise SchemaError(
            f"Expected a store sharing a class with the segmenter's schema {spec.schema.name!r} "
            f"{list(spec.schema.names)}. Got {reader.schema.name!r} {list(reader.schema.names)} in "
            f"{reader.url}, none the same by name or alias: pair them with --alias STORE_CLASS=SEG_CLASS."
        )
    check_channels(spec, reader)
    return match


def classes_to_dict(match: ClassMatch) -> dict[str, Any]:
    return {
        "scored": [{"segmenter": p.own, "store": p.other, "matched_by": p.by} for p in match.pairs],
        "skipped_segmenter_only": list(match.own_only),
        "skipped_store_only": list(match.other_only),
    }


def classes_line(match: ClassMatch) -> str:
    """One line: the classes scored (segmenter name, store name, how matched) and those skipped."""
    how = {"alias": "by alias", "given": "by hand"}
    scored = ", ".join(
        p.own if p.by == "name" else f"{p.own} (store {p.other!r}, {how[p.by]})" for p in match.pairs
    )
    skipped = [f"{n} (segmenter only)" for n in match.own_only]
    skipped += [f"{n} (store only)" for n in match.other_only]
    return f"Scored classes: {scored}; skipped: {', '.join(skipped) or 'none'}."


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
    classes: ClassMatch | None = None  # the classes scored and skipped
    normalise: str = "none"  # the per-image normalisation applied
    trained_normalise: str = "none"  # the one the segmenter trained with

    @property
    def normalise_warning(self) -> str:
        if self.normalise == self.trained_normalise:
            return ""
        return (
            f"Normalising images by {self.normalise!r}, although the segmenter trained with "
            f"{self.trained_normalise!r}: these scores are not what it does on the images it expects."
        )


def segmentation_rows(
    model: torch.nn.Module,
    spec: SegmenterSpec,
    reader: StoreReader,
    indices: np.ndarray,
    spacing: tuple[float, float],
    *,
    classes: ClassMatch | None = None,
    normalise: str | None = None,
    shift: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """One row per sample: store index, patient/view/phase where stored, every metric of every class
    shared with the store (``classes``, default :func:`shared_classes`), named as the segmenter names
    it. Images are normalised by ``normalise`` (default: as the segmenter trained); before that,
    ``shift(images, store indices)`` changes them (an acquisition shift, :mod:`synthgen.evaluation.shift`)."""
    classes = classes if classes is not None else shared_classes(spec, reader)
    normalise = trained_normalisation(spec) if normalise is None else check_normalise(normalise)
    # store label value -> the segmenter's class index (classes the segmenter lacks: background)
    lut = label_lut(spec.schema)[remap_table(reader.schema, spec.schema, aliases=classes.aliases())]
    scored = {name: spec.schema.names.index(name) + 1 for name in classes.names}
    meta = {m: read_meta_column(reader, m) for m in META_COLUMNS if m in {f.name for f in reader.layout.meta}}
    rows = []
    for idx, images, labels in read_samples(reader, indices):
        reader.schema.check_labels(labels, f"{reader.url} samples {idx[0]}..{idx[-1]}")
        if shift is not None:
            images = shift(images, idx)
        pred = predict(model, spec, images, normalise)
        for i, p, r in zip(idx, pred, lut[labels], strict=True):
            row: dict[str, Any] = {"index": int(i)} | {m: int(v[i]) for m, v in meta.items()}
            for name, values in class_metrics(p, r, scored, spacing).items():
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
    normalise: str | None = None,
    aliases: Mapping[str, str] | None = None,
    shift: AcquisitionShift | None = None,
) -> SegEvaluation:
    """Score a segmenter checkpoint on ``split`` of ``store``; write the CSV and summaries to ``out_dir``.
    With ``strict``, evaluated samples the segmenter trained or validated on are an error. The classes
    scored are those shared with the store (``aliases``: store class -> segmenter class, by hand);
    ``normalise`` (default: what the segmenter trained with) normalises each image; ``shift`` first
    changes every image by a fixed acquisition shift."""
    model, spec = load_segmenter(checkpoint)
    reader = StoreReader(store)
    classes = shared_classes(spec, reader, aliases)
    trained = trained_normalisation(spec)
    applied = trained if normalise is None else check_normalise(normalise)
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
    rows = segmentation_rows(
        model, spec, reader, chosen.indices, sp, classes=classes, normalise=applied, shift=shift
    )
    summary = summarize_rows(rows, classes.names)
    result = SegEvaluation(rows, summary, unit, len(rows), seen, classes, applied, trained)
    if out_dir is not None:
        context = {"checkpoint": str(checkpoint), "store": store, "split": split}
        context |= {"shift": shift.to_dict()} if shift is not None else {}
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
    if result.classes is not None:
        payload["classes"] = classes_to_dict(result.classes)
    payload["normalise"] = {
        "applied": result.normalise,
        "trained": result.trained_normalise,
        "warning": result.normalise_warning or None,
    }
    payload |= {"summary": result.summary}
    atomic_write(out / "summary.json", json.dumps(payload, indent=1) + "\n")
    note = f"\n\n{classes_line(result.classes)}" if result.classes is not None else ""
    atomic_write(out / "summary.md", seg_table(result) + note + "\n")
