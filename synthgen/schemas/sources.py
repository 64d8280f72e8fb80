"""Typed label-source configs (``source`` in a build config): one frozen dataclass per ``kind``, each
with ``to_dict``/``from_dict``; an unknown kind, key or view is an error where the config enters.

The sources themselves (which read stores, volumes or checkpoints) are in :mod:`synthgen.sources`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from synthgen.errors import ConfigError
from synthgen.schemas.parse import parse_float, parse_int, parse_mapping, parse_str, reject_unknown_keys

SOURCE_SPLITS = ("all", "train")  # the patients a store source draws from (synthgen.storage.splits)

VIEWS: tuple[str, ...] = ("echo_a4c", "echo_a2c", "sa_mr", "ct_axial")  # the procedural anatomy views

VIEW_ALIASES: dict[str, tuple[str, ...]] = {
    "apical": ("echo_a4c", "echo_a2c"),
    "a4c": ("echo_a4c",),
    "a2c": ("echo_a2c",),
    "short_axis": ("sa_mr",),
    "ct_axial": ("ct_axial",),
} | {view: (view,) for view in VIEWS}


def _source_dict(data: Mapping[str, Any], kind: str, keys: set[str]) -> Mapping[str, Any]:
    data = parse_mapping(data, "source")
    if data.get("kind", kind) != kind:
        raise ConfigError(f"Expected source.kind {kind!r}. Got {data.get('kind')!r} instead.")
    reject_unknown_keys(data, keys | {"kind"}, f"a {kind} source")
    return data


@dataclass(frozen=True)
class ProceduralSourceConfig:
    kind: ClassVar[str] = "procedural"
    view: str = "apical"

    def __post_init__(self) -> None:
        if self.view not in VIEW_ALIASES:
            raise ConfigError(f"Expected source.view in {sorted(VIEW_ALIASES)}. Got {self.view!r} instead.")

    @property
    def views(self) -> tuple[str, ...]:
        return VIEW_ALIASES[self.view]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "view": self.view}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProceduralSourceConfig:
        data = _source_dict(data, cls.kind, {"view"})
        return cls(view=parse_str(data.get("view", "apical"), "source.view"))


@dataclass(frozen=True)
class StoreSourceConfig:
    kind: ClassVar[str] = "store"
    url: str
    skip_empty: bool = True  # never draw a map without foreground
    # the patients to draw from (synthgen.storage.splits): "train" leaves the held-out test tenth out,
    # so that a segmenter scored on those patients never saw their anatomy through synthetic images
    split: str = "all"

    def __post_init__(self) -> None:
        if self.split not in SOURCE_SPLITS:
            raise ConfigError(f"Expected source.split in {list(SOURCE_SPLITS)}. Got {self.split!r} instead.")

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "url": self.url, "skip_empty": self.skip_empty}
        return out | ({"split": self.split} if self.split != "all" else {})  # old configs keep their token

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StoreSourceConfig:
        data = _source_dict(data, cls.kind, {"url", "skip_empty", "split"})
        skip = data.get("skip_empty", True)
        if not isinstance(skip, bool):
            raise ConfigError(f"Expected source.skip_empty to be true or false. Got {skip!r} instead.")
        return cls(
            url=parse_str(data.get("url"), "source.url (the store to draw labels from)"),
            skip_empty=skip,
            split=parse_str(data.get("split", "all"), "source.split"),
        )


@dataclass(frozen=True)
class VolumeSourceConfig:
    """Planes through label volumes (any file :func:`synthgen.storage.read_volume` reads).

    Volumes are (slices, rows, cols); ``spacing`` is the voxel size along those axes in any one unit
    (ACDC's files carry none: about (6.5, 1, 1) for its 10 mm slices of 1.5 mm pixels). The standard
    plane is perpendicular to ``normal_axis`` through the labelled region; each draw tilts it about
    its two in-plane axes by up to ``max_tilt`` degrees, turns it in-plane by up to ``max_rotation``,
    moves it along the normal within ``offset_fraction`` of the labelled extent and shifts it
    in-plane by up to ``max_shift`` of the field of view, which is the volume's whole in-plane extent.
    """

    kind: ClassVar[str] = "volume"
    urls: tuple[str, ...]
    schema: str = "acdc"
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    normal_axis: int = 0
    max_tilt: float = 15.0
    max_rotation: float = 10.0
    offset_fraction: float = 0.8
    max_shift: float = 0.05

    def __post_init__(self) -> None:
        if not self.urls:
            raise ConfigError("Expected at least one volume in source.urls. Got none.")
        for u in self.urls:
            parse_str(u, "each volume path in source.urls")
        if len(self.spacing) != 3 or any(
            parse_float(v, "source.spacing", lo=1e-6) <= 0 for v in self.spacing
        ):
            raise ConfigError(f"Expected source.spacing as 3 positive sizes. Got {self.spacing!r} instead.")
        parse_int(self.normal_axis, "source.normal_axis", lo=0, hi=2)
        parse_float(self.max_tilt, "source.max_tilt (degrees)", lo=0.0, hi=90.0)
        parse_float(self.max_rotation, "source.max_rotation (degrees)", lo=0.0, hi=180.0)
        parse_float(self.offset_fraction, "source.offset_fraction", lo=0.0, hi=1.0)
        parse_float(self.max_shift, "source.max_shift", lo=0.0, hi=0.5)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VolumeSourceConfig:
        keys = set(cls.__dataclass_fields__) | {"url"}
        data = dict(_source_dict(data, cls.kind, keys))
        data.pop("kind", None)
        if "url" in data:  # one volume, as the CLI's --source-url gives it
            if "urls" in data:
                raise ConfigError("Expected source.url or source.urls. Got both.")
            data["urls"] = [data.pop("url")]
        urls = data.get("urls")
        if isinstance(urls, str) or not isinstance(urls, Sequence):
            raise ConfigError(f"Expected source.urls to be a list of volume paths. Got {urls!r} instead.")
        data["urls"] = tuple(urls)
        if "spacing" in data:
            data["spacing"] = tuple(data["spacing"])
        return cls(**data)


@dataclass(frozen=True)
class VaeSourceConfig:
    """New anatomies from a shape VAE checkpoint (``synthgen train-shape``): z ~ N(0, I), decoded."""

    kind: ClassVar[str] = "vae"
    checkpoint: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "checkpoint": self.checkpoint}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VaeSourceConfig:
        data = dict(_source_dict(data, cls.kind, {"checkpoint", "url"}))
        if "url" in data:  # as the CLI's --source-url gives it
            if "checkpoint" in data:
                raise ConfigError("Expected source.url or source.checkpoint. Got both.")
            data["checkpoint"] = data.pop("url")
        return cls(checkpoint=parse_str(data.get("checkpoint"), "source.checkpoint (a shape VAE folder)"))


CONFIGS: dict[str, Any] = {
    c.kind: c for c in (ProceduralSourceConfig, StoreSourceConfig, VolumeSourceConfig, VaeSourceConfig)
}


SourceConfig = ProceduralSourceConfig | StoreSourceConfig | VolumeSourceConfig | VaeSourceConfig


def source_config_from_dict(data: Mapping[str, Any]) -> SourceConfig:
    """The config of a source from its dict (``kind`` picks the class)."""
    data = parse_mapping(data, "source")
    kind = data.get("kind")
    if kind not in CONFIGS:
        raise ConfigError(f"Expected source.kind in {sorted(CONFIGS)}. Got {kind!r} instead.")
    return CONFIGS[kind].from_dict(data)
