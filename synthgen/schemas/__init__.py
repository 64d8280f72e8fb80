"""Label schemas, configs and the store layout."""

from synthgen.schemas.labels import (
    BACKGROUND,
    LabelClass,
    LabelSchema,
    PlausibilityRules,
    remap_labels,
    remap_table,
)
from synthgen.schemas.presets import ACDC, CAMUS, MMWHS, PRESETS, get_schema

__all__ = [
    "ACDC",
    "BACKGROUND",
    "CAMUS",
    "MMWHS",
    "PRESETS",
    "LabelClass",
    "LabelSchema",
    "PlausibilityRules",
    "get_schema",
    "remap_labels",
    "remap_table",
]
