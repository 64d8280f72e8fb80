"""The registry of GAN architectures: name -> (config class, model class).

To add one, write its config dataclass (with ``arch``, ``to_dict``, ``from_dict``) and its
:class:`~synthgen.models.gan.GanModel` subclass, and add a line to ``ARCHITECTURES``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

from torch import nn

from synthgen.errors import ConfigError
from synthgen.models.cyclegan import CycleGan, CycleGanConfig, CycleGenerator
from synthgen.models.gan import GanModel
from synthgen.models.pix2pix import Pix2PixConfig, Pix2PixGan, UNetGenerator
from synthgen.models.spade import SpadeConfig, SpadeGan, SpadeGenerator
from synthgen.schemas import DataShape, parse_mapping


class Architecture(NamedTuple):
    config: type
    model: type[GanModel]
    generator: Callable[[Any, DataShape], nn.Module]  # the generator alone (for inference)


ARCHITECTURES: dict[str, Architecture] = {
    "spade": Architecture(SpadeConfig, SpadeGan, SpadeGenerator),
    "pix2pix": Architecture(Pix2PixConfig, Pix2PixGan, UNetGenerator),
    "cyclegan": Architecture(CycleGanConfig, CycleGan, CycleGenerator),
}


def get_architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ConfigError(f"Expected an architecture in {sorted(ARCHITECTURES)}. Got {name!r} instead.")
    return ARCHITECTURES[name]


def model_config_from_dict(data: Any) -> Any:
    """An architecture config from its dict; ``arch`` picks the class."""
    data = parse_mapping(data, "the model config")
    arch = get_architecture(str(data.get("arch")))
    return arch.config.from_dict(data)


def default_model_config(name: str, **overrides: Any) -> Any:
    """The architecture's default config with ``overrides`` (unknown names are errors)."""
    cls = get_architecture(name).config
    return cls.from_dict({"arch": name, **overrides})


def build_gan(cfg: Any, shape: DataShape) -> GanModel:
    return get_architecture(cfg.arch).model(cfg, shape)


def build_generator(cfg: Any, shape: DataShape) -> nn.Module:
    """The generator alone, without spectral norm: the form checkpoints hold for inference."""
    if getattr(cfg, "spectral_norm", False):
        cfg = dataclasses.replace(cfg, spectral_norm=False)
    return get_architecture(cfg.arch).generator(cfg, shape)
