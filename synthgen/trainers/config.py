"""The GAN training configuration: one frozen dataclass, JSON round trip, and the merge of a base
config with command-line values.

Architecture arguments live in the architecture's own config (``SpadeConfig``, ``Pix2PixConfig``),
nested under ``model`` with its ``arch`` name; :func:`synthgen.models.registry.model_config_from_dict`
resolves it. What the data dictates (label count, channels, dtype, intensity) is not configurable:
it is read from the training store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from synthgen.errors import ConfigError
from synthgen.schemas import (
    check_range,
    fields_from_dict,
    merge_overrides,
    parse_int,
    parse_mapping,
    parse_str,
)

SPLITS = ("all", "train", "test")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainConfig:
    """One GAN training run. ``model`` is the architecture config (its ``arch`` names it)."""

    store: str
    out_dir: str
    model: Any  # SpadeConfig | Pix2PixConfig | any registered architecture config
    image_size: int = 128
    batch_size: int = 8
    steps: int = 1000
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lr_decay_steps: int = 0  # linear decay to 0 over the last lr_decay_steps steps
    seed: int = 0
    split: str = "all"  # "train": leave out the held-out patients (see synthgen.storage.splits)
    augment: bool = False  # small random affine warps, same for image and labels
    log_every: int = 10
    sample_every: int = 200
    checkpoint_every: int = 200
    grid_size: int = 8  # samples in each sample grid
    amp: bool = True  # mixed precision; only ever used on a GPU
    device: str = "auto"

    def __post_init__(self) -> None:
        parse_str(self.store, "the training store")
        parse_str(self.out_dir, "the output folder")
        parse_int(self.image_size, "the image size", lo=8, hi=4096)
        parse_int(self.batch_size, "the batch size", lo=1)
        parse_int(self.steps, "the number of steps", lo=1)
        for name in ("lr_g", "lr_d"):
            check_range(getattr(self, name), f"the learning rate {name}", 0.0, 1.0)
        check_range(self.beta1, "beta1", 0.0, 1.0)
        check_range(self.beta2, "beta2", 0.0, 1.0)
        parse_int(self.lr_decay_steps, "the learning-rate decay steps", lo=0)
        parse_int(self.seed, "the seed", lo=0)
        for name in ("log_every", "sample_every", "checkpoint_every", "grid_size"):
            parse_int(getattr(self, name), name, lo=1)
        if self.split not in SPLITS:
            raise ConfigError(f"Expected a split in {SPLITS}. Got {self.split!r} instead.")
        if self.device not in DEVICES:
            raise ConfigError(f"Expected a device in {DEVICES}. Got {self.device!r} instead.")
        if not hasattr(self.model, "arch"):
            raise ConfigError(f"Expected an architecture config as 'model'. Got {self.model!r} instead.")

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["model"] = self.model.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        from synthgen.models import model_config_from_dict

        data = parse_mapping(data, "a training config")
        if "model" not in data:
            raise ConfigError("Expected a 'model' table in the training config. It is missing.")
        kwargs = fields_from_dict(cls, data, "the training config", skip=("model",))
        for key in ("store", "out_dir"):
            if key not in kwargs:
                raise ConfigError(f"Expected {key!r} in the training config. It is missing.")
        return cls(model=model_config_from_dict(data["model"]), **kwargs)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def lr_at(step: int, base: float, steps: int, decay_steps: int) -> float:
    """Learning rate at ``step``: constant, then linear decay to 0 over the last ``decay_steps`` steps."""
    start = steps - decay_steps
    if decay_steps == 0 or step < start:
        return base
    return base * max(0.0, 1.0 - (step - start) / decay_steps)


def merge_config(
    base: Mapping[str, Any] | None,
    overrides: Mapping[str, Any],
    model_overrides: Mapping[str, Any],
    arch: str | None = None,
) -> TrainConfig:
    """A config from a base dict (a JSON file, a checkpoint's config, or nothing) and the values given
    on the command line (``None`` values are not given). A different ``arch`` starts a fresh model config."""
    data = merge_overrides(base or {}, {**overrides, "model": {**model_overrides, "arch": arch}})
    data["model"] = {"arch": "spade"} | data.get("model", {})
    return TrainConfig.from_dict(data)
