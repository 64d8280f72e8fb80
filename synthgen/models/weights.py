"""GAN checkpoints: safetensors weights plus JSON, never pickle, validated on load.

A generator checkpoint is a folder with ``generator.json`` (a :class:`GeneratorSpec`: architecture
arguments, image size, channels, dtype, intensity convention, label schema, a hash of the training
store) and ``generator.safetensors`` (the generator's weights, spectral norm folded in). A training
checkpoint adds ``train_state.json`` and ``train_state.safetensors``: every network, the optimisers
(tensors flattened into safetensors, the rest in JSON), RNG states and the step, enough to resume
exactly. Loading a file from a stranger runs no code: safetensors holds tensors only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from synthgen.errors import CheckpointError
from synthgen.models.registry import build_generator, model_config_from_dict
from synthgen.schemas import (
    GENERATOR_JSON,
    GENERATOR_WEIGHTS,
    GeneratorSpec,
    read_spec,
    spec_errors,
)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError as e:
        raise CheckpointError(f"Expected {path.name} in checkpoint {path.parent}. It is missing.") from e
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"Cannot read safetensors file {path}: {e}.") from e


def write_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def load_weights(module: nn.Module, tensors: Mapping[str, torch.Tensor], where: str) -> None:
    """``load_state_dict`` (strict) whose mismatches become a :class:`CheckpointError`."""
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(
            f"The weights in {where} do not fit the architecture in its spec: {' '.join(first[:3])}"
        ) from e


def write_checkpoint(
    directory: str | Path, module: nn.Module, weights_name: str, spec: Mapping[str, Any], spec_name: str
) -> Path:
    """Write ``module``'s weights (safetensors) and its JSON spec into ``directory`` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_tensors(directory / weights_name, module.state_dict())
    (directory / spec_name).write_text(json.dumps(spec, indent=2) + "\n")
    return directory


def save_generator(directory: str | Path, generator: nn.Module, spec: GeneratorSpec) -> Path:
    """Write ``generator.json`` and ``generator.safetensors`` (``generator`` without spectral norm)."""
    return write_checkpoint(directory, generator, GENERATOR_WEIGHTS, spec.to_dict(), GENERATOR_JSON)


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, GeneratorSpec]:
    """The generator of a checkpoint folder, in eval mode, and its spec. Validates both."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"Expected a generator checkpoint folder at {path}. There is none.")
    spec = read_spec(path)
    with spec_errors("generator", str(path / GENERATOR_JSON)):
        model_config = model_config_from_dict(spec.model)
    generator = build_generator(model_config, spec.data_shape)
    load_weights(generator, read_tensors(path / GENERATOR_WEIGHTS), str(path / GENERATOR_WEIGHTS))
    return generator.to(device).eval(), spec
