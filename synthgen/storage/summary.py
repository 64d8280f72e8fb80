"""What ``synthgen inspect`` prints: the shape of a store, its schema, class frequencies, provenance.

Class frequencies are pixel fractions over complete shards, read one shard at a time. For a store of
more than ``max_shards`` complete shards, an evenly spread subset of that many shards is read, and
the summary says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from synthgen.schemas import LabelSchema, StoreAttrs

MAX_SHARDS = 64


@dataclass(frozen=True)
class StoreSummary:
    url: str
    attrs: StoreAttrs
    available: int
    counted_shards: tuple[int, ...]
    counted_samples: int
    pixel_counts: tuple[int, ...]  # (256,) per label value over the counted shards
    image_min: float | None
    image_max: float | None
    image_mean: float | None
    non_finite: int = 0  # NaN or infinite image values over the counted shards
    flagged: int = 0  # samples the gate gave up on (meta/plausibility != 0), over the counted shards

    @property
    def schema(self) -> LabelSchema:
        return self.attrs.schema

    def class_fractions(self) -> dict[int, float]:
        """Pixel fraction of every value that occurs or that the schema defines."""
        counts = np.asarray(self.pixel_counts, np.float64)
        total = counts.sum()
        values = sorted({0, *self.schema.values} | set(np.flatnonzero(counts).tolist()))
        return {v: float(counts[v] / total) if total else 0.0 for v in values}


def summarize_store(reader, max_shards: int = MAX_SHARDS) -> StoreSummary:
    """Read the complete shards of ``reader`` (or an even subset of ``max_shards``) and count."""
    complete = np.asarray(reader.complete_shards, np.int64)
    if len(complete) > max_shards:
        complete = complete[np.linspace(0, len(complete) - 1, max_shards).round().astype(np.int64)]
    counts = np.zeros(256, np.int64)
    lo, hi, total, pixels, samples, non_finite = np.inf, -np.inf, 0.0, 0, 0, 0
    for k in complete.tolist():
        images, labels = reader.read_shard(k)
        counts += np.bincount(labels.ravel(), minlength=256)
        finite = images[np.isfinite(images)] if images.dtype.kind == "f" else images
        non_finite += images.size - finite.size
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
            total += float(finite.sum(dtype=np.float64))
            pixels += finite.size
        samples += len(labels)
    flagged = 0
    if "plausibility" in {m.name for m in reader.layout.meta}:
        for k in complete.tolist():
            flagged += int(np.count_nonzero(reader.read_meta("plausibility", *reader.layout.shard_bounds(k))))
    return StoreSummary(
        url=reader.url,
        attrs=reader.attrs,
        available=reader.num_available,
        counted_shards=tuple(complete.tolist()),
        counted_samples=samples,
        pixel_counts=tuple(counts.tolist()),
        image_min=lo if pixels else None,
        image_max=hi if pixels else None,
        image_mean=total / pixels if pixels else None,
        non_finite=non_finite,
        flagged=flagged,
    )


def _short(value: Any, width: int = 100) -> str:
    if isinstance(value, list) and len(value) > 4:
        return f"[{len(value)} items] {value[0]!r}, {value[1]!r}, ..., {value[-1]!r}"
    text = json.dumps(value) if isinstance(value, dict | list) else str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def format_summary(s: StoreSummary) -> str:
    """A human-readable, several-line summary."""
    a, lay = s.attrs, s.attrs.layout
    lines = [
        f"store        {s.url}",
        f"format       synthgen v{a.format_version}, Zarr 3, sharded",
        f"samples      {lay.n} ({s.available} available in complete shards)",
        f"shards       {len(a.complete_shards)} of {lay.num_shards} complete, {lay.shard_size} samples each, "
        f"chunks of {lay.chunk_size}",
        f"images       {tuple(lay.image_shape)} {lay.image_dtype}; intensity [{a.intensity.low:g}, "
        f"{a.intensity.high:g}]: {a.intensity.description}",
        f"labels       {tuple(lay.label_shape)} uint8",
        f"spacing      {a.spacing if a.spacing is not None else 'not recorded'}",
        f"schema       {s.schema.name}: {s.schema.description}",
    ]
    lines += [f"  {0:>3}  background"] + [f"  {c.value:>3}  {c.name}" for c in s.schema.classes]
    if s.counted_shards:
        how = (
            "all complete shards"
            if len(s.counted_shards) == len(a.complete_shards)
            else (f"{len(s.counted_shards)} of {len(a.complete_shards)} complete shards, evenly spread")
        )
        lines.append(f"class pixel fractions over {s.counted_samples} samples ({how}):")
        names = {0: "background", **{c.value: c.name for c in s.schema.classes}}
        for v, frac in s.class_fractions().items():
            name = names.get(v, "NOT IN SCHEMA")
            lines.append(f"  {v:>3}  {name:<24} {frac:9.4%}")
        if s.image_min is not None:
            lines.append(f"image values {s.image_min:g} .. {s.image_max:g}, mean {s.image_mean:.4g}")
        if s.non_finite:
            lines.append(
                f"WARNING      {s.non_finite} NaN or infinite image value(s): training on them stops"
            )
    else:
        lines.append("class pixel fractions: no complete shards to count")
    if s.flagged:
        lines.append(
            f"gate         {s.flagged} sample(s) kept although the gate rejected every draw (meta/plausibility, "
            "over the counted shards); loaders skip them"
        )
    digests = len(set(a.shard_digests) & set(a.complete_shards))
    lines.append(
        f"integrity    digests of {digests} of {len(a.complete_shards)} complete shards ('synthgen verify')"
    )
    if lay.meta:
        lines.append("metadata arrays (meta/):")
        lines += [
            f"  {m.name:<13} {m.dtype}{list(m.shape) if m.shape else ''}  {m.description}" for m in lay.meta
        ]
    lines.append("provenance:")
    lines += [f"  {k:<13} {_short(v)}" for k, v in a.provenance.items()]
    return "\n".join(lines)
