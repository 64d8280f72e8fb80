"""``synthgen evaluate utility``: the usefulness table (Rançon et al.; Amirrajab et al.'s data reduction).

Protocol, one budget for every arm (same network, size, steps, batch, seed):

1. Split the real store by patient. The held-out test patients are those of
   :func:`~synthgen.storage.splits.split_indices` (``test``: a fixed tenth, never used for the GAN or
   any segmenter). Of the other patients a seeded ``val_fraction`` validates (best-checkpoint
   selection) and the rest form the real training pool; the 10% and 25% subsets are the first patients
   of one seeded permutation of the pool, so the 10% subset lies inside the 25% subset. Each split is
   written as its own store under ``OUT/stores``.
2. Train one segmenter per arm (``train-seg``, validation on the real validation store):
   real only; synthetic only; real + synthetic; 10% / 25% of the real patients + synthetic; and,
   as the reference the reduction arms are compared with, 10% / 25% of the real patients alone.
   Mixed arms draw ``synth_share`` of each batch from the synthetic store.
3. Evaluate every best checkpoint on the real test store (``evaluate seg``): Dice, HD95, ASSD per class.

Arms already evaluated under ``OUT/arms`` are reused, so an interrupted run continues where it stopped.
The table (``utility.md``) and every figure (``utility.json``) go to ``OUT``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthgen import seeding
from synthgen.errors import ConfigError
from synthgen.evaluation.segmentation import evaluate_segmentation, seg_table
from synthgen.models import SegModelConfig
from synthgen.schemas import StoreAttrs, StoreLayout
from synthgen.storage import (
    StoreReader,
    StoreWriter,
    atomic_write,
    split_indices,
    store_exists,
    store_patients,
)
from synthgen.trainers import SegTrainConfig, seg_augment, train_seg

ARMS = ("real", "synthetic", "real+synthetic", "real10+synthetic", "real25+synthetic", "real10", "real25")
REAL_ARMS = ("real", "real10", "real25")
UTILITY_AUGMENT = "light"  # every arm's augmentation unless one is given (bench/results/utility.md)
TABLE_METRICS = (("dice", "Dice"), ("hd95", "HD95"), ("assd", "ASSD"))


@dataclass(frozen=True)
class UtilityConfig:
    real: str  # the real store (synthgen ingest of CAMUS)
    out_dir: str
    synth: str | None = None  # a store made by synthgen build-dataset; None: real arms only
    arms: tuple[str, ...] = ()  # default: every arm the stores allow
    fractions: tuple[float, float] = (0.10, 0.25)
    val_fraction: float = 0.10
    synth_share: float = 0.5
    train: SegTrainConfig = field(
        default_factory=lambda: SegTrainConfig(
            train="", val="", out_dir="", steps=1000, val_every=100, augment=seg_augment(UTILITY_AUGMENT)
        )
    )

    def __post_init__(self) -> None:
        unknown = sorted(set(self.arms) - set(ARMS))
        if unknown:
            raise ConfigError(f"Expected arms from {list(ARMS)}. Got unknown {unknown}.")
        needs_synth = sorted(set(self.arms) - set(REAL_ARMS))
        if needs_synth and not self.synth:
            raise ConfigError(f"Expected --synth for arms {needs_synth}. Got no synthetic store.")
        if not 0 < self.synth_share < 1 or not 0 < self.val_fraction < 1:
            raise ConfigError(
                f"Expected synth_share and val_fraction in (0, 1). Got {self.synth_share}, {self.val_fraction}."
            )
        if not all(0 < f < 1 for f in self.fractions):
            raise ConfigError(f"Expected reduction fractions in (0, 1). Got {self.fractions}.")

    @property
    def chosen_arms(self) -> tuple[str, ...]:
        return self.arms or (ARMS if self.synth else REAL_ARMS)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return out | {
            "arms": list(self.chosen_arms),
            "fractions": list(self.fractions),
            "train": self.train.to_dict(),
        }


def patient_splits(reader: StoreReader, cfg: UtilityConfig) -> dict[str, np.ndarray]:
    """Sample indices of every split: test, val, train (the pool), train10, train25."""
    indices = reader.available_indices()
    patients = store_patients(reader)
    test = split_indices(reader, "test")
    pool_patients = np.unique(patients[~np.isin(indices, test)])
    rng = seeding.rng(cfg.train.seed, seeding.UTILITY_SPLIT)
    order = rng.permutation(pool_patients)
    n_val = max(1, round(cfg.val_fraction * len(order)))
    val_p, train_p = order[:n_val], order[n_val:]
    out = {
        "test": test,
        "val": indices[np.isin(patients, val_p)],
        "train": indices[np.isin(patients, train_p)],
    }
    for name, f in zip(("train10", "train25"), cfg.fractions, strict=True):
        out[name] = indices[np.isin(patients, train_p[: max(1, round(f * len(train_p)))])]
    return out


def write_subset(reader: StoreReader, url: str, indices: np.ndarray, note: Mapping[str, Any]) -> str:
    """A new store holding samples ``indices`` of ``reader`` (same layout, schema, meta), ascending."""
    indices = np.unique(indices)
    src = reader.layout
    layout = StoreLayout(
        len(indices), src.image_shape, src.image_dtype, src.shard_size, src.chunk_size, src.meta
    )
    provenance = dict(reader.attrs.provenance) | {"subset_of": reader.url, "parent_indices": indices.tolist()}
    attrs = StoreAttrs(
        layout, reader.schema, reader.attrs.intensity, reader.attrs.spacing, provenance | dict(note)
    )
    images, labels, meta = [], [], {m.name: [] for m in src.meta}
    for k in reader.complete_shards:  # whole-shard reads, then pick (per-sample reads are slow)
        start, stop = src.shard_bounds(k)
        rows = indices[(indices >= start) & (indices < stop)] - start
        if rows.size:
            im, lab = reader.read_shard(k)
            images.append(im[rows])
            labels.append(lab[rows])
            for name, parts in meta.items():
                parts.append(reader.read_meta(name, start, stop)[rows])
    images, labels = np.concatenate(images), np.concatenate(labels)
    meta = {name: np.concatenate(parts) for name, parts in meta.items()}
    writer = StoreWriter.create(url, attrs, overwrite=True)
    digests = {}
    for k in range(layout.num_shards):
        a, b = layout.shard_bounds(k)
        digests[k] = writer.write_shard(
            k, images[a:b], labels[a:b], {name: v[a:b] for name, v in meta.items()}
        )
    writer.mark_complete(digests, digests=digests)
    return url


def prepare_stores(cfg: UtilityConfig) -> dict[str, str]:
    """Write the split stores under OUT/stores (reused when present and of the same split)."""
    reader = StoreReader(cfg.real)
    stores = Path(cfg.out_dir) / "stores"
    urls = {}
    for name, indices in patient_splits(reader, cfg).items():
        url = str(stores / f"{name}.zarr")
        if store_exists(url):
            prov = StoreReader(url).attrs.provenance
            if prov.get("parent_indices") == indices.tolist() and prov.get("subset_of") == reader.url:
                urls[name] = url
                continue
        urls[name] = write_subset(reader, url, indices, {"tool": "synthgen evaluate utility", "subset": name})
    return urls


def arm_real_store(arm: str, urls: Mapping[str, str]) -> str | None:
    """The real training store of an arm (None for synthetic only)."""
    base = arm.partition("+")[0]
    return {"real": urls["train"], "real10": urls["train10"], "real25": urls["train25"]}.get(base)


def arm_mix(arm: str, urls: Mapping[str, str], cfg: UtilityConfig) -> str:
    """The train-seg store mix of an arm."""
    real = arm_real_store(arm, urls)
    if real is None:
        return str(cfg.synth)
    if "+" not in arm:
        return real
    return f"{real}:{1 - cfg.synth_share},{cfg.synth}:{cfg.synth_share}"


def _read_summary(path: Path) -> dict[str, Any]:
    """An arm's summary, or {} where there is none (or a torn one: the arm is then run again)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_arm(arm: str, urls: Mapping[str, str], cfg: UtilityConfig, progress: bool) -> dict[str, Any]:
    folder = Path(cfg.out_dir) / "arms" / arm.replace("+", "_plus_")
    done = folder / "eval" / "summary.json"
    # the split stores are already disjoint by patient: each is read whole (split 'all', val ':all')
    train_cfg = dataclasses.replace(
        cfg.train, train=arm_mix(arm, urls, cfg), val=f"{urls['val']}:all", split="all", out_dir=str(folder)
    )
    config_json = json.loads(json.dumps(train_cfg.to_dict()))
    previous = _read_summary(done)
    if previous.get("train_config") == config_json:
        return previous
    result = train_seg(train_cfg, progress=progress, overwrite=True)
    evaluation = evaluate_segmentation(result.best, urls["test"], folder / "eval")
    real = arm_real_store(arm, urls)
    payload = _read_summary(done) | {
        "arm": arm,
        "train_config": config_json,
        "best_step": result.best_step,
        "val": result.best_metrics,
        "train_seconds": result.seconds,
        "real_train_samples": 0 if real is None else StoreReader(real).num_available,
        "test_table": seg_table(evaluation),
    }
    atomic_write(done, json.dumps(payload, indent=1) + "\n")
    return payload


def _augment_level(result: Mapping[str, Any]) -> str:
    """The augmentation level an arm trained with, from its recorded train config."""
    augment = result.get("train_config", {}).get("augment")
    if augment is None:
        return "none"
    return str(augment.get("level", "light")) if isinstance(augment, Mapping) else "light"


def utility_table(results: Mapping[str, Mapping[str, Any]], class_names: Sequence[str]) -> str:
    """Markdown: one row per arm; per class mean Dice, median HD95 and median ASSD on the test store."""
    unit = next(iter(results.values()))["distance_unit"] if results else "px"
    head = ["arm", "augmentation", "real train samples"]
    for name in class_names:
        head += [f"{name} Dice", f"{name} HD95", f"{name} ASSD"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for arm, r in results.items():
        cells = [arm, _augment_level(r), str(r["real_train_samples"])]
        for name in class_names:
            s = r["summary"][name]
            cells += [f"{s['dice']['mean']:.3f}", f"{s['hd95']['median']:.2f}", f"{s['assd']['median']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    n = next(iter(results.values()))["n"] if results else 0
    return "\n".join(lines) + f"\n\nTest store: {n} samples. Dice: mean; HD95 and ASSD: median, in {unit}."


def run_utility(cfg: UtilityConfig, *, progress: bool = True) -> tuple[str, dict[str, Any]]:
    """Run every chosen arm; returns (markdown table, JSON report) and writes both to OUT."""
    urls = prepare_stores(cfg)
    schema = StoreReader(cfg.real).schema
    results = {arm: run_arm(arm, urls, cfg, progress) for arm in cfg.chosen_arms}
    table = utility_table(results, schema.names)
    report = {"config": cfg.to_dict(), "stores": urls, "arms": results}
    out = Path(cfg.out_dir)
    atomic_write(out / "utility.json", json.dumps(report, indent=1) + "\n")
    atomic_write(out / "utility.md", table + "\n")
    return table, report


def default_train_config(augment: str = UTILITY_AUGMENT, **overrides: Any) -> SegTrainConfig:
    """The CPU budget of the README table: U-Net width 16, depth 4, 64 x 64, batch 16, 1000 steps, and
    the ``augment`` level (``light`` unless given)."""
    base = {"train": "", "val": "", "out_dir": "", "model": SegModelConfig("unet", 16, 4), "device": "cpu"}
    base["augment"] = seg_augment(augment)
    return SegTrainConfig(**(base | {k: v for k, v in overrides.items() if v is not None}))
