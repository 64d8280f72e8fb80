import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from synthgen.errors import ConfigError, LabelValueError, SchemaError
from synthgen.schemas import (
    ACDC,
    CAMUS,
    MMWHS,
    PRESETS,
    LabelClass,
    LabelSchema,
    get_schema,
    remap_labels,
    remap_table,
)


@pytest.mark.parametrize("schema", list(PRESETS.values()), ids=list(PRESETS))
def test_presets_round_trip_through_json(schema):
    assert LabelSchema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema


def test_preset_values():
    assert CAMUS.value_of("lv_cavity") == 1 and CAMUS.value_of("left_atrium") == 3
    assert ACDC.value_of("rv_cavity") == 1 and ACDC.value_of("lv_cavity") == 3
    assert [c.source_value for c in MMWHS.classes] == [500, 600, 420, 550, 205, 820, 850]
    assert MMWHS.values == tuple(range(1, 8))


def test_mmwhs_source_values_are_encoded():
    raw = np.array([[0, 500, 600], [420, 550, 205], [820, 850, 0]], np.int16)
    assert MMWHS.encode_source(raw, "x").tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 0]]
    with pytest.raises(LabelValueError, match=r"Label value 1 in vol\.nii"):
        MMWHS.encode_source(np.array([0, 1]), "vol.nii")


def test_check_labels_names_value_and_place():
    with pytest.raises(LabelValueError, match=r"Label value 7 in case 12 is not in schema 'camus'"):
        CAMUS.check_labels(np.array([0, 1, 7], np.uint8), "case 12")


def test_schema_from_toml_and_json(tmp_path):
    toml = tmp_path / "mine.toml"
    toml.write_text(
        'name = "mine"\n[[classes]]\nname = "lv_cavity"\nvalue = 1\ncolor = [255, 0, 0]\n'
        '[[classes]]\nname = "wall"\nvalue = 4\n[rules]\nrequired = ["lv_cavity"]\n'
        '[rules.neighbours]\nlv_cavity = ["wall"]\n'
    )
    schema = get_schema(toml)
    assert schema.values == (1, 4) and schema.rules.neighbours == (("lv_cavity", ("wall",)),)
    js = tmp_path / "mine.json"
    js.write_text(json.dumps(schema.to_dict()))
    assert get_schema(str(js)) == schema


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "x"\nclasses = []', "at least one class"),
        (
            'name = "x"\n[[classes]]\nname = "a"\nvalue = 1\n[[classes]]\nname = "b"\nvalue = 1',
            "unique class values",
        ),
        ('name = "x"\n[[classes]]\nname = "a"\nvalue = 300', r"in \[1, 255\]"),
        ('name = "x"\n[[classes]]\nname = "a"\nvalue = 1\ncolour = [1, 2, 3]', "Unknown key"),
        ('name = "x"\n[[classes]]\nname = "a"\nvalue = 1\n[rules]\nrequired = ["b"]', "unknown classes"),
        ("name = [", "Cannot parse"),
    ],
)
def test_bad_schema_files(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SchemaError, match=message):
        get_schema(path)


def test_unknown_preset():
    with pytest.raises(SchemaError, match="Expected a schema preset"):
        get_schema("echo")


def test_background_is_implicit():
    with pytest.raises(SchemaError, match="background"):
        LabelClass("background", 1)


def test_remap_acdc_to_lv_only_schema():
    lv_only = LabelSchema("lv", (LabelClass("lv_cavity", 1), LabelClass("lv_myocardium", 2)))
    with pytest.raises(SchemaError, match="'rv_cavity' of schema 'acdc' has no counterpart"):
        remap_table(ACDC, lv_only)
    table = remap_table(ACDC, lv_only, drop_unmatched=True)
    labels = np.array([[0, 1, 2, 3]], np.uint8)
    assert remap_labels(labels, table, ACDC, "x").tolist() == [[0, 0, 2, 1]]
    with pytest.raises(LabelValueError, match="Label value 5 in sample 3"):
        remap_labels(np.array([[5]], np.uint8), table, ACDC, "sample 3")


def test_remap_with_alias():
    echo = LabelSchema("e", (LabelClass("endo", 1), LabelClass("lv_myocardium", 2), LabelClass("la", 3)))
    table = remap_table(echo, CAMUS, aliases={"endo": "lv_cavity", "la": "left_atrium"})
    assert table[:4].tolist() == [0, 1, 2, 3]


@given(st.lists(st.integers(1, 255), min_size=1, max_size=8, unique=True))
def test_any_valid_schema_round_trips(values):
    schema = LabelSchema("s", tuple(LabelClass(f"c{v}", v) for v in values))
    assert LabelSchema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema
    assert remap_table(schema, schema)[[0, *values]].tolist() == [0, *values]


def test_parse_errors_are_config_errors():
    with pytest.raises(ConfigError):
        LabelClass("a", "1")  # type: ignore[arg-type]


def test_merge_overrides_is_the_one_config_merge():
    from synthgen.schemas import merge_overrides

    base = {"n": 10, "deform": {"spacing": 16.0, "enabled": True}, "source": {"kind": "store", "url": "a"}}
    # None is "not given"; nested tables merge key by key
    merged = merge_overrides(base, {"n": None, "seed": 3, "deform": {"spacing": 8.0, "enabled": None}})
    assert merged == base | {"seed": 3, "deform": {"spacing": 8.0, "enabled": True}}
    # the same kind merges; another kind replaces the table (a store url means nothing to a procedural source)
    assert merge_overrides(base, {"source": {"url": "b"}})["source"] == {"kind": "store", "url": "b"}
    assert merge_overrides(base, {"source": {"kind": "procedural"}})["source"] == {"kind": "procedural"}
    model = {"model": {"arch": "spade", "width": 8}}
    assert merge_overrides(model, {"model": {"arch": None, "depth": 3}})["model"] == {
        "arch": "spade",
        "width": 8,
        "depth": 3,
    }
    assert merge_overrides(model, {"model": {"arch": "pix2pix", "depth": None}})["model"] == {
        "arch": "pix2pix"
    }
    assert merge_overrides({"model": {"width": 8}}, {"model": {"arch": "pix2pix"}})["model"] == {
        "width": 8,
        "arch": "pix2pix",
    }
    assert base == {
        "n": 10,
        "deform": {"spacing": 16.0, "enabled": True},
        "source": {"kind": "store", "url": "a"},
    }
