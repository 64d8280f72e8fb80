"""``synthgen evaluate utility``: the usefulness table (Rançon et al.; Amirrajab et al.'s data reduction).

Protocol, one budget for every arm (same network, size, steps, batch), over several training seeds:

1. Split the real store by patient. The held-out test patients are those of
   :func:`~synthgen.storage.splits.split_indices` (``test``: a fixed tenth, never used for the GAN or
   any segmenter). Of the other patients a ``val_fraction`` drawn from the base seed (``train.seed``)
   validates (best-checkpoint selection) and the rest form the real training pool; the 10% and 25%
   subsets are the first patients of one seeded permutation of the pool, so the 10% subset lies inside
   the 25% subset. Each split is written as its own store under ``OUT/stores``, once for every seed.
2. For every training seed of ``seeds``, train one segmenter per arm (``train-seg``, validation on the
   real validation store), the seed deciding initialisation, batch order and augmentation (:data:`ARM_PLANS`):
   real only; synthetic only; real + synthetic; 10% / 25% of the real patients + synthetic; 10% / 25%
   of the real patients alone; and two fine-tuning arms that start from the synthetic arm's segmenter of
   the same seed (``--init``) and train on all the real patients, or on the 10% subset.
   Mixed arms draw ``synth_share`` of each batch from the synthetic store.
3. Evaluate every best checkpoint on the real test store (``evaluate seg``): Dice, HD95, ASSD per class
   and, with ``shift``, Dice under every acquisition shift of :mod:`synthgen.evaluation.shift`.
4. Statistics (:mod:`synthgen.evaluation.utility_stats`): per arm and class the mean Dice over test
   images and seeds with a 95% bootstrap interval, and the paired difference from the ``real`` arm;
   under shift, the drop from unshifted per shift, the mean drop, and the mean drop less real's.

Each (arm, seed) keeps its run in ``OUT/arms/<arm>/seed<k>`` and its scores in ``result.json``,
written last: a rerun reuses every pair whose ``result.json`` records the same training config (and, for a
fine-tuning arm, the same starting weights), so an interrupted run continues where it stopped, and
adding ``--shift`` later scores the existing segmenters without retraining them. ``utility.md``,
``utility.json`` and ``utility.png`` go to ``OUT``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthgen import seeding
from synthgen.errors import ConfigError, StoreError
from synthgen.evaluation.segmentation import SegEvaluation, evaluate_segmentation
from synthgen.evaluation.shift import AcquisitionShift, shifts_for, store_modality
from synthgen.evaluation.utility_report import utility_plot, utility_table
from synthgen.evaluation.utility_stats import RESAMPLES, UtilityStats, utility_stats
from synthgen.models import SegModelConfig
from synthgen.schemas import StoreAttrs, StoreLayout
from synthgen.storage import (
    StoreReader,
    StoreWriter,
    atomic_write,
    split_indices,
    store_exists,
    store_patients,
    store_rule,
)
from synthgen.trainers import SegTrainConfig, augment_level, seg_augment, train_seg

UTILITY_AUGMENT = "light"  # every arm's augmentation unless one is given (bench/results/utility.md)
RESULT_JSON = "result.json"
REFERENCE = "real"


@dataclass(frozen=True)
class ArmPlan:
    """What an arm trains on: a real split store (``train``, ``train10``, ``train25``) or none, the
    synthetic store or not (both: mixed), and the arm whose segmenter of the same seed it starts from."""

    real: str | None
    synthetic: bool
    init: str | None = None


ARM_PLANS = {
    "real": ArmPlan("train", False),
    "synthetic": ArmPlan(None, True),
    "real+synthetic": ArmPlan("train", True),
    "real10+synthetic": ArmPlan("train10", True),
    "real25+synthetic": ArmPlan("train25", True),
    "real10": ArmPlan("train10", False),
    "real25": ArmPlan("train25", False),
    "synthetic-pretrain+real-finetune": ArmPlan("train", False, init="synthetic"),
    "real10-finetune": ArmPlan("train10", False, init="synthetic"),
}
ARMS = tuple(ARM_PLANS)
REAL_ARMS = tuple(a for a, p in ARM_PLANS.items() if not p.synthetic and p.init is None)


def needs_synth(arm: str) -> bool:
    plan = ARM_PLANS[arm]
    return plan.synthetic or (plan.init is not None and needs_synth(plan.init))


@dataclass(frozen=True)
class UtilityConfig:
    real: str  # the real store (synthgen ingest of CAMUS)
    out_dir: str
    synth: str | None = None  # a store made by synthgen build-dataset; None: real arms only
    arms: tuple[str, ...] = ()  # default: every arm the stores allow
    seeds: tuple[int, ...] = (0, 1, 2)  # training seeds: every arm is trained once per seed
    fractions: tuple[float, float] = (0.10, 0.25)
    val_fraction: float = 0.10
    synth_share: float = 0.5
    shift: bool = False  # also score every arm under the acquisition shifts
    modality: str | None = None  # of the real images, for the shifts; default: from the schema
    shift_seed: int = 0  # the per-image draws of the shifts
    resamples: int = RESAMPLES  # bootstrap resamples of the statistics
    train: SegTrainConfig = field(
        default_factory=lambda: SegTrainConfig(
            train="", val="", out_dir="", steps=1000, val_every=100, augment=seg_augment(UTILITY_AUGMENT)
        )
    )

    def __post_init__(self) -> None:
        unknown = sorted(set(self.arms) - set(ARMS))
        if unknown:
            raise ConfigError(f"Expected arms from {list(ARMS)}. Got unknown {unknown}.")
        synthetic = sorted(a for a in self.arms if needs_synth(a))
        if synthetic and not self.synth:
            raise ConfigError(f"Expected --synth for arms {synthetic}. Got no synthetic store.")
        if not 0 < self.synth_share < 1 or not 0 < self.val_fraction < 1:
            raise ConfigError(
                f"Expected synth_share and val_fraction in (0, 1). Got {self.synth_share}, {self.val_fraction}."
            )
        if not all(0 < f < 1 for f in self.fractions):
            raise ConfigError(f"Expected reduction fractions in (0, 1). Got {self.fractions}.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ConfigError(
                f"Expected distinct non-negative training seeds. Got {list(self.seeds)} instead."
            )

    @property
    def chosen_arms(self) -> tuple[str, ...]:
        """The arms to run, in :data:`ARMS` order, with the arms they start from."""
        chosen = set(self.arms or (ARMS if self.synth else REAL_ARMS))
        for arm in list(chosen):
            while ARM_PLANS[arm].init is not None:
                arm = ARM_PLANS[arm].init
                chosen.add(arm)
        return tuple(a for a in ARMS if a in chosen)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return out | {
            "arms": list(self.chosen_arms),
            "seeds": list(self.seeds),
            "fractions": list(self.fractions),
            "train": self.train.to_dict(),
        }


def patient_splits(reader: StoreReader, cfg: UtilityConfig) -> dict[str, np.ndarray]:
    """Sample indices of every split: test, val, train (the pool), train10, train25."""
    indices = reader.available_indices()
    patients = store_patients(reader)
    test = split_indices(reader, "test")
    if len(test) == 0:
        numbers = np.unique(patients)
        rule = store_rule(reader)
        raise ConfigError(
            f"Expected test patients (number % 10 == {rule.test}) in {reader.url}. Got none among its "
            f"{len(numbers)} patients ({numbers.min()} to {numbers.max()}): this copy holds none of the "
            "held-out tenth, so nothing would be scored. Use a store of the full dataset, or ingest this copy "
            "with --test-remainder R for a remainder its patients have."
        )
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


def _reusable(url: str, reader: StoreReader, indices: np.ndarray) -> bool:
    """Whether ``url`` holds a complete store of exactly this split of ``reader``. A store that does
    not open (an older run killed while writing it in place) is not reusable: it is replaced."""
    if not store_exists(url):
        return False
    try:
        attrs = StoreReader(url).attrs
    except StoreError:
        return False
    prov = attrs.provenance
    same = prov.get("parent_indices") == indices.tolist() and prov.get("subset_of") == reader.url
    return same and attrs.is_complete


def _remove_dead_partials(stores: Path) -> None:
    """Remove ``.<name>.<pid>.partial`` folders whose writing process is gone (killed mid-write)."""
    for path in stores.glob(".*.partial"):
        try:
            pid = int(path.name.rsplit(".", 2)[-2])
            os.kill(pid, 0)  # raises when no such process
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (ValueError, PermissionError):  # not ours to judge: left alone
            continue


def prepare_stores(cfg: UtilityConfig) -> dict[str, str]:
    """Write the split stores under OUT/stores (reused when present, complete and of the same split).

    Each store is written under a name private to this process and renamed into place when complete,
    so a run killed while writing leaves no half store behind, and runs started together on one OUT
    (one per seed, say) never write the same files: the first to finish a split provides it."""
    reader = StoreReader(cfg.real)
    stores = Path(cfg.out_dir) / "stores"
    stores.mkdir(parents=True, exist_ok=True)
    _remove_dead_partials(stores)
    urls = {}
    for name, indices in patient_splits(reader, cfg).items():
        final = stores / f"{name}.zarr"
        urls[name] = str(final)
        if _reusable(str(final), reader, indices):
            continue
        partial = stores / f".{name}.zarr.{os.getpid()}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        write_subset(reader, str(partial), indices, {"tool": "synthgen evaluate utility", "subset": name})
        if _reusable(str(final), reader, indices):  # another run finished this split meanwhile
            shutil.rmtree(partial, ignore_errors=True)
            continue
        shutil.rmtree(final, ignore_errors=True)  # a different split, or an unopenable leftover
        try:
            os.replace(partial, final)
        except OSError:  # another run renamed its copy in between: use it if it is this split
            if not _reusable(str(final), reader, indices):
                raise
            shutil.rmtree(partial, ignore_errors=True)
    return urls


def arm_real_store(arm: str, urls: Mapping[str, str]) -> str | None:
    """The real training store of an arm (None for synthetic only)."""
    real = ARM_PLANS[arm].real
    return None if real is None else urls[real]


def arm_mix(arm: str, urls: Mapping[str, str], cfg: UtilityConfig) -> str:
    """The train-seg store mix of an arm."""
    real, plan = arm_real_store(arm, urls), ARM_PLANS[arm]
    if real is None:
        return str(cfg.synth)
    if not plan.synthetic:
        return real
    return f"{real}:{1 - cfg.synth_share},{cfg.synth}:{cfg.synth_share}"


def arm_folder(out_dir: str | Path, arm: str, seed: int) -> Path:
    """Where one (arm, seed) of a run in ``out_dir`` keeps its segmenter, evaluations and result.json."""
    return Path(out_dir) / "arms" / arm.replace("+", "_plus_") / f"seed{seed}"


def arm_train_config(arm: str, seed: int, urls: Mapping[str, str], cfg: UtilityConfig) -> SegTrainConfig:
    """The train-seg config of one (arm, seed). The split stores are already disjoint by patient: each is
    read whole (split 'all', validation ':all')."""
    init = ARM_PLANS[arm].init
    return dataclasses.replace(
        cfg.train,
        train=arm_mix(arm, urls, cfg),
        val=f"{urls['val']}:all",
        split="all",
        out_dir=str(arm_folder(cfg.out_dir, arm, seed)),
        seed=seed,
        init="" if init is None else str(arm_folder(cfg.out_dir, init, seed) / "best"),
    )


def folder_digest(folder: str | Path) -> str:
    """SHA-256 over the names and bytes of the files of a checkpoint folder."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return "sha256:" + h.hexdigest()


def read_result(folder: str | Path) -> dict[str, Any]:
    """The ``result.json`` of an (arm, seed) folder, or {} where there is none (or a torn one)."""
    try:
        data = json.loads((Path(folder) / RESULT_JSON).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def per_image_dice(result: SegEvaluation) -> dict[str, Any]:
    """The test store indices and, per class, the Dice of every image, in store order."""
    names = list(result.summary)
    return {
        "indices": [r["index"] for r in result.rows],
        "dice": {c: [float(r[f"{c}_dice"]) for r in result.rows] for c in names},
    }


def shift_plan(cfg: UtilityConfig) -> list[AcquisitionShift]:
    """The shifts every arm is scored under (none without ``cfg.shift``)."""
    if not cfg.shift:
        return []
    modality = store_modality(StoreReader(cfg.real).schema.name, cfg.modality)
    return [AcquisitionShift(name, modality, cfg.shift_seed) for name in shifts_for(modality)]


def run_arm(
    arm: str,
    seed: int,
    urls: Mapping[str, str],
    cfg: UtilityConfig,
    progress: bool,
    notify: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Train and score one (arm, seed), or reuse its ``result.json``; see the module docstring."""
    folder = arm_folder(cfg.out_dir, arm, seed)
    train_cfg = arm_train_config(arm, seed, urls, cfg)
    config_json = json.loads(json.dumps(train_cfg.to_dict()))
    init_digest = folder_digest(train_cfg.init) if train_cfg.init else None
    record = read_result(folder)
    if record.get("train_config") != config_json or record.get("init_digest") != init_digest:
        result = train_seg(train_cfg, progress=progress, overwrite=True)
        evaluation = evaluate_segmentation(result.best, urls["test"], folder / "eval")
        real = arm_real_store(arm, urls)
        record = {
            "arm": arm,
            "seed": seed,
            "train_config": config_json,
            "init_digest": init_digest,
            "augment": augment_level(train_cfg.augment),
            "best_step": result.best_step,
            "val": result.best_metrics,
            "train_seconds": result.seconds,
            "real_train_samples": 0 if real is None else StoreReader(real).num_available,
            "n": evaluation.n,
            "distance_unit": evaluation.unit,
            "summary": evaluation.summary,
            "test": per_image_dice(evaluation),
        }
        atomic_write(folder / RESULT_JSON, json.dumps(record, indent=1) + "\n")
        notify(f"{arm}, seed {seed}: trained in {result.seconds:.1f} s, scored on {evaluation.n} test images")
    else:
        notify(f"{arm}, seed {seed}: done before, reused")
    shifts = shift_plan(cfg)
    wanted = [s.to_dict() for s in shifts]
    if shifts and record.get("shift_config") != wanted:
        record["shift"] = {
            s.name: per_image_dice(
                evaluate_segmentation(folder / "best", urls["test"], folder / "shift" / s.name, shift=s)
            )
            for s in shifts
        }
        record["shift_config"] = wanted
        atomic_write(folder / RESULT_JSON, json.dumps(record, indent=1) + "\n")
        notify(f"{arm}, seed {seed}: scored under shifts {[s.name for s in shifts]}")
    return record


def dice_array(records: list[Mapping[str, Any]], classes: list[str], shift: str | None = None) -> np.ndarray:
    """(seeds, images, classes) Dice of one arm's records (one per seed), unshifted or under ``shift``."""
    parts = [r["test"] if shift is None else r["shift"][shift] for r in records]
    return np.stack([np.stack([p["dice"][c] for c in classes], axis=-1) for p in parts])


def arm_statistics(
    records: Mapping[str, list[Mapping[str, Any]]], classes: list[str], resamples: int = RESAMPLES
) -> UtilityStats:
    """The statistics of every arm from its records (one per seed, in one seed order): every arm must
    have been scored on the same test images (and under the same shifts, if any)."""
    indices = {tuple(r["test"]["indices"]) for rs in records.values() for r in rs}
    if len(indices) != 1:
        raise ConfigError("Expected every arm and seed scored on the same test images. Got several sets.")
    dice = {arm: dice_array(rs, classes) for arm, rs in records.items()}
    names = [list(r.get("shift", {})) for rs in records.values() for r in rs]
    shifted = None
    if names and names[0] and all(n == names[0] for n in names):
        shifted = {arm: {s: dice_array(rs, classes, s) for s in names[0]} for arm, rs in records.items()}
    return utility_stats(dice, classes, reference=REFERENCE, shifted=shifted, resamples=resamples)


def _brief(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record without its per-image lists (those stay in the arm's result.json)."""
    return {k: v for k, v in record.items() if k not in ("test", "shift")}


def run_utility(
    cfg: UtilityConfig, *, progress: bool = True, notify: Callable[[str], None] = lambda _: None
) -> tuple[str, dict[str, Any]]:
    """Run every chosen arm for every seed; returns (markdown table, JSON report) and writes both, and
    the plot, to OUT."""
    urls = prepare_stores(cfg)
    classes = list(StoreReader(cfg.real).schema.names)
    records: dict[str, list[dict[str, Any]]] = {arm: [] for arm in cfg.chosen_arms}
    for seed in cfg.seeds:  # seed by seed: every arm of a seed is done before the next seed starts
        for arm in cfg.chosen_arms:
            records[arm].append(run_arm(arm, seed, urls, cfg, progress, notify))
    stats = arm_statistics(records, classes, cfg.resamples)
    meta = {
        arm: {"augment": rs[0]["augment"], "real_train_samples": rs[0]["real_train_samples"]}
        for arm, rs in records.items()
    }
    table = utility_table(stats, meta, list(cfg.seeds))
    report = {
        "config": cfg.to_dict(),
        "stores": urls,
        "statistics": stats.to_dict(),
        "arms": {arm: {str(r["seed"]): _brief(r) for r in rs} for arm, rs in records.items()},
    }
    out = Path(cfg.out_dir)
    atomic_write(out / "utility.json", json.dumps(report, indent=1) + "\n")
    atomic_write(out / "utility.md", table + "\n")
    utility_plot(stats, out / "utility.png")
    return table, report


def default_train_config(augment: str = UTILITY_AUGMENT, **overrides: Any) -> SegTrainConfig:
    """The CPU budget of the README table: U-Net width 16, depth 4, 64 x 64, batch 16, 1000 steps, and
    the ``augment`` level (``light`` unless given)."""
    base = {"train": "", "val": "", "out_dir": "", "model": SegModelConfig("unet", 16, 4), "device": "cpu"}
    base["augment"] = seg_augment(augment)
    return SegTrainConfig(**(base | {k: v for k, v in overrides.items() if v is not None}))
