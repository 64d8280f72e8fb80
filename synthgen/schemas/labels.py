"""Label schemas: which integer in a label map means which structure.

A :class:`LabelSchema` names the foreground classes of a label map, their values (background is
always 0 and is implicit), display colours (a class given none takes one of :data:`DEFAULT_COLORS`
by its position), other names it goes by (``aliases``), the values the original dataset used where
those differ (MM-WHS stores 500, 600, ...), and the anatomical plausibility rules that the gate checks.

:func:`match_classes` pairs the classes of two schemas by name, then by alias (a class's own
``aliases`` and the common names of :data:`SYNONYMS`, compared without case): how a segmenter of one
schema is scored on a store of another.
"""

from __future__ import annotations

import colorsys
import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
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
Color = tuple[int, int, int]

# Kelly's colours of maximum contrast (Kelly 1965) less black, white and grey (which vanish on grey
# images), the darkest olive and the four nearest another (RGB distance > 50 between any two): the
# colours of classes given none, by position in their schema; more classes take golden-ratio hues
DEFAULT_COLORS: tuple[Color, ...] = (
    (243, 195, 0),
    (135, 86, 146),
    (243, 132, 0),
    (161, 202, 241),
    (190, 0, 50),
    (194, 178, 128),
    (0, 136, 86),
    (230, 143, 172),
    (0, 103, 165),
    (249, 147, 121),
    (179, 68, 108),
    (136, 45, 23),
    (141, 182, 0),
    (226, 88, 34),
)

# Names the same structure goes by in public datasets (ACDC and M&Ms in nnU-Net form: RV, MLV/MYO,
# LVC/LV; Sunnybrook: endocardium), compared in lower case with spaces and hyphens as underscores.
# The first name of each group is synthgen's.
SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("lv_cavity", "lv", "lvc", "lv_blood_pool", "lv_endocardium", "left_ventricle"),
    ("lv_myocardium", "myo", "mlv", "lvm", "lv_myo", "myocardium"),
    ("rv_cavity", "rv", "rvc", "rv_blood_pool", "rv_endocardium", "right_ventricle"),
    ("left_atrium", "la"),
    ("right_atrium", "ra"),
    ("aorta", "ao"),
    ("pulmonary_artery", "pa"),
)


@dataclass(frozen=True)
class LabelClass:
    """One foreground class: its name, its value in synthgen label maps, a colour for previews (None:
    one of :data:`DEFAULT_COLORS`, chosen by the schema), other names it goes by in other datasets."""

    name: str
    value: int
    color: Color | None = None
    source_value: int | None = None  # value in the dataset's own files, where it differs
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        parse_str(self.name, "a class name")
        if self.name == BACKGROUND:
            raise SchemaError("Expected foreground classes only. 'background' is implicit (value 0).")
        parse_int(self.value, f"the value of class {self.name!r}", lo=1, hi=255)
        if self.color is not None and (
            len(self.color) != 3
            or any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= 255 for c in self.color)
        ):
            raise SchemaError(
                f"Expected an RGB colour [r, g, b] of integers in [0, 255] for class {self.name!r}. "
                f"Got {self.color!r} instead."
            )
        if self.source_value is not None:
            parse_int(self.source_value, f"the source value of class {self.name!r}", lo=0)
        parse_str_tuple(self.aliases, f"the aliases of class {self.name!r}")
        if BACKGROUND in {name_key(a) for a in self.aliases}:
            raise SchemaError(f"Expected aliases of class {self.name!r} other than 'background'.")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "value": self.value}
        if self.color is not None:
            out["color"] = list(self.color)
        if self.source_value is not None:
            out["source_value"] = self.source_value
        if self.aliases:
            out["aliases"] = list(self.aliases)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelClass:
        data = parse_mapping(data, "a label class")
        keys = {"name", "value", "color", "source_value", "aliases"}
        reject_unknown_keys(data, keys, "a label class")
        color = data.get("color")
        if color is not None and (isinstance(color, str) or not isinstance(color, Sequence)):
            raise SchemaError(f"Expected 'color' to be [r, g, b]. Got {color!r} instead.")
        return cls(
            name=parse_str(data.get("name"), "a class 'name'"),
            value=parse_int(data.get("value"), "a class 'value'", lo=1, hi=255),
            color=None if color is None else tuple(color),  # type: ignore[arg-type]
            source_value=data.get("source_value"),
            aliases=parse_str_tuple(data.get("aliases", ()), "a class's 'aliases'"),
        )


def name_key(name: str) -> str:
    """A class name as names are compared across schemas: lower case, spaces and hyphens as '_'."""
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def default_color(index: int) -> Color:
    """The colour of the class at ``index`` (from 0) of a schema that gives it none: the fixed
    :data:`DEFAULT_COLORS` in order, then hues spaced by the golden ratio (pure function of ``index``)."""
    if index < len(DEFAULT_COLORS):
        return DEFAULT_COLORS[index]
    hue = ((index - len(DEFAULT_COLORS)) * 0.6180339887498949) % 1.0
    value = (1.0, 0.75, 0.55)[(index - len(DEFAULT_COLORS)) % 3]
    rgb = colorsys.hsv_to_rgb(hue, 0.85, value)
    return tuple(round(255 * c) for c in rgb)  # type: ignore[return-value]


def fill_colors(colors: Sequence[Color | None]) -> tuple[Color, ...]:
    """``colors`` with each None replaced by :func:`default_color` of its position or, where that
    colour is taken (given to another class, or chosen for an earlier one), of the next free position."""
    taken = {tuple(c) for c in colors if c is not None}
    out = []
    for i, color in enumerate(colors):
        if color is None:
            j = i
            while default_color(j) in taken:
                j += 1
            color = default_color(j)
            taken.add(color)
        out.append(tuple(color))
    return tuple(out)  # type: ignore[return-value]


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
        keys = [name_key(n) for c in self.classes for n in (c.name, *c.aliases)]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise SchemaError(
                f"Expected class names and aliases that differ (ignoring case) in schema {self.name!r}. "
                f"Got repeats {dupes}."
            )
        if any(c.color is None for c in self.classes):  # every class of a schema has a colour
            colors = fill_colors([c.color for c in self.classes])
            classes = tuple(replace(c, color=k) for c, k in zip(self.classes, colors, strict=True))
            object.__setattr__(self, "classes", classes)
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

    def palette(self, colors: Sequence[Color] | None = None) -> np.ndarray:
        """(256, 3) uint8 colour table indexed by label value; background is black. ``colors``: one
        per class to draw them in instead of their own."""
        colors = [c.color for c in self.classes] if colors is None else colors
        table = np.zeros((256, 3), np.uint8)
        for c, color in zip(self.classes, colors, strict=True):
            table[c.value] = color
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


@dataclass(frozen=True)
class ClassPair:
    """A class of one schema (``own``) and its counterpart in another (``other``), and how they met:
    ``name`` (the same name), ``alias`` (a class's aliases or :data:`SYNONYMS`), ``given`` (by hand)."""

    own: str
    other: str
    by: str


@dataclass(frozen=True)
class ClassMatch:
    """The classes two schemas share (in the order of the first) and those each holds alone."""

    pairs: tuple[ClassPair, ...]
    own_only: tuple[str, ...]
    other_only: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The shared classes by their names in the first schema."""
        return tuple(p.own for p in self.pairs)

    def aliases(self) -> dict[str, str]:
        """For :func:`remap_table` from the second schema to the first: each shared class renamed to
        its counterpart, every other class to background."""
        return {p.other: p.own for p in self.pairs} | dict.fromkeys(self.other_only, BACKGROUND)


def class_keys(c: LabelClass) -> set[str]:
    """Every name class ``c`` goes by (:func:`name_key` form): its name, its aliases, their synonyms."""
    keys = {name_key(n) for n in (c.name, *c.aliases)}
    for group in SYNONYMS:
        if keys & set(group):
            keys |= set(group)
    return keys


def match_classes(own: LabelSchema, other: LabelSchema, given: Mapping[str, str] | None = None) -> ClassMatch:
    """Pair the classes of ``own`` with those of ``other``: first the ``given`` pairs (``{other class:
    own class}``), then equal names, then classes that share an alias (:func:`class_keys`). A class
    whose alias fits several classes of the other schema is an error asking for ``given``."""
    given = dict(given or {})
    for theirs, mine in given.items():
        other.value_of(theirs)  # a SchemaError naming the classes of each schema
        own.value_of(mine)
    if len(set(given.values())) != len(given):
        raise SchemaError(f"Expected each class of {own.name!r} given once. Got {given}.")
    by_own = {mine: ClassPair(mine, theirs, "given") for theirs, mine in given.items()}
    free = {c.name: c for c in other.classes if c.name not in given}
    for c in own.classes:
        if c.name not in by_own and c.name in free:
            by_own[c.name] = ClassPair(c.name, c.name, "name")
            del free[c.name]
    left = [c for c in own.classes if c.name not in by_own]
    fits = {c.name: {d.name for d in free.values() if class_keys(c) & class_keys(d)} for c in left}
    for c in left:
        rivals = {e.name for e in left if fits[e.name] & fits[c.name]}
        if len(fits[c.name]) > 1 or len(rivals) > 1:
            raise SchemaError(
                f"Expected one counterpart by alias for each class. Got an ambiguous match: classes "
                f"{sorted(rivals)} of schema {own.name!r} and {sorted(fits[c.name])} of {other.name!r}: "
                "pair them by hand (--alias)."
            )
        if fits[c.name]:
            by_own[c.name] = ClassPair(c.name, min(fits[c.name]), "alias")
    pairs = tuple(by_own[c.name] for c in own.classes if c.name in by_own)
    matched = {p.other for p in pairs}
    return ClassMatch(
        pairs,
        tuple(c.name for c in own.classes if c.name not in by_own),
        tuple(c.name for c in other.classes if c.name not in matched),
    )
