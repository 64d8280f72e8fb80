"""The GAN training loop, shared by every architecture (nanoGPT style: read it top to bottom).

One step: take the next batch of the streamed training split, take the generator step (discriminator frozen), then the discriminator step
on the detached fakes. Learning rates follow :func:`~synthgen.trainers.config.lr_at`. Every random
draw comes from explicit generators seeded from ``SeedSequence([seed, k])`` whose states are
checkpointed with the networks and optimisers, and the data stream restarts at the step's batch, so a
resumed run continues exactly as an uninterrupted one. Mixed precision (autocast + grad scaling) is used on a GPU only; on a CPU everything is fp32.

The output folder holds ``checkpoint/`` (generator + training state, replaced atomically),
``losses.jsonl``, ``losses.png`` and ``samples/step_NNNNNNN.png``.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from synthgen.errors import CheckpointError
from synthgen.models import Batch, GanModel, build_gan, init_weights, save_generator, set_requires_grad
from synthgen.schemas import GeneratorSpec, read_spec, store_hash
from synthgen.storage import StoreReader
from synthgen.trainers.augment import GanAugment
from synthgen.trainers.config import TrainConfig, lr_at
from synthgen.trainers.data import TrainingStream, augment_batch
from synthgen.trainers.runs import (
    check_finite,
    check_resumable,
    check_run_folder,
    latest_checkpoint,
    replace_folder,
    resolve_device,
    seeded,
)
from synthgen.trainers.train_state import load_train_state, read_train_config, save_train_state
from synthgen.trainers.trainlog import LossLog, sample_grid, save_png

# may change between a run and its resumption (the schedule, the intervals, where things are); everything
# else must match. A resumed run equals an uninterrupted one when the learning-rate schedules agree up to
# the resumption step (constant rate, or a decay that starts later).


@dataclass(frozen=True)
class TrainResult:
    step: int
    checkpoint: Path
    seconds: float
    losses: dict[str, float]


def fixed_samples(
    data: TrainingStream, cfg: TrainConfig, style_dim: int, device: torch.device
) -> tuple[Batch, list[torch.Tensor | None]]:
    """The grid's pairs (evenly spaced through the data) and two fixed styles for them."""
    batch = to_device(data.pick(cfg.grid_size), device)
    if not style_dim:
        return batch, [None]
    gen = seeded(cfg.seed, 3)
    n = batch.images.shape[0]
    return batch, [torch.randn(n, style_dim, generator=gen).to(device) for _ in range(2)]


def to_device(batch: Batch, device: torch.device) -> Batch:
    return Batch(batch.labels.to(device, non_blocking=True), batch.images.to(device, non_blocking=True))


def write_samples(model: GanModel, batch: Batch, styles: list, schema, path: Path) -> None:
    model.eval()
    with torch.no_grad():
        fakes = [model.generate(batch.labels, z).float().cpu().numpy() for z in styles]
    model.train()
    grid = sample_grid(batch.labels.argmax(1).cpu().numpy(), batch.images.cpu().numpy(), fakes, schema)
    save_png(path, grid)


def save_checkpoint(out: Path, model: GanModel, spec: GeneratorSpec, **state) -> Path:
    tmp = out / "checkpoint.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_generator(tmp, model.inference_generator(), spec)
    save_train_state(tmp, model=model, **state)
    replace_folder(tmp, out / "checkpoint")
    return out / "checkpoint"


def train_gan(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.store``; with ``resume``, continue from the checkpoint in ``cfg.out_dir``."""
    out = Path(cfg.out_dir)
    ckpt = latest_checkpoint(out)
    check_run_folder(out, ckpt, resume)
    if ckpt is not None:
        check_resumable(read_train_config(ckpt), cfg)
    device = resolve_device(cfg.device)
    reader = StoreReader(cfg.store)
    data = TrainingStream(reader, cfg.image_size, cfg.split, cfg.batch_size, cfg.seed)

    model = build_gan(cfg.model, data.shape)
    init_weights(model, seeded(cfg.seed, 0))
    model.to(device).train()
    g_params, d_params = model.g_parameters(), model.d_parameters()
    betas = (cfg.beta1, cfg.beta2)
    optimizers = {
        "g": torch.optim.Adam(g_params, lr=cfg.lr_g, betas=betas),
        "d": torch.optim.Adam(d_params, lr=cfg.lr_d, betas=betas),
    }
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    rngs = {"data": seeded(cfg.seed, 1), "noise": seeded(cfg.seed, 2)}
    augment = GanAugment() if cfg.augment else None
    spec = GeneratorSpec(
        arch=cfg.model.arch,
        model=cfg.model.to_dict(),
        image_size=cfg.image_size,
        channels=data.shape.channels,
        image_dtype=reader.layout.image_dtype,
        intensity=reader.attrs.intensity,
        schema=reader.schema,
        style_dim=model.style_dim,
        store_hash=store_hash(reader.attrs),
        split=cfg.split,
    )
    step = 0
    if ckpt is not None:
        saved = read_spec(ckpt)
        if saved.store_hash != spec.store_hash:
            raise CheckpointError(
                f"Expected the training store the checkpoint was trained on ({saved.store_hash}). "
                f"Got {cfg.store} ({spec.store_hash}) instead."
            )
        step = load_train_state(ckpt, model=model, optimizers=optimizers, rngs=rngs, scaler=scaler)
    out.mkdir(parents=True, exist_ok=True)
    log = LossLog(out / "losses.jsonl", resume_step=step)
    grid_batch, grid_styles = fixed_samples(data, cfg, model.style_dim, device)
    batches = data.batches(start_step=step)
    state = {"optimizers": optimizers, "rngs": rngs, "scaler": scaler}

    bar = tqdm(
        total=cfg.steps, initial=step, disable=not progress, desc=f"train-gan {cfg.model.arch}", unit="step"
    )
    t0, cpu0 = time.perf_counter(), time.process_time()
    logs: dict[str, float] = {}
    while step < cfg.steps:
        lr_g = lr_at(step, cfg.lr_g, cfg.steps, cfg.lr_decay_steps)
        lr_d = lr_at(step, cfg.lr_d, cfg.steps, cfg.lr_decay_steps)
        for group in optimizers["g"].param_groups:
            group["lr"] = lr_g
        for group in optimizers["d"].param_groups:
            group["lr"] = lr_d
        batch = to_device(next(batches), device)
        if augment is not None:
            batch = augment_batch(batch, augment, rngs["data"])

        # generator step, discriminator frozen
        set_requires_grad(d_params, False)
        with torch.autocast(device.type, enabled=use_amp):
            g = model.generator_step(batch, rngs["noise"])
        check_finite(g.loss, step, "generator loss")
        optimizers["g"].zero_grad(set_to_none=True)
        scaler.scale(g.loss).backward()
        scaler.step(optimizers["g"])
        set_requires_grad(d_params, True)

        # discriminator step on the detached fakes
        with torch.autocast(device.type, enabled=use_amp):
            d_loss, d_logs = model.discriminator_step(batch, g.fakes)
        check_finite(d_loss, step, "discriminator loss")
        optimizers["d"].zero_grad(set_to_none=True)
        scaler.scale(d_loss).backward()
        scaler.step(optimizers["d"])
        scaler.update()
        step += 1

        logs = g.logs | d_logs
        if step % cfg.log_every == 0 or step == cfg.steps:
            timing = {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - cpu0}
            log.append(step, logs | {"lr_g": lr_g, "lr_d": lr_d} | timing)
            bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items()}, refresh=False)
        if step % cfg.sample_every == 0 or step == cfg.steps:
            write_samples(
                model, grid_batch, grid_styles, reader.schema, out / "samples" / f"step_{step:07d}.png"
            )
            log.plot(out / "losses.png")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            spec = dataclasses.replace(spec, step=step)
            save_checkpoint(out, model, spec, step=step, config=cfg.to_dict(), **state)
        bar.update(1)
    bar.close()
    return TrainResult(step, out / "checkpoint", time.perf_counter() - t0, logs)


def resume_config(out_dir: str | Path) -> dict:
    """The training config saved in the last checkpoint of ``out_dir`` (to resume it)."""
    ckpt = latest_checkpoint(out_dir)
    if ckpt is None:
        raise CheckpointError(f"Expected a checkpoint to resume in {out_dir}. There is none.")
    return read_train_config(ckpt)
