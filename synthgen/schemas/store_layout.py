"""The layout of a synthgen Zarr store: what arrays it holds, their shapes, and its root attributes.

This module is the contract that readers outside synthgen rely on (see the README). It holds no I/O:
:mod:`synthgen.storage.store` reads and writes stores that follow it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synthgen.errors import ConfigError, StoreFormatError
from synthgen.schemas.labels import LabelSchema
from synthgen.schemas.parse import parse_int, parse_mapping, parse_str, reject_unknown_keys

FORMAT_VERSION = 1
ATTR_KEY = "synthgen"
IMAGE_DTYPES = ("uint8", "uint16", "float16", "float32")
META_DTYPES = (
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "int32",
    "int64",
    "float32",
    "float64",
    "bool",
)


@dataclass(frozen=True)
class MetaField:
    """One per-sample metadata array ``meta/<name>`` of shape (N, *shape)."""

    name: str
    dtype: str
    shape: tuple[int, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        parse_str(self.name, "a metadata field name")
        if not self.name.isidentifier():
            raise ConfigError(f"Expected a metadata field name like 'seed'. Got {self.name!r} instead.")
        if self.dtype not in META_DTYPES:
            raise ConfigError(f"Expected a metadata dtype in {META_DTYPES}. Got {self.dtype!r} instead.")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetaField:
        data = parse_mapping(data, "a metadata field")
        reject_unknown_keys(data, {"name", "dtype", "shape", "description"}, "a metadata field")
        return cls(
            name=parse_str(data.get("name"), "a metadata field 'name'"),
            dtype=parse_str(data.get("dtype"), "a metadata field 'dtype'"),
            shape=tuple(parse_int(s, "a metadata shape entry", lo=1) for s in data.get("shape", ())),
            description=str(data.get("description", "")),
        )


@dataclass(frozen=True)
class Intensity:
    """How image values are to be read: ``low`` and ``high`` bound the meaningful range."""

    low: float = 0.0
    high: float = 255.0
    description: str = "grey levels, 0 black, 255 white"

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "description": self.description}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Intensity:
        data = parse_mapping(data, "'intensity'")
        reject_unknown_keys(data, {"low", "high", "description"}, "'intensity'")
        return cls(
            float(data.get("low", 0.0)), float(data.get("high", 255.0)), str(data.get("description", ""))
        )

    @classmethod
    def for_dtype(cls, dtype: str) -> Intensity:
        if dtype == "uint8":
            return cls(0.0, 255.0, "grey levels, 0 black, 255 white")
        if dtype == "uint16":
            return cls(0.0, 65535.0, "grey levels, 0 black, 65535 white")
        return cls(0.0, 1.0, "grey levels, 0.0 black, 1.0 white")


@dataclass(frozen=True)
class StoreLayout:
    """Shapes and chunking of a store. ``image_shape`` is (H, W) or (C, H, W)."""

    n: int
    image_shape: tuple[int, ...]
    image_dtype: str = "uint8"
    shard_size: int = 256
    chunk_size: int = 1
    meta: tuple[MetaField, ...] = ()

    def __post_init__(self) -> None:
        parse_int(self.n, "the number of samples", lo=1)
        if len(self.image_shape) not in (2, 3) or any(int(s) < 1 for s in self.image_shape):
            raise ConfigError(
                f"Expected an image shape (H, W) or (C, H, W). Got {self.image_shape!r} instead."
            )
        if self.image_dtype not in IMAGE_DTYPES:
            raise ConfigError(f"Expected an image dtype in {IMAGE_DTYPES}. Got {self.image_dtype!r} instead.")
        parse_int(self.shard_size, "the shard size (samples per shard)", lo=1)
        parse_int(self.chunk_size, "the chunk size (samples per chunk)", lo=1)
        if self.shard_size % self.chunk_size:
            raise ConfigError(
                f"Expected the shard size to be a multiple of the chunk size. "
                f"Got shard {self.shard_size}, chunk {self.chunk_size} instead."
            )
        names = [m.name for m in self.meta]
        if len(set(names)) != len(names):
            raise ConfigError(f"Expected unique metadata field names. Got {names} instead.")

    @property
    def label_shape(self) -> tuple[int, int]:
        return tuple(self.image_shape[-2:])  # type: ignore[return-value]

    @property
    def num_shards(self) -> int:
        return -(-self.n // self.shard_size)

    def shard_bounds(self, k: int) -> tuple[int, int]:
        if not 0 <= k < self.num_shards:
            raise IndexError(f"Expected a shard index in [0, {self.num_shards}). Got {k} instead.")
        start = k * self.shard_size
        return start, min(start + self.shard_size, self.n)

    def shard_of(self, i: int) -> int:
        if not 0 <= i < self.n:
            raise IndexError(f"Expected a sample index in [0, {self.n}). Got {i} instead.")
        return i // self.shard_size

    def meta_field(self, name: str) -> MetaField:
        for m in self.meta:
            if m.name == name:
                return m
        raise KeyError(f"Expected a metadata field in {[m.name for m in self.meta]}. Got {name!r} instead.")

    def bytes_per_sample(self) -> int:
        image = int(np.prod(self.image_shape)) * np.dtype(self.image_dtype).itemsize
        label = int(np.prod(self.label_shape))
        meta = sum(int(np.prod(m.shape or (1,))) * np.dtype(m.dtype).itemsize for m in self.meta)
        return image + label + meta

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "image_shape": list(self.image_shape),
            "image_dtype": self.image_dtype,
            "shard_size": self.shard_size,
            "chunk_size": self.chunk_size,
            "meta": [m.to_dict() for m in self.meta],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StoreLayout:
        data = parse_mapping(data, "'layout'")
        reject_unknown_keys(
            data, {"n", "image_shape", "image_dtype", "shard_size", "chunk_size", "meta"}, "'layout'"
        )
        return cls(
            n=parse_int(data.get("n"), "'layout.n'", lo=1),
            image_shape=tuple(
                parse_int(s, "an image shape entry", lo=1) for s in data.get("image_shape", ())
            ),
            image_dtype=parse_str(data.get("image_dtype", "uint8"), "'layout.image_dtype'"),
            shard_size=parse_int(data.get("shard_size", 256), "'layout.shard_size'", lo=1),
            chunk_size=parse_int(data.get("chunk_size", 1), "'layout.chunk_size'", lo=1),
            meta=tuple(MetaField.from_dict(m) for m in data.get("meta", ())),
        )


@dataclass(frozen=True)
class StoreAttrs:
    """Everything under the root attribute key ``synthgen``."""

    layout: StoreLayout
    schema: LabelSchema
    intensity: Intensity = field(default_factory=Intensity)
    spacing: tuple[float, ...] | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)
    complete_shards: tuple[int, ...] = ()
    format_version: int = FORMAT_VERSION
    shard_digests: Mapping[int, str] = field(default_factory=dict)  # SHA-256 of each complete shard's files

    @property
    def is_complete(self) -> bool:
        return len(self.complete_shards) == self.layout.num_shards

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "layout": self.layout.to_dict(),
            "label_schema": self.schema.to_dict(),
            "intensity": self.intensity.to_dict(),
            "spacing": list(self.spacing) if self.spacing is not None else None,
            "provenance": dict(self.provenance),
            "complete_shards": sorted(self.complete_shards),
            "shard_digests": {str(k): self.shard_digests[k] for k in sorted(self.shard_digests)},
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "the store") -> StoreAttrs:
        if not isinstance(data, Mapping):
            raise StoreFormatError(
                f"Expected a synthgen store with root attribute {ATTR_KEY!r} in {where}. Got none: "
                "this is not a synthgen store."
            )
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise StoreFormatError(
                f"Expected synthgen store format version {FORMAT_VERSION} in {where}. Got {version!r} instead: "
                "rebuild the store or use the synthgen release that wrote it."
            )
        try:
            layout = StoreLayout.from_dict(data["layout"])
            complete = tuple(int(k) for k in data.get("complete_shards", ()))
            bad = [k for k in complete if not 0 <= k < layout.num_shards]
            if bad:
                raise StoreFormatError(f"Complete shard indices {bad[:5]} in {where} are out of range.")
            spacing = data.get("spacing")
            return cls(
                layout=layout,
                schema=LabelSchema.from_dict(data["label_schema"]),
                intensity=Intensity.from_dict(data.get("intensity", {})),
                spacing=tuple(float(s) for s in spacing) if spacing is not None else None,
                provenance=dict(data.get("provenance", {})),
                complete_shards=tuple(sorted(set(complete))),
                format_version=version,
                shard_digests={int(k): str(v) for k, v in dict(data.get("shard_digests", {})).items()},
            )
        except KeyError as e:
            raise StoreFormatError(
                f"Expected key {e.args[0]!r} under {ATTR_KEY!r} in {where}. It is missing."
            ) from e
        except (ConfigError, TypeError, ValueError) as e:
            raise StoreFormatError(f"Malformed {ATTR_KEY!r} attributes in {where}: {e}") from e
