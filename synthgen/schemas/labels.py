"""Label schemas: which integer in a label map means which structure.

A :class:`LabelSchema` names the foreground classes of a label map, their values (background is
always 0 and is implicit), display colours, the values the original dataset used where those differ
(MM-WHS stores 500, 600, ...), and the anatomical plausibility rules that the gate checks.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthgen.errors import ConfigError, LabelValueError, SchemaError
from synthgen.schemas.parse import (
    parse_float,
    parse_int,
    parse_mapping,
    parse_str,
    parse_str_tuple,
    reject_unknown_keys,
)

BACKGROUND = "background"


@dataclass(frozen=True)
class LabelClass:
    """One foreground class: its name, its value in synthgen label maps, a colour for previews."""

    name: str
    value: int
    color: tuple[int, int, int] = (255, 255, 255)
    source_value: int | None = None  # value in the dataset's own files, where it differs

    def __post_init__(self) -> None:
        parse_str(self.name, "a class name")
        if self.name == BACKGROUND:
            raise SchemaError("Expected foreground classes only. 'background' is implicit (value 0).")
        parse_int(self.value, f"the value of class {self.name!r}", lo=1, hi=255)
        if len(self.color) != 3 or any(not 0 <= int(c) <= 255 for c in self.color):
            raise SchemaError(f"Expected an RGB colour for class {self.name!r}. Got {self.color!r} instead.")
        if self.source_value is not None:
            parse_int(self.source_value, f"the source value of class {self.name!r}", lo=0)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "value": self.value, "color": list(self.color)}
        if self.source_value is not None:
            out["source_value"] = self.source_value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelClass:
        data = parse_mapping(data, "a label class")
        reject_unknown_keys(data, {"name", "value", "color", "source_value"}, "a label class")
        color = data.get("color", (255, 255, 255))
        if isinstance(color, str) or not isinstance(color, Sequence):
            raise SchemaError(f"Expected 'color' to be [r, g, b]. Got {color!r} instead.")
        return cls(
            name=parse_str(data.get("name"), "a class 'name'"),
            value=parse_int(data.get("value"), "a class 'value'", lo=1, hi=255),
            color=tuple(int(c) for c in color),  # type: ignore[arg-type]
            source_value=data.get("source_value"),
        )


@dataclass(frozen=True)
class PlausibilityRules:
    """What a label map of this schema must look like to count as anatomy (see the gate).

    ``min_area`` is a fraction of the image area. ``neighbours`` maps a class to the only classes it
    may touch (4-connectivity); a class that must be enclosed by its wall lists just the wall, a
    cavity open towards another chamber lists the wall and that chamber. ``contact_tolerance`` is the
    fraction of a class's border (4-neighbour pixel edges) that may touch other classes before it
    counts as touching them: expert maps resized with repaired boundaries leave a corner pixel or two.
    """

    required: tuple[str, ...] = ()
    connected: tuple[str, ...] = ()
    min_area: tuple[tuple[str, float], ...] = ()
    neighbours: tuple[tuple[str, tuple[str, ...]], ...] = ()
    contact_tolerance: float = 0.0

    def names(self) -> set[str]:
        used = set(self.required) | set(self.connected) | {n for n, _ in self.min_area}
        for name, allowed in self.neighbours:
            used |= {name, *allowed}
        return used - {BACKGROUND}

    def to_dict(self) -> dict[str, Any]:
        return {
            "required": list(self.required),
            "connected": list(self.connected),
            "min_area": {n: a for n, a in self.min_area},
            "neighbours": {n: list(allowed) for n, allowed in self.neighbours},
            "contact_tolerance": self.contact_tolerance,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlausibilityRules:
        data = parse_mapping(data, "'rules'")
        keys = {"required", "connected", "min_area", "neighbours", "contact_tolerance"}
        reject_unknown_keys(data, keys, "'rules'")
        min_area = parse_mapping(data.get("min_area", {}), "'rules.min_area'")
        neighbours = parse_mapping(data.get("neighbours", {}), "'rules.neighbours'")
        return cls(
            required=parse_str_tuple(data.get("required", ()), "'rules.required'"),
            connected=parse_str_tuple(data.get("connected", ()), "'rules.connected'"),
            min_area=tuple(
                (n, parse_float(a, f"'rules.min_area.{n}'", lo=0.0, hi=1.0)) for n, a in min_area.items()
            ),
            neighbours=tuple(
                (n, parse_str_tuple(a, f"'rules.neighbours.{n}'")) for n, a in neighbours.items()
            ),
            contact_tolerance=parse_float(
                data.get("contact_tolerance", 0.0), "'rules.contact_tolerance'", lo=0.0, hi=1.0
            ),
        )


@dataclass(frozen=True)
class LabelSchema:
    """A named set of label classes. Background (0) is implicit."""

    name: str
    classes: tuple[LabelClass, ...]
    rules: PlausibilityRules = field(default_factory=PlausibilityRules)
    description: str = ""

    def __post_init__(self) -> None:
        parse_str(self.name, "a schema name")
        if not self.classes:
            raise SchemaError(f"Expected at least one class in schema {self.name!r}. Got none.")
        names = [c.name for c in self.classes]
        values = [c.value for c in self.classes]
        for kind, items in (("name", names), ("value", values)):
            dupes = sorted({x for x in items if items.count(x) > 1})
            if dupes:
                raise SchemaError(
                    f"Expected unique class {kind}s in schema {self.name!r}. Got repeats {dupes}."
                )
        sources = [c.source_value for c in self.classes if c.source_value is not None]
        if len(set(sources)) != len(sources):
            raise SchemaError(f"Expected unique source values in schema {self.name!r}. Got {sources}.")
        unknown = sorted(self.rules.names() - set(names))
        if unknown:
            raise SchemaError(
                f"Schema {self.name!r} has rules about unknown classes {unknown}. Expected names from {names}."
            )

    # -- lookups ---------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    @property
    def values(self) -> tuple[int, ...]:
        return tuple(c.value for c in self.classes)

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return len(self.classes) + 1

    @property
    def max_value(self) -> int:
        return max(self.values)

    def value_of(self, name: str) -> int:
        if name == BACKGROUND:
            return 0
        for c in self.classes:
            if c.name == name:
                return c.value
        raise SchemaError(
            f"Expected a class of schema {self.name!r} ({list(self.names)}). Got {name!r} instead."
        )

    def name_of(self, value: int) -> str:
        if value == 0:
            return BACKGROUND
        for c in self.classes:
            if c.value == value:
                return c.name
        raise LabelValueError(f"Expected a value of schema {self.name!r} {[0, *self.values]}. Got {value}.")

    def palette(self) -> np.ndarray:
        """(256, 3) uint8 colour table indexed by label value; background is black."""
        table = np.zeros((256, 3), np.uint8)
        for c in self.classes:
            table[c.value] = c.color
        return table

    # -- validation and encoding -------------------------------------------------------------
    def check_labels(self, labels: np.ndarray, where: str) -> None:
        """Raise :class:`LabelValueError` naming the first value outside the schema and ``where``."""
        if labels.dtype == np.uint8:  # counting is ~10x faster than sorting for the common case
            present = np.flatnonzero(np.bincount(labels.ravel(), minlength=256))
        else:
            present = np.unique(labels)
        allowed = np.array([0, *self.values])
        bad = present[~np.isin(present, allowed)]
        if bad.size:
            raise LabelValueError(
                f"Label value {bad[0].item()} in {where} is not in schema {self.name!r} "
                f"(expected values {allowed.tolist()}). Choose the right --schema or remap the labels."
            )

    def encode_source(self, raw: np.ndarray, where: str) -> np.ndarray:
        """Map values of the dataset's own files to this schema's values (uint8), checking every value."""
        if not any(c.source_value is not None for c in self.classes):
            if raw.dtype.kind == "f":
                if not np.array_equal(raw, np.round(raw)):
                    raise LabelValueError(f"Expected integer label values in {where}. Got fractional values.")
            self.check_labels(raw, where)
            return raw.astype(np.uint8)
        table = {0: 0} | {
            (c.source_value if c.source_value is not None else c.value): c.value for c in self.classes
        }
        present = np.unique(raw)
        bad = [v for v in present.tolist() if v not in table]
        if bad:
            raise LabelValueError(
                f"Label value {bad[0]} in {where} is not in schema {self.name!r} "
                f"(expected source values {sorted(table)})."
            )
        out = np.zeros(raw.shape, np.uint8)
        for src, dst in table.items():
            if dst:
                out[raw == src] = dst
        return out

    # -- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "classes": [c.to_dict() for c in self.classes],
            "rules": self.rules.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelSchema:
        try:
            data = parse_mapping(data, "a label schema")
            reject_unknown_keys(data, {"name", "description", "classes", "rules"}, "a label schema")
            classes = data.get("classes")
            if isinstance(classes, str) or not isinstance(classes, Sequence):
                raise SchemaError(f"Expected 'classes' to be a list of classes. Got {classes!r} instead.")
            return cls(
                name=parse_str(data.get("name"), "the schema 'name'"),
                classes=tuple(LabelClass.from_dict(c) for c in classes),
                rules=PlausibilityRules.from_dict(data.get("rules", {})),
                description=str(data.get("description", "")),
            )
        except ConfigError as e:
            raise SchemaError(str(e)) from e

    @classmethod
    def from_file(cls, path: str | Path) -> LabelSchema:
        path = Path(path)
        try:
            text = path.read_bytes()
        except OSError as e:
            raise SchemaError(f"Cannot read label schema file {path}: {e.strerror}.") from e
        try:
            if path.suffix.lower() == ".toml":
                data = tomllib.loads(text.decode())
            elif path.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                raise SchemaError(f"Expected a .toml or .json schema file. Got {path.name!r} instead.")
        except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SchemaError(f"Cannot parse label schema file {path}: {e}.") from e
        return cls.from_dict(data)


def label_lut(schema: LabelSchema) -> np.ndarray:
    """(256,) uint8 table: label value -> class index (0 background, then schema order); 255 elsewhere."""
    lut = np.full(256, 255, np.uint8)
    lut[0] = 0
    for i, value in enumerate(schema.values, start=1):
        lut[value] = i
    return lut


def remap_table(
    src: LabelSchema,
    dst: LabelSchema,
    *,
    aliases: Mapping[str, str] | None = None,
    drop_unmatched: bool = False,
) -> np.ndarray:
    """A (256,) uint8 lookup table that maps ``src`` values to ``dst`` values by class name.

    ``aliases`` renames source classes first (``{"lv_endocardium": "lv_cavity"}``). A source class
    with no counterpart in ``dst`` is an error unless ``drop_unmatched``, which sends it to background.
    Values outside ``src`` map to 255, which :func:`remap_labels` reports as an error.
    """
    aliases = dict(aliases or {})
    table = np.full(256, 255, np.uint8)
    table[0] = 0
    dst_names = set(dst.names)
    for c in src.classes:
        target = aliases.get(c.name, c.name)
        if target in dst_names or target == BACKGROUND:
            table[c.value] = dst.value_of(target)
        elif drop_unmatched:
            table[c.value] = 0
        else:
            raise SchemaError(
                f"Class {c.name!r} of schema {src.name!r} has no counterpart in schema {dst.name!r} "
                f"({list(dst.names)}). Map it with an alias or drop unmatched classes."
            )
    return table


def remap_labels(labels: np.ndarray, table: np.ndarray, src: LabelSchema, where: str) -> np.ndarray:
    """Apply a :func:`remap_table`; a value outside ``src`` is an error naming the value and ``where``."""
    if labels.dtype != np.uint8:
        raise LabelValueError(f"Expected uint8 label maps in {where}. Got {labels.dtype} instead.")
    src.check_labels(labels, where)
    return table[labels]
