"""What the training loops share about a run: its device, its random streams, its folder and its
checkpoints (written whole, replaced atomically), and which config changes a resume accepts."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from synthgen.errors import CheckpointError, ConfigError, TrainingDivergedError
from synthgen.schemas import GENERATOR_JSON
from synthgen.seeding import stream_seed

RESUMABLE_CHANGES = {
    "steps",
    "lr_decay_steps",
    "log_every",
    "sample_every",
    "checkpoint_every",
    "grid_size",
    "device",
    "store",
    "out_dir",
}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("Expected a CUDA GPU for device 'cuda'. Found none: use device 'cpu' or 'auto'.")
    return torch.device(name)


def seeded(seed: int, k: int, device: str | torch.device = "cpu") -> torch.Generator:
    """Stream ``k`` of a run: a torch.Generator seeded from SeedSequence([seed, k])."""
    return torch.Generator(device=device).manual_seed(stream_seed(seed, k))


def check_resumable(saved: dict, cfg: Any) -> None:
    current = cfg.to_dict()
    changed = sorted(
        k for k in set(saved) | set(current) if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k)
    )
    if changed:
        raise ConfigError(
            f"Expected the same training config as the checkpoint to resume. Got different {changed} "
            f"(checkpoint: {[saved.get(k) for k in changed]}, now: {[current.get(k) for k in changed]}). "
            "Only the steps, the decay steps and the logging intervals may change."
        )


def replace_folder(tmp: Path, final: Path) -> None:
    """Move a finished ``tmp`` folder to ``final``, replacing it; a crash leaves one complete copy."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def check_run_folder(out: Path, ckpt: Path | None, resume: bool) -> None:
    """A new run needs a folder without a checkpoint; a resumed run needs one."""
    if ckpt is not None and not resume:
        raise ConfigError(
            f"Expected a new output folder. {out} already holds a checkpoint: resume it or choose another."
        )
    if ckpt is None and resume:
        raise CheckpointError(f"Expected a checkpoint to resume in {out}. There is none.")


def latest_checkpoint(out_dir: str | Path, name: str = "checkpoint") -> Path | None:
    """The checkpoint folder of a run (or its previous copy, if a crash hit the replacement)."""
    for candidate in (Path(out_dir) / name, Path(out_dir) / f"{name}.old"):
        if (candidate / GENERATOR_JSON).is_file():
            return candidate
    return None


def check_finite(loss: torch.Tensor, step: int, what: str = "loss") -> None:
    """Stop at the first non-finite loss, before it reaches the weights or any checkpoint."""
    if not bool(torch.isfinite(loss.detach()).all()):
        raise TrainingDivergedError(
            f"Expected a finite {what}. Got {float(loss.detach().float().mean())} at step {step + 1}: training "
            "diverged and nothing of this step was saved. Lower the learning rate, or check the data for "
            "NaN or extreme values ('synthgen inspect')."
        )
