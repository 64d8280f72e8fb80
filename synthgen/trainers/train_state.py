"""The resumable part of a training checkpoint, without pickle.

``train_state.safetensors`` holds every network's state (``nets.<key>``), every optimiser tensor
(``optim.<name>.<param>.<key>``) and every RNG state (``rng.<name>``); ``train_state.json`` holds the
rest: step, training config, optimiser param groups and scalar state, grad-scaler state.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from synthgen.errors import CheckpointError
from synthgen.models import load_weights, read_tensors, write_tensors
from synthgen.schemas import read_json

STATE_FORMAT = "synthgen-gan-train-state"
STATE_JSON, STATE_WEIGHTS = "train_state.json", "train_state.safetensors"


def flatten_optimizer(
    name: str, opt: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser state dict into tensors (for safetensors) and plain JSON values."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entries in sd["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{name}.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unflatten_optimizer(
    name: str, opt: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    prefix = f"optim.{name}."
    for key, value in tensors.items():
        if key.startswith(prefix):
            pid, entry = key[len(prefix) :].split(".", 1)
            state.setdefault(int(pid), {})[entry] = value
    for pid, entries in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(entries)
    groups = [
        dict(g) | {"betas": tuple(g["betas"])} if "betas" in g else dict(g) for g in meta["param_groups"]
    ]
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"The optimiser state {name!r} does not fit the model: {e}") from e


def save_train_state(
    directory: Path,
    *,
    model: nn.Module,
    optimizers: Mapping[str, torch.optim.Optimizer],
    rngs: Mapping[str, torch.Generator],
    scaler: torch.amp.GradScaler,
    step: int,
    config: Mapping[str, Any],
) -> None:
    tensors = {f"nets.{k}": v for k, v in model.state_dict().items()}
    optim_meta = {}
    for name, opt in optimizers.items():
        t, meta = flatten_optimizer(name, opt)
        tensors |= t
        optim_meta[name] = meta
    tensors |= {f"rng.{name}": g.get_state() for name, g in rngs.items()}
    write_tensors(directory / STATE_WEIGHTS, tensors)
    meta = {
        "format": STATE_FORMAT,
        "step": step,
        "config": dict(config),
        "optimizers": optim_meta,
        "rngs": {name: str(g.device) for name, g in rngs.items()},
        "scaler": scaler.state_dict(),
    }
    (directory / STATE_JSON).write_text(json.dumps(meta, indent=2) + "\n")


def read_train_config(directory: Path) -> dict[str, Any]:
    meta = read_json(directory / STATE_JSON)
    if not isinstance(meta, Mapping) or meta.get("format") != STATE_FORMAT:
        raise CheckpointError(f"Expected a synthgen training state in {directory / STATE_JSON}. Got none.")
    return dict(meta["config"])


def load_train_state(
    directory: Path,
    *,
    model: nn.Module,
    optimizers: Mapping[str, torch.optim.Optimizer],
    rngs: Mapping[str, torch.Generator],
    scaler: torch.amp.GradScaler,
) -> int:
    """Restore everything saved by :func:`save_train_state` in place; returns the step."""
    meta = read_json(directory / STATE_JSON)
    if not isinstance(meta, Mapping) or meta.get("format") != STATE_FORMAT:
        raise CheckpointError(f"Expected a synthgen training state in {directory / STATE_JSON}. Got none.")
    tensors = read_tensors(directory / STATE_WEIGHTS)
    nets = {k[len("nets.") :]: v for k, v in tensors.items() if k.startswith("nets.")}
    load_weights(model, nets, str(directory / STATE_WEIGHTS))
    for name, opt in optimizers.items():
        if name not in meta.get("optimizers", {}):
            raise CheckpointError(f"Expected optimiser {name!r} in {directory / STATE_JSON}. It is missing.")
        unflatten_optimizer(name, opt, tensors, meta["optimizers"][name])
    for name, gen in rngs.items():
        if f"rng.{name}" not in tensors:
            raise CheckpointError(
                f"Expected RNG state {name!r} in {directory / STATE_WEIGHTS}. It is missing."
            )
        gen.set_state(tensors[f"rng.{name}"])
    if meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    return int(meta["step"])
