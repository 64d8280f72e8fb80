"""Built-in label schemas and the one function that resolves a schema by name or file."""

from __future__ import annotations

from pathlib import Path

from synthgen.errors import SchemaError
from synthgen.schemas.labels import LabelClass, LabelSchema, PlausibilityRules

RED, GREEN, BLUE = (220, 50, 47), (133, 153, 0), (38, 139, 210)
YELLOW, MAGENTA, CYAN, ORANGE = (181, 137, 0), (211, 54, 130), (42, 161, 152), (203, 75, 22)

CAMUS = LabelSchema(
    name="camus",
    description="Apical 2- and 4-chamber echocardiography (CAMUS, Leclerc et al. 2019).",
    classes=(
        LabelClass("lv_cavity", 1, RED),
        LabelClass("lv_myocardium", 2, GREEN),
        LabelClass("left_atrium", 3, BLUE),
    ),
    rules=PlausibilityRules(
        required=("lv_cavity", "lv_myocardium", "left_atrium"),
        connected=("lv_cavity", "lv_myocardium", "left_atrium"),
        min_area=(("lv_cavity", 0.01), ("lv_myocardium", 0.01), ("left_atrium", 0.004)),
        # the cavity is walled by myocardium and open towards the atrium through the mitral valve
        neighbours=(("lv_cavity", ("lv_myocardium", "left_atrium")),),
        # real maps touch background at a mitral-annulus corner: at most 1% of the cavity border
        contact_tolerance=0.015,
    ),
)

ACDC = LabelSchema(
    name="acdc",
    description="Cine short-axis cardiac MRI (ACDC, Bernard et al. 2018).",
    classes=(
        LabelClass("rv_cavity", 1, BLUE),
        LabelClass("lv_myocardium", 2, GREEN),
        LabelClass("lv_cavity", 3, RED),
    ),
    rules=PlausibilityRules(
        # apical slices show myocardium without a cavity, so only the wall is required
        required=("lv_myocardium",),
        connected=("lv_myocardium", "lv_cavity"),
        # apical cavities cover 0.03% of the image at their smallest (ACDC)
        min_area=(("lv_cavity", 0.0002), ("lv_myocardium", 0.001)),
        # in short axis the LV cavity is enclosed by its wall
        neighbours=(("lv_cavity", ("lv_myocardium",)),),
        contact_tolerance=0.02,
    ),
)

MMWHS = LabelSchema(
    name="mmwhs",
    description="Whole-heart CT/MR (MM-WHS, Zhuang et al.); source values 500..850 mapped to 1..7.",
    classes=(
        LabelClass("lv_cavity", 1, RED, source_value=500),
        LabelClass("rv_cavity", 2, BLUE, source_value=600),
        LabelClass("left_atrium", 3, CYAN, source_value=420),
        LabelClass("right_atrium", 4, MAGENTA, source_value=550),
        LabelClass("lv_myocardium", 5, GREEN, source_value=205),
        LabelClass("aorta", 6, YELLOW, source_value=820),
        LabelClass("pulmonary_artery", 7, ORANGE, source_value=850),
    ),
    rules=PlausibilityRules(
        required=("lv_cavity", "lv_myocardium"),
        connected=("lv_cavity",),
        min_area=(("lv_cavity", 0.002),),
    ),
)

PRESETS: dict[str, LabelSchema] = {s.name: s for s in (CAMUS, ACDC, MMWHS)}


def get_schema(name_or_path: str | Path) -> LabelSchema:
    """A preset by name (``camus``, ``acdc``, ``mmwhs``) or a user schema from a .toml/.json file."""
    key = str(name_or_path)
    if key in PRESETS:
        return PRESETS[key]
    path = Path(key)
    if path.suffix.lower() in {".toml", ".json"}:
        if not path.is_file():
            raise SchemaError(f"Label schema file {path} does not exist.")
        return LabelSchema.from_file(path)
    raise SchemaError(
        f"Expected a schema preset {sorted(PRESETS)} or a .toml/.json schema file. Got {key!r} instead."
    )
