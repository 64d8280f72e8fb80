"""The plausibility gate: reject label maps that are anatomically broken, and say why.

The rules are data, held by the label schema (:class:`~synthgen.schemas.PlausibilityRules`); this
module only evaluates them. Four kinds of rule, each reported as a short reason code:

``missing:<class>``
    a class listed in ``required`` has no pixel;
``split:<class>``
    a class listed in ``connected`` has more than one 8-connected component;
``small:<class>``
    a class listed in ``min_area`` is present but covers less than that fraction of the image;
``touches:<class>:<other>``
    a class with a ``neighbours`` rule shares more than ``contact_tolerance`` of its border
    (4-neighbour pixel edges) with ``other``, a class (or ``background``) not in its list. Pixels
    outside the image count as background, so a cavity cut by the image edge is not enclosed.

Flags: :func:`check_batch` returns one ``uint32`` per sample with one bit per reason code, for the
per-sample ``meta/plausibility`` array. The layout is fixed by the schema's rules:
:func:`flag_codes` lists the code of bit 0, bit 1, ..., in this order: ``missing`` for each
required class, ``split`` for each connected class, ``small`` for each ``min_area`` entry (each in
the order the rules list them), then for each ``neighbours`` rule the classes it may not touch,
background first and then in schema order. A store carries its schema, so the flags can always be
decoded with :func:`decode_flags`. A schema whose rules need more than 32 bits is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from synthgen.errors import LabelValueError, SchemaError
from synthgen.kernels import class_stats
from synthgen.schemas import BACKGROUND, LabelSchema

FLAG_BITS = 32


@dataclass(frozen=True)
class GateResult:
    """The verdict on one label map: ``passed`` and the reason codes when it did not."""

    passed: bool
    reasons: tuple[str, ...] = ()


def _checks(schema: LabelSchema) -> list[tuple[str, str, str]]:
    """(kind, class, other) of each flag bit, in bit order; ``other`` is used by ``touches`` only."""
    rules = schema.rules
    checks = [("missing", n, "") for n in rules.required]
    checks += [("split", n, "") for n in rules.connected]
    checks += [("small", n, "") for n, _ in rules.min_area]
    for name, allowed in rules.neighbours:
        checks += [
            ("touches", name, other)
            for other in (BACKGROUND, *schema.names)
            if other != name and other not in allowed
        ]
    checks = list(dict.fromkeys(checks))
    if len(checks) > FLAG_BITS:
        raise SchemaError(
            f"Expected plausibility rules that fit in {FLAG_BITS} flag bits. "
            f"Schema {schema.name!r} needs {len(checks)}; list fewer classes in its rules."
        )
    return checks


def flag_codes(schema: LabelSchema) -> tuple[str, ...]:
    """Reason code of each flag bit: ``flag_codes(schema)[j]`` is what bit ``j`` means."""
    return tuple(":".join(c for c in check if c) for check in _checks(schema))


def decode_flags(flags: int, schema: LabelSchema) -> tuple[str, ...]:
    """The reason codes set in one sample's flags."""
    flags = int(flags)
    return tuple(code for j, code in enumerate(flag_codes(schema)) if flags >> j & 1)


def _class_index(labels: np.ndarray, schema: LabelSchema) -> np.ndarray:
    """Labels as class indices (0 background, 1.. in schema order), checking every value."""
    values = schema.values
    top = int(labels.max())
    if values == tuple(range(1, len(values) + 1)) and top <= len(values):
        return labels  # the common case: values are already 1..C
    table = np.full(256, 255, np.uint8)
    table[0] = 0
    table[list(values)] = np.arange(1, len(values) + 1)
    index = np.take(table, labels)
    if int(index.max()) == 255:
        bad = np.unique(labels[index == 255])
        raise LabelValueError(
            f"Label value {int(bad[0])} given to the plausibility gate is not in schema {schema.name!r} "
            f"(expected values {[0, *values]})."
        )
    return index


def check_batch(labels: np.ndarray, schema: LabelSchema) -> tuple[np.ndarray, np.ndarray]:
    """Check an (N, H, W) uint8 stack: a boolean ``passed`` mask and ``uint32`` reason flags.

    A value outside the schema is an error (:class:`LabelValueError`), not a rejection.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3 or labels.dtype != np.uint8:
        raise LabelValueError(
            f"Expected an (N, H, W) uint8 stack of label maps. Got {labels.shape} {labels.dtype} instead."
        )
    checks = _checks(schema)
    n = labels.shape[0]
    flags = np.zeros(n, np.uint32)
    if n == 0 or not checks:
        return flags == 0, flags
    index = _class_index(labels, schema)
    position = {name: i for i, name in enumerate((BACKGROUND, *schema.names))}
    min_area = dict(schema.rules.min_area)
    pixels = labels.shape[1] * labels.shape[2]
    # one pass: (N, K) areas, (N, K, K) edges, (N, K) 8-connected components
    connected = [position[name] for kind, name, _ in checks if kind == "split"]
    areas, contact, components = class_stats(index, len(position), components=connected)
    border = contact.sum(axis=2)
    for j, (kind, name, other) in enumerate(checks):
        i = position[name]
        if kind == "missing":
            failed = areas[:, i] == 0
        elif kind == "split":
            failed = components[:, i] > 1
        elif kind == "small":
            failed = (areas[:, i] > 0) & (areas[:, i] < min_area[name] * pixels)
        else:
            failed = contact[:, i, position[other]] > schema.rules.contact_tolerance * border[:, i]
        flags[failed] |= np.uint32(1 << j)
    return flags == 0, flags


def check(labels: np.ndarray, schema: LabelSchema) -> GateResult:
    """Check one (H, W) uint8 label map."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise LabelValueError(f"Expected one (H, W) label map. Got shape {labels.shape} instead.")
    passed, flags = check_batch(labels[None], schema)
    return GateResult(bool(passed[0]), decode_flags(int(flags[0]), schema))


@dataclass(frozen=True)
class GateReport:
    """How many maps were checked and passed, and how often each reason was given.

    A map rejected for two reasons counts once in ``checked - passed`` and once under each reason.
    """

    checked: int = 0
    passed: int = 0
    reasons: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_flags(cls, flags: np.ndarray, schema: LabelSchema) -> GateReport:
        flags = np.asarray(flags, np.uint32)
        counts = {
            code: int(np.count_nonzero(flags & np.uint32(1 << j)))
            for j, code in enumerate(flag_codes(schema))
        }
        return cls(
            checked=int(flags.size),
            passed=int(np.count_nonzero(flags == 0)),
            reasons=tuple(sorted((c, k) for c, k in counts.items() if k)),
        )

    @property
    def rejected(self) -> int:
        return self.checked - self.passed

    @property
    def pass_rate(self) -> float:
        return self.passed / self.checked if self.checked else 1.0

    def counts(self) -> dict[str, int]:
        return dict(self.reasons)

    def merge(self, other: GateReport) -> GateReport:
        counts = self.counts()
        for code, k in other.reasons:
            counts[code] = counts.get(code, 0) + k
        return GateReport(
            self.checked + other.checked, self.passed + other.passed, tuple(sorted(counts.items()))
        )

    def to_dict(self) -> dict[str, Any]:
        return {"checked": self.checked, "passed": self.passed, "reasons": self.counts()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateReport:
        reasons = data.get("reasons", {})
        if not isinstance(reasons, Mapping):
            raise SchemaError(f"Expected 'reasons' to map reason codes to counts. Got {reasons!r} instead.")
        return cls(
            int(data["checked"]),
            int(data["passed"]),
            tuple(sorted((str(c), int(k)) for c, k in reasons.items())),
        )
