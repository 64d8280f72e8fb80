"""``synthgen train-shape``: train the shape VAE (:mod:`synthgen.models.shape_vae`) on a store's label maps.

The label maps of ``split`` (maps without foreground left out) stream from the store in shuffled
epochs (:class:`~synthgen.trainers.data.TrainingStream`), resized to the training size by nearest
neighbour; the schema comes from the store. The KL weight ramps linearly from 0 to
``kl_weight`` over the first ``kl_anneal_steps`` steps (:func:`kl_at`), so the decoder learns to
reconstruct before the prior pulls the codes together.

Every ``checkpoint_every`` steps the sampling prior is fitted to the training maps' codes (with
``fit_prior``; it does not change training) and ``gate_samples`` new maps are sampled (always the
same draws) and put through the plausibility gate; the pass rate and the count of each rejection reason go to the
loss log and into the checkpoint spec. The output folder holds ``checkpoint/`` (the VAE and its
training state, replaced atomically: resuming continues exactly), ``losses.jsonl``, ``losses.png``
and ``samples/step_NNNNNNN.png`` (sampled maps in the schema's colours).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from synthgen.errors import CheckpointError, ConfigError
from synthgen.models import (
    SHAPE_VAE_JSON,
    ShapeVae,
    ShapeVaeConfig,
    ShapeVaeSpec,
    fit_prior,
    init_vae,
    read_vae_spec,
    sample_labels,
    save_vae,
    vae_loss,
)
from synthgen.schemas import (
    LabelSchema,
    check_range,
    fields_from_dict,
    parse_int,
    parse_mapping,
    parse_str,
    store_hash,
)
from synthgen.sources import GateReport, gate_samples
from synthgen.storage import StoreReader
from synthgen.trainers.config import DEVICES, SPLITS
from synthgen.trainers.data import TrainingStream
from synthgen.trainers.runs import (
    check_finite,
    check_resumable,
    check_run_folder,
    replace_folder,
    resolve_device,
    seeded,
)
from synthgen.trainers.train_state import load_train_state, save_train_state
from synthgen.trainers.trainlog import LossLog, colour_labels, save_png

GRID = 32  # sampled maps in each sample grid (4 rows of 8)


@dataclass(frozen=True)
class ShapeTrainConfig:
    store: str
    out_dir: str
    model: ShapeVaeConfig = field(default_factory=ShapeVaeConfig)
    batch_size: int = 32
    steps: int = 2000
    lr: float = 1e-3
    kl_weight: float = 1.0
    kl_anneal_steps: int = 500
    seed: int = 0
    split: str = "all"  # "train": leave out the held-out patients
    log_every: int = 10
    sample_every: int = 200
    checkpoint_every: int = 200
    gate_samples: int = 200  # maps sampled and gated at each checkpoint
    fit_prior: bool = True  # sample from a Gaussian fitted to the training codes (see shape_vae)
    device: str = "auto"

    def __post_init__(self) -> None:
        parse_str(self.store, "the training store")
        parse_str(self.out_dir, "the output folder")
        for name in ("batch_size", "steps", "log_every", "sample_every", "checkpoint_every", "gate_samples"):
            parse_int(getattr(self, name), f"the {name.replace('_', ' ')}", lo=1)
        parse_int(self.kl_anneal_steps, "the KL annealing steps", lo=0)
        parse_int(self.seed, "the seed", lo=0)
        check_range(self.lr, "the learning rate", 0.0, 1.0)
        check_range(self.kl_weight, "the KL weight", 0.0)
        if self.split not in SPLITS:
            raise ConfigError(f"Expected a split in {SPLITS}. Got {self.split!r} instead.")
        if self.device not in DEVICES:
            raise ConfigError(f"Expected a device in {DEVICES}. Got {self.device!r} instead.")

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return out | {"model": self.model.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShapeTrainConfig:
        data = parse_mapping(data, "a train-shape config")
        kwargs = fields_from_dict(cls, data, "the train-shape config", skip=("model",))
        for key in ("store", "out_dir"):
            if key not in kwargs:
                raise ConfigError(f"Expected {key!r} in the train-shape config. It is missing.")
        return cls(model=ShapeVaeConfig.from_dict(data.get("model", {})), **kwargs)

    def replace(self, **changes: Any) -> ShapeTrainConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ShapeTrainResult:
    step: int
    checkpoint: Path
    seconds: float
    losses: dict[str, float]
    gate: GateReport


def kl_at(step: int, weight: float, anneal_steps: int) -> float:
    """KL weight at ``step``: linear from weight / anneal_steps up to ``weight`` at ``anneal_steps``."""
    return weight if anneal_steps == 0 else weight * min(1.0, (step + 1) / anneal_steps)


def sample_grid(labels: np.ndarray, schema: LabelSchema, cols: int = 8) -> np.ndarray:
    """(rows * S, cols * S, 3) uint8 tiles of label maps (schema values) in the schema's colours."""
    lut = np.zeros(256, np.uint8)
    lut[list(schema.values)] = np.arange(1, schema.num_classes)
    tiles = colour_labels(lut[labels], schema)
    rows = -(-len(tiles) // cols)
    tiles = np.concatenate([tiles, np.zeros((rows * cols - len(tiles), *tiles.shape[1:]), np.uint8)])
    h, w = tiles.shape[1:3]
    return tiles.reshape(rows, cols, h, w, 3).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, 3)


def latest_vae_checkpoint(out_dir: Path) -> Path | None:
    for candidate in (out_dir / "checkpoint", out_dir / "checkpoint.old"):
        if (candidate / SHAPE_VAE_JSON).is_file():
            return candidate
    return None


def _gate_from_spec(spec: ShapeVaeSpec) -> GateReport:
    g = spec.gate
    return GateReport(
        int(g.get("checked", 0)), int(g.get("passed", 0)), tuple(sorted(g.get("reasons", {}).items()))
    )


def train_shape(cfg: ShapeTrainConfig, *, resume: bool = False, progress: bool = True) -> ShapeTrainResult:
    """Train the shape VAE on ``cfg.store``; with ``resume``, continue the run in ``cfg.out_dir``."""
    out = Path(cfg.out_dir)
    ckpt = latest_vae_checkpoint(out)
    check_run_folder(out, ckpt, resume)
    saved = read_vae_spec(ckpt) if ckpt is not None else None
    if saved is not None:
        check_resumable(dict(saved.train_config), cfg)
    device = resolve_device(cfg.device)
    reader = StoreReader(cfg.store)
    schema = reader.schema
    data = TrainingStream(
        reader, cfg.model.image_size, cfg.split, cfg.batch_size, cfg.seed, foreground_only=True
    )

    model = ShapeVae(cfg.model, schema.num_classes)
    init_vae(model, seeded(cfg.seed, 0))
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rngs = {"noise": seeded(cfg.seed, 2)}
    scaler = torch.amp.GradScaler(device.type, enabled=False)  # fp32 throughout: the VAE is small
    spec = ShapeVaeSpec(cfg.model, schema, store_hash(reader.attrs), train_config=cfg.to_dict())
    step = 0
    if saved is not None:
        if saved.store_hash != spec.store_hash:
            raise CheckpointError(
                f"Expected the training store the checkpoint was trained on ({saved.store_hash}). "
                f"Got {cfg.store} ({spec.store_hash}) instead."
            )
        step = load_train_state(ckpt, model=model, optimizers={"vae": optimizer}, rngs=rngs, scaler=scaler)
        spec = dataclasses.replace(spec, step=step, gate=saved.gate)
    out.mkdir(parents=True, exist_ok=True)
    log = LossLog(out / "losses.jsonl", resume_step=step)

    batches = data.batches(start_step=step)
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc="train-shape", unit="step")
    t0, logs = time.perf_counter(), {}
    while step < cfg.steps:
        labels = next(batches).labels.to(device)
        eps = torch.randn(cfg.batch_size, cfg.model.latent_dim, generator=rngs["noise"]).to(device)
        beta = kl_at(step, cfg.kl_weight, cfg.kl_anneal_steps)
        loss, logs = vae_loss(model, labels, eps, beta)
        check_finite(loss, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        logs |= {"kl_weight": beta}

        last = step == cfg.steps
        if step % cfg.checkpoint_every == 0 or last:
            model.eval()
            if cfg.fit_prior:
                fit_prior(model, data.class_maps())
            _, _, report = gate_samples(model, schema, cfg.gate_samples, seeded(cfg.seed, 4))
            model.train()
            spec = dataclasses.replace(spec, step=step, gate=report.to_dict())
            logs |= {"gate_pass_rate": report.pass_rate}
            tmp = out / "checkpoint.tmp"
            if tmp.exists():
                shutil.rmtree(tmp)
            save_vae(tmp, model, spec)
            state = {"optimizers": {"vae": optimizer}, "rngs": rngs, "scaler": scaler}
            save_train_state(tmp, model=model, step=step, config=cfg.to_dict(), **state)
            replace_folder(tmp, out / "checkpoint")
        if step % cfg.log_every == 0 or last or "gate_pass_rate" in logs:
            log.append(step, logs | {"seconds": time.perf_counter() - t0})
            bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items()}, refresh=False)
        logs.pop("gate_pass_rate", None)
        if step % cfg.sample_every == 0 or last:
            model.eval()
            grid = sample_labels(model, schema, GRID, seeded(cfg.seed, 3))
            model.train()
            save_png(out / "samples" / f"step_{step:07d}.png", sample_grid(grid, schema))
            log.plot(out / "losses.png")
        bar.update(1)
    bar.close()
    return ShapeTrainResult(step, out / "checkpoint", time.perf_counter() - t0, logs, _gate_from_spec(spec))
