"""``synthgen train-seg``: train a segmenter straight from stores, validate on a real store, keep the best.

Training batches stream from one store or a mix (``real.zarr:0.3,synth.zarr:0.7``) through
:class:`~synthgen.storage.loader.StoreStream`, every store resized to ``image_size`` (images bilinear,
labels nearest) and augmented on the fly, the same transform for image and labels: ``augment`` is None,
the light :class:`~synthgen.trainers.augment.SegAugment` or the strong (nnU-Net's set, the default)
:class:`~synthgen.trainers.augment_strong.StrongAugment`; the spec records its level and ranges.
``normalise`` (none, percentile or zscore: :func:`~synthgen.storage.loader.normalise_images`) normalises
every image on its own at the training size, after augmentation, in training and validation; the spec's
``train_config`` records it, so ``evaluate seg`` applies the same by default.
Loss: cross-entropy + soft Dice.
Strategies: ``init`` starts from another segmenter's weights (a checkpoint folder, or a train-seg run
folder's ``best``; same architecture, schema and channels), and the new ``splits.json`` records what that
one saw (``init``), so evaluation knows; ``synth_share_schedule`` (START, END) moves the synthetic
stores' share of each batch of a real + synthetic mix linearly from START at the first step to END at
the last (:func:`synth_schedule`), drawn from the run's seed.
Splits (:mod:`synthgen.storage.splits`): the real stores of the mix are read with ``split`` ('train':
the test patients left out, as the generative trainers do; 'all'); a real store without patient
metadata is split by sample index with a note; a synthetic store (build-dataset output) is read whole.
Validation (``val``, ``STORE[:split]``; default: the validation patients of the first real store of
the mix) is left out of training where it comes from a training store, and 'test' is refused.
Every ``val_every`` steps the model is scored on the validation samples (mean foreground Dice at the
training size); the best so far goes to ``OUT_DIR/best`` and the latest to ``OUT_DIR/last``
(``segmenter.safetensors`` + ``segmenter.json`` + ``splits.json``: the stores, their hashes, splits and
the sample indices and patients trained and validated on). ``log.csv`` / ``log.json`` hold the curves and
``curves.png`` plots them.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from synthgen.errors import ConfigError, LabelValueError, SchemaError, StoreNotFoundError
from synthgen.kernels import batch_dice
from synthgen.models import (
    SEGMENTER_JSON,
    SegmenterSpec,
    SegModelConfig,
    build_segmenter,
    init_segmenter,
    load_segmenter,
    save_segmenter,
)
from synthgen.schemas import LabelSchema, label_lut
from synthgen.storage import (
    LoaderConfig,
    MixSchedule,
    RunSplits,
    StoreReader,
    StoreSplit,
    StoreStream,
    atomic_write,
    check_normalise,
    make_loader,
    parse_mix,
    select_split,
)
from synthgen.trainers.augment import SegAugmentation, augment_from_dict, augment_level, augment_to_dict
from synthgen.trainers.augment_strong import StrongAugment
from synthgen.trainers.runs import check_finite, replace_folder, resolve_device, seeded

PLOT_EVERY = 10  # redraw curves.png every this many validations (and at the end): a plot costs ~0.5 s
TRAIN_SPLITS = ("train", "all")
VAL_SPLITS = ("val", "train", "all")  # never 'test': validation picks the checkpoint


@dataclass(frozen=True)
class SegTrainConfig:
    train: str  # one store or a mix "a.zarr:0.3,b.zarr:0.7"
    val: str  # "STORE[:split]"; "": the validation patients of the first real store of the mix
    out_dir: str
    model: SegModelConfig = field(default_factory=SegModelConfig)
    image_size: tuple[int, int] = (64, 64)
    batch_size: int = 16
    steps: int = 1000
    val_every: int = 100
    val_limit: int | None = None  # validate on the first N samples of the validation split
    split: str = "train"  # of the real training stores: "train" (no test patients) or "all"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    dice_weight: float = 1.0  # loss = cross-entropy + dice_weight * soft Dice
    augment: SegAugmentation = field(default_factory=StrongAugment)  # None, light or strong
    normalise: str = "none"  # per-image intensity normalisation: none, percentile or zscore
    seed: int = 0
    num_workers: int = 0
    block_size: int = 32
    window: int = 8
    device: str = "auto"
    init: str = ""  # start from this segmenter checkpoint's weights ("": a seeded initialisation)
    synth_share_schedule: tuple[float, float] | None = None  # synthetic share of a batch, first to last step

    def __post_init__(self) -> None:
        for name in ("batch_size", "steps", "val_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"Expected {name} >= 1. Got {getattr(self, name)} instead.")
        if len(self.image_size) != 2 or any(s % self.model.multiple for s in self.image_size):
            raise ConfigError(
                f"Expected an image size of two multiples of {self.model.multiple} (depth {self.model.depth}). "
                f"Got {tuple(self.image_size)} instead."
            )
        if not self.lr > 0:
            raise ConfigError(f"Expected a positive learning rate. Got {self.lr} instead.")
        if self.split not in TRAIN_SPLITS:
            raise ConfigError(f"Expected a training split in {TRAIN_SPLITS}. Got {self.split!r} instead.")
        val_split = parse_val(self.val)[1]
        if val_split == "test":
            raise ConfigError(
                f"Expected a validation split in {VAL_SPLITS}. Got 'test' in {self.val!r}: the test patients "
                "stay unseen until evaluation; validate on STORE:val."
            )
        augment_level(self.augment)  # a ConfigError for anything but None, light or strong
        schedule = self.synth_share_schedule
        if schedule is not None and (len(schedule) != 2 or not all(0 <= s <= 1 for s in schedule)):
            raise ConfigError(
                f"Expected a synthetic share schedule START:END with both in [0, 1]. Got {schedule} instead."
            )
        check_normalise(self.normalise)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["model"] = self.model.to_dict()
        out["image_size"] = list(self.image_size)
        out["augment"] = augment_to_dict(self.augment)
        if self.synth_share_schedule is not None:
            out["synth_share_schedule"] = list(self.synth_share_schedule)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SegTrainConfig:
        data = dict(data)
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"Expected train-seg config keys only. Got unknown keys {unknown}.")
        if "model" in data:
            data["model"] = SegModelConfig.from_dict(data["model"])
        if "image_size" in data:
            data["image_size"] = tuple(int(s) for s in data["image_size"])
        if "augment" in data:
            data["augment"] = augment_from_dict(data["augment"])
        if data.get("synth_share_schedule") is not None:
            data["synth_share_schedule"] = tuple(float(s) for s in data["synth_share_schedule"])
        return cls(**data)


@dataclass(frozen=True)
class SegTrainResult:
    best: Path
    best_step: int
    best_metrics: dict[str, float]
    steps: int
    seconds: float
    splits: RunSplits | None = None  # what the run trained and validated on


def parse_val(text: str) -> tuple[str, str | None]:
    """``"STORE[:split]"`` -> (store URL, split or None). A split is the text after the last ``:`` when
    it names one, so ``s3://b/x.zarr`` needs none."""
    url, sep, tail = text.rpartition(":")
    if sep and url and tail in (*VAL_SPLITS, "test"):
        return url, tail
    return text, None


def _open(url: str, what: str) -> StoreReader:
    try:
        return StoreReader(url)
    except StoreNotFoundError as e:
        raise StoreNotFoundError(f"No {what} store at {url}.") from e


def plan_splits(cfg: SegTrainConfig) -> tuple[RunSplits, tuple[str, ...]]:
    """The samples of every training store and the validation samples, and notes for the user (a real
    store split by sample index for want of patient metadata); see the module docstring."""
    picked = [select_split(StoreReader(m.url), cfg.split) for m in parse_mix(cfg.train)]
    real = [p for p in picked if p.by != "whole"]
    if cfg.val:
        url, split = parse_val(cfg.val)
        val = select_split(_open(url, "validation"), "all")
    elif real:
        url, split, val = real[0].url, "val", real[0]
    else:
        raise ConfigError(
            f"Expected --val STORE[:split]: the mix {cfg.train} holds synthetic stores only, so there "
            "are no validation patients to default to. Got none."
        )
    in_mix = any(p.same_url(val) for p in picked)
    split = split or ("val" if in_mix else "all")
    if split != val.split:
        val = select_split(StoreReader(url), split)
    val = val.head(cfg.val_limit)
    if val.n == 0:
        raise ConfigError(
            f"Expected validation samples in split {split!r} of {url}. Got none: pass --val STORE[:split]."
        )
    train = tuple(p.less(val) for p in picked)
    for s in train:
        if s.n == 0:
            raise ConfigError(
                f"Expected training samples in split {cfg.split!r} of {s.url} besides the validation "
                "samples. Got none: validate on STORE:val or on another store."
            )
    notes = tuple(
        f"{url} has no patient metadata: split by sample index instead (index % 10 == 0: test, "
        "% 10 == 5: validation)."
        for url in dict.fromkeys(s.url for s in (*train, val) if s.by == "sample" and s.split != "all")
    )
    return RunSplits(train, val), notes


def _subset(split: StoreSplit) -> np.ndarray | None:
    """The indices to hand the loader: None where the selection is every available sample."""
    return None if split.n == StoreReader(split.url).num_available else split.indices


def lr_at(step: int, base: float, steps: int) -> float:
    """Polynomial decay (power 0.9) from ``base`` to 0 over ``steps``, as nnU-Net does."""
    return base * (1 - min(step, steps) / steps) ** 0.9


def seg_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float) -> torch.Tensor:
    """Cross-entropy + ``dice_weight`` x (1 - soft Dice averaged over the foreground classes)."""
    ce = F.cross_entropy(logits, target)
    if not dice_weight:
        return ce
    probs = logits.softmax(1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].to(probs.dtype)
    inter = (probs * onehot).sum((0, 2, 3))
    total = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    dice = (2 * inter + 1) / (total + 1)
    return ce + dice_weight * (1 - dice.mean())


def to_indices(labels: torch.Tensor, lut: torch.Tensor, where: str) -> torch.Tensor:
    """uint8 label values -> int64 class indices; a value outside the schema is an error."""
    idx = lut[labels.long()]
    if (idx == 255).any():
        bad = int(labels[idx == 255][0])
        raise LabelValueError(f"Label value {bad} in {where} is not in the training schema.")
    return idx.long()


def schema_key(schema: LabelSchema) -> list[tuple[str, int]]:
    return [(c.name, c.value) for c in schema.classes]


def load_eval_set(
    url: str,
    schema: LabelSchema,
    size: tuple[int, int],
    channels: int,
    limit: int | None = None,
    indices: np.ndarray | None = None,
    normalise: str = "none",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sample of a store (only ``indices`` where given; the first ``limit``) at ``size``:
    images (N, C, H, W), normalised per image by ``normalise``, and class indices."""
    try:
        config = LoaderConfig(batch_size=64, shuffle=False, normalise=normalise)
        stream = StoreStream(url, config, size=size, indices=indices)
    except StoreNotFoundError as e:
        raise StoreNotFoundError(f"No validation store at {url}.") from e
    if schema_key(stream.schema) != schema_key(schema):
        raise SchemaError(
            f"Expected the validation store {url} to use the training schema {schema.name!r} "
            f"{schema_key(schema)}. Got {stream.schema.name!r} {schema_key(stream.schema)} instead."
        )
    got = 1 if len(stream.image_shape) == 2 else stream.image_shape[0]
    if got != channels:
        raise ConfigError(f"Expected {channels}-channel images in {url} (as in training). Got {got}.")
    lut = torch.from_numpy(label_lut(schema))
    images, labels, n = [], [], 0
    for batch in stream:
        images.append(batch["image"])
        labels.append(to_indices(batch["label"], lut, url))
        n += len(batch["image"])
        if limit is not None and n >= limit:
            break
    return torch.cat(images)[:limit], torch.cat(labels)[:limit]


@torch.no_grad()
def validate(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: SegTrainConfig, names
) -> dict[str, float]:
    """Loss and per-class Dice (mean over samples) on held-in-memory data, at the training size."""
    model.eval()
    device = next(model.parameters()).device
    losses, dices = [], []
    for a in range(0, len(images), 64):
        x, y = images[a : a + 64].to(device), labels[a : a + 64].to(device)
        logits = model(x)
        losses.append(float(seg_loss(logits, y, cfg.dice_weight)) * len(x))
        dices.append(batch_dice(logits.argmax(1).cpu().numpy(), y.cpu().numpy(), len(names) + 1))
    model.train()
    dice = np.concatenate(dices).mean(axis=0)
    out = {"val_loss": sum(losses) / len(images)} | {
        f"val_dice_{n}": float(d) for n, d in zip(names, dice, strict=True)
    }
    return out | {"val_dice_mean": float(dice.mean())}


def _save(out: Path, name: str, model: torch.nn.Module, spec: SegmenterSpec, splits: RunSplits) -> Path:
    tmp = out / f"{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_segmenter(tmp, model, spec)
    splits.write(tmp)
    replace_folder(tmp, out / name)
    return out / name


def write_log(out: Path, rows: list[dict[str, float]], plot: bool = True) -> None:
    """``log.csv``, ``log.json`` and, with ``plot``, ``curves.png`` (loss and Dice against step)."""
    atomic_write(out / "log.json", json.dumps(rows, indent=1) + "\n")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with (out / "log.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows(rows)
    if not plot:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key in ("train_loss", "val_loss"):
        ax_loss.plot(steps, [r.get(key, math.nan) for r in rows], marker=".", label=key)
    for key in (k for k in keys if k.startswith("val_dice_")):
        ax_dice.plot(
            steps, [r.get(key, math.nan) for r in rows], marker=".", label=key.removeprefix("val_dice_")
        )
    ax_loss.set(xlabel="step", ylabel="loss", title="loss")
    ax_dice.set(xlabel="step", ylabel="Dice", title="validation Dice", ylim=(0, 1))
    for ax in (ax_loss, ax_dice):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=90)
    plt.close(fig)


def synth_schedule(cfg: SegTrainConfig, splits: RunSplits) -> MixSchedule | None:
    """The mixing schedule of ``cfg.synth_share_schedule`` (None without one): the synthetic stores of
    the mix (read whole) take START of each batch at the first step and END at the last, linearly in
    between, shared among them by their ratios in the mix; the real stores share the rest alike."""
    if cfg.synth_share_schedule is None:
        return None
    ratios = np.array([m.ratio for m in parse_mix(cfg.train)])
    synthetic = np.array([s.by == "whole" for s in splits.train])
    if synthetic.all() or not synthetic.any():
        raise ConfigError(
            "Expected a mix of real and synthetic (build-dataset) stores for --synth-share-schedule. "
            f"Got {int(synthetic.sum())} synthetic of the {len(ratios)} stores of {cfg.train}."
        )
    within = np.where(synthetic, ratios / ratios[synthetic].sum(), ratios / ratios[~synthetic].sum())
    start, end = (np.where(synthetic, share, 1 - share) * within for share in cfg.synth_share_schedule)
    return MixSchedule(tuple(start), tuple(end), cfg.steps)


def training_stream(cfg: SegTrainConfig, splits: RunSplits, loader_cfg: LoaderConfig) -> StoreStream:
    """The training batches: the samples ``splits`` chose, resized and augmented, mixed at the mix's
    ratios or by the synthetic share schedule (:func:`synth_schedule`)."""
    subsets = [_subset(s) for s in splits.train]
    indices = None if all(i is None for i in subsets) else subsets
    schedule = synth_schedule(cfg, splits)
    return StoreStream(
        cfg.train, loader_cfg, augment=cfg.augment, size=cfg.image_size, indices=indices, schedule=schedule
    )


def init_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder ``--init`` names: the folder itself, or ``best`` of a train-seg run folder."""
    path = Path(path)
    if not (path / SEGMENTER_JSON).is_file() and (path / "best" / SEGMENTER_JSON).is_file():
        return path / "best"
    return path


def load_init(
    cfg: SegTrainConfig, channels: int, schema: LabelSchema
) -> tuple[dict[str, torch.Tensor], tuple[StoreSplit, ...]]:
    """The weights of the segmenter ``cfg.init`` and everything it learned from or validated on
    (:meth:`RunSplits.lineage`); a ConfigError where its architecture, schema or channels are not
    this run's."""
    folder = init_checkpoint(cfg.init)
    model, spec = load_segmenter(folder)
    differs = []
    if spec.model != cfg.model:
        differs.append(f"architecture {spec.model.to_dict()} (this run: {cfg.model.to_dict()})")
    if schema_key(spec.schema) != schema_key(schema):
        differs.append(f"schema {schema_key(spec.schema)} (this run: {schema_key(schema)})")
    if spec.channels != channels:
        differs.append(f"{spec.channels}-channel images (this run: {channels})")
    if differs:
        raise ConfigError(
            f"Expected an --init segmenter of this run's architecture, schema and channels. Got {folder} "
            f"with {'; '.join(differs)}: pass its --arch/--width/--depth, or start from another checkpoint."
        )
    record = RunSplits.read(folder, spec.train_config)
    return model.state_dict(), () if record is None else record.lineage()


def train_seg(
    cfg: SegTrainConfig,
    *,
    progress: bool = True,
    overwrite: bool = False,
    notify: Callable[[str], None] | None = None,
) -> SegTrainResult:
    """Train ``cfg.model`` on ``cfg.train``, validating on ``cfg.val``; see the module docstring.
    ``notify`` receives the notes of :func:`plan_splits` once the data is checked, before training."""
    out = Path(cfg.out_dir)
    if (out / "best" / SEGMENTER_JSON).exists() and not overwrite:
        raise ConfigError(f"Expected a new output folder. {out} already holds a segmenter: choose another.")
    device = resolve_device(cfg.device)
    loader_cfg = LoaderConfig(
        cfg.batch_size,
        cfg.block_size,
        cfg.window,
        shuffle=True,
        seed=cfg.seed,
        drop_last=True,
        normalise=cfg.normalise,
    )
    splits, notes = plan_splits(cfg)
    stream = training_stream(cfg, splits, loader_cfg)
    schema = stream.schema
    channels = 1 if len(stream.image_shape) == 2 else stream.image_shape[0]
    init = load_init(cfg, channels, schema) if cfg.init else None
    val = splits.val
    val_images, val_labels = load_eval_set(
        val.url, schema, cfg.image_size, channels, cfg.val_limit, _subset(val), cfg.normalise
    )
    lut = torch.from_numpy(label_lut(schema))
    for note in notes if notify is not None else ():
        notify(note)

    model = build_segmenter(cfg.model, channels, schema.num_classes)
    init_segmenter(model, seeded(cfg.seed, 0))
    if init is not None:  # fine-tuning: its weights, and what it saw goes into this run's record
        model.load_state_dict(init[0])
        splits = dataclasses.replace(splits, init=init[1])
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    spec = SegmenterSpec(cfg.model, cfg.image_size, channels, schema, train_config=cfg.to_dict())
    out.mkdir(parents=True, exist_ok=True)
    loader = make_loader(stream, cfg.num_workers, persistent_workers=cfg.num_workers > 0)

    rows: list[dict[str, float]] = []
    best_score, best_step, best_metrics = -1.0, 0, {}
    step, epoch, running, count = 0, 0, 0.0, 0
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.steps, disable=not progress, desc=f"train-seg {cfg.model.arch}", unit="step")
    while step < cfg.steps:
        stream.set_epoch(epoch)
        step_before = step
        for batch in loader:
            lr = lr_at(step, cfg.lr, cfg.steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x = batch["image"].to(device)
            y = to_indices(batch["label"], lut, cfg.train).to(device)
            loss = seg_loss(model(x), y, cfg.dice_weight)
            check_finite(loss, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            running, count = running + loss.item(), count + 1
            bar.update(1)
            if step % cfg.val_every == 0 or step == cfg.steps:
                metrics = validate(model, val_images, val_labels, cfg, schema.names)
                row = {"step": step, "epoch": epoch, "lr": lr, "train_loss": running / count} | metrics
                rows.append(row | {"seconds": time.perf_counter() - t0})
                running, count = 0.0, 0
                spec = dataclasses.replace(spec, step=step, metrics=metrics)
                if metrics["val_dice_mean"] > best_score:
                    best_score, best_step, best_metrics = metrics["val_dice_mean"], step, metrics
                    _save(out, "best", model, spec, splits)
                _save(out, "last", model, spec, splits)
                write_log(out, rows, plot=step == cfg.steps or len(rows) % PLOT_EVERY == 0)
                bar.set_postfix(loss=f"{row['train_loss']:.3f}", dice=f"{metrics['val_dice_mean']:.3f}")
            if step >= cfg.steps:
                break
        if step == step_before:
            raise ConfigError(
                f"Expected at least one batch of {cfg.batch_size} per epoch from {cfg.train}. Got none: "
                "lower --batch-size."
            )
        epoch += 1
    bar.close()
    return SegTrainResult(out / "best", best_step, best_metrics, step, time.perf_counter() - t0, splits)
