"""Across schemas: classes paired by name and alias, evaluate seg on a store of another schema, default
class colours, and the README's example schema."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.cli import assert_clean_failure
from helpers.seg import GREY, TINY_MODEL, make_seg_store

from synthgen.cli import cli
from synthgen.errors import SchemaError
from synthgen.evaluation import segmentation as ev
from synthgen.models.segmenters import SegmenterSpec, build_segmenter, init_segmenter, save_segmenter
from synthgen.schemas import (
    ACDC,
    CAMUS,
    DEFAULT_COLORS,
    LabelClass,
    LabelSchema,
    get_schema,
    match_classes,
)
from synthgen.storage.preview import display_colors, overlay
from synthgen.trainers.runs import seeded

pytestmark = pytest.mark.usefixtures("torch_one_thread")

README = Path(__file__).resolve().parents[1] / "README.md"

# a segmenter's schema with the short names of nnU-Net-style datasets, and a store's with synthgen's
SHORT = LabelSchema("acdc_short", (LabelClass("rv", 1), LabelClass("myo", 2), LabelClass("lv", 3)))
LONG = LabelSchema(
    "lv_study",
    (LabelClass("lv_cavity", 1), LabelClass("lv_myocardium", 2), LabelClass("left_atrium", 3)),
)


def test_classes_pair_by_alias_and_the_rest_are_named_as_skipped():
    match = match_classes(SHORT, LONG)
    assert [(p.own, p.other, p.by) for p in match.pairs] == [
        ("myo", "lv_myocardium", "alias"),
        ("lv", "lv_cavity", "alias"),
    ]
    assert match.own_only == ("rv",) and match.other_only == ("left_atrium",)
    assert match.aliases() == {"lv_myocardium": "myo", "lv_cavity": "lv", "left_atrium": "background"}


def test_names_come_first_then_declared_aliases_then_pairs_by_hand():
    by_name = match_classes(CAMUS, ACDC)
    assert [(p.own, p.by) for p in by_name.pairs] == [("lv_cavity", "name"), ("lv_myocardium", "name")]
    assert by_name.own_only == ("left_atrium",) and by_name.other_only == ("rv_cavity",)
    # a class's own aliases, compared without case; spaces and hyphens read as underscores
    endo = LabelSchema("sb", (LabelClass("Endo-Cardium", 1), LabelClass("wall", 2, aliases=("LV-Myo",))))
    mine = LabelSchema("mine", (LabelClass("lv_cavity", 1, aliases=("endo cardium",)),))
    assert [(p.own, p.other) for p in match_classes(mine, endo).pairs] == [("lv_cavity", "Endo-Cardium")]
    assert [(p.own, p.other) for p in match_classes(ACDC, endo).pairs] == [("lv_myocardium", "wall")]
    # by hand: the store's 'wall' scored as the segmenter's lv_cavity (nonsense, but asked for)
    given = match_classes(ACDC, endo, {"wall": "lv_cavity"})
    assert [(p.own, p.other, p.by) for p in given.pairs] == [("lv_cavity", "wall", "given")]
    with pytest.raises(SchemaError, match="Expected a class of schema 'sb'"):
        match_classes(ACDC, endo, {"nope": "lv_cavity"})


def test_an_ambiguous_alias_is_refused_and_no_shared_class_is_an_empty_match():
    two = LabelSchema("two", (LabelClass("LV", 1), LabelClass("lv_blood_pool", 2)))
    with pytest.raises(SchemaError, match=r"ambiguous match.*'LV', 'lv_blood_pool'.*--alias"):
        match_classes(ACDC, two)
    assert match_classes(ACDC, two, {"LV": "lv_cavity"}).names == ("lv_cavity",)
    other = LabelSchema("liver", (LabelClass("liver", 1), LabelClass("tumour", 2)))
    assert match_classes(ACDC, other).pairs == ()
    with pytest.raises(SchemaError, match="names and aliases that differ"):
        LabelSchema("x", (LabelClass("lv", 1), LabelClass("b", 2, aliases=("LV",))))


@pytest.fixture
def short_checkpoint(tmp_path):
    """A randomly initialised tiny U-Net for the short-named schema at 32 x 32."""
    model = build_segmenter(TINY_MODEL, 1, SHORT.num_classes)
    init_segmenter(model, seeded(0, 0))
    spec = SegmenterSpec(TINY_MODEL, (32, 32), 1, SHORT, train_config={"train": "elsewhere.zarr"})
    return str(save_segmenter(tmp_path / "ckpt", model, spec))


def _from_grey(images: np.ndarray) -> np.ndarray:
    """The store's label values, read off the noise-free grey levels of make_seg_store's images."""
    return np.abs(images[:, 0, :, :, None] * 255 - GREY).argmin(-1).astype(np.uint8)


def test_evaluate_scores_the_shared_classes_under_the_segmenters_names(
    short_checkpoint, tmp_path, monkeypatch
):
    store = make_seg_store(str(tmp_path / "long.zarr"), n=8, schema=LONG, noise=0.0)
    real = ev.evaluate_segmentation(short_checkpoint, store, tmp_path / "real")  # the real model runs
    assert set(real.summary) == {"myo", "lv"} and real.classes.own_only == ("rv",)
    assert "lv_dice" in real.rows[0] and not any(k.startswith(("rv_", "left_atrium_")) for k in real.rows[0])

    # a perfect segmenter in its own classes: store 1 (lv_cavity) is its 3 (lv), 2 is 2, the atrium
    # (which it does not know) it calls rv: the shared classes score 1, whatever it does elsewhere
    to_short = np.array([0, 3, 2, 1], np.uint8)
    monkeypatch.setattr(
        ev, "predict", lambda model, spec, images, normalise="none": to_short[_from_grey(images)]
    )
    perfect = ev.evaluate_segmentation(short_checkpoint, store, tmp_path / "out")
    assert perfect.summary["lv"]["dice"]["mean"] == 1.0 and perfect.summary["myo"]["dice"]["mean"] == 1.0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["classes"] == {
        "scored": [
            {"segmenter": "myo", "store": "lv_myocardium", "matched_by": "alias"},
            {"segmenter": "lv", "store": "lv_cavity", "matched_by": "alias"},
        ],
        "skipped_segmenter_only": ["rv"],
        "skipped_store_only": ["left_atrium"],
    }
    assert set(summary["summary"]) == {"myo", "lv"}
    assert (
        "Scored classes: myo (store 'lv_myocardium', by alias)"
        in (tmp_path / "out" / "summary.md").read_text()
    )

    # the store's atrium is background to the shared classes: calling it lv is a false positive
    atrium_as_lv = np.array([0, 3, 2, 3], np.uint8)
    monkeypatch.setattr(
        ev, "predict", lambda model, spec, images, normalise="none": atrium_as_lv[_from_grey(images)]
    )
    spill = ev.evaluate_segmentation(short_checkpoint, store)
    assert spill.summary["lv"]["dice"]["mean"] < 0.95 and spill.summary["myo"]["dice"]["mean"] == 1.0


def test_evaluate_cli_says_what_it_scored_and_refuses_only_without_a_shared_class(short_checkpoint, tmp_path):
    store = make_seg_store(str(tmp_path / "long.zarr"), n=4, schema=LONG)
    result = CliRunner().invoke(cli, ["evaluate", "seg", short_checkpoint, store])
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert first == (
        "Scored classes: myo (store 'lv_myocardium', by alias), lv (store 'lv_cavity', by alias); "
        "skipped: rv (segmenter only), left_atrium (store only)."
    )
    assert "| lv |" in result.stdout and "| rv |" not in result.stdout and not result.stderr

    liver = LabelSchema("liver", (LabelClass("liver", 1), LabelClass("tumour", 2), LabelClass("vessel", 3)))
    apart = make_seg_store(str(tmp_path / "liver.zarr"), n=4, schema=liver)
    refused = CliRunner().invoke(cli, ["evaluate", "seg", short_checkpoint, apart])
    assert_clean_failure(refused, tmp_path / "nothing", "Expected a store sharing a class", "--alias")

    paired = CliRunner().invoke(
        cli, ["evaluate", "seg", short_checkpoint, apart, "--alias", "tumour=lv", "--alias", " vessel = rv "]
    )
    assert paired.exit_code == 0, paired.output
    assert paired.stdout.startswith(
        "Scored classes: rv (store 'vessel', by hand), lv (store 'tumour', by hand); skipped: myo"
    )
    bad = CliRunner().invoke(cli, ["evaluate", "seg", short_checkpoint, apart, "--alias", "tumour"])
    assert bad.exit_code == 2 and "Expected STORE_CLASS=SEG_CLASS" in bad.stderr
    unknown = CliRunner().invoke(
        cli, ["evaluate", "seg", short_checkpoint, apart, "--alias", "tumour=spleen"]
    )
    assert_clean_failure(unknown, tmp_path / "nothing", "Expected a class of schema 'acdc_short'", "'spleen'")


def test_default_colours_are_distinct_deterministic_and_keep_given_ones():
    plain = LabelSchema("many", tuple(LabelClass(f"c{i}", i) for i in range(1, 256)))
    colors = [c.color for c in plain.classes]
    assert colors[: len(DEFAULT_COLORS)] == list(DEFAULT_COLORS)
    assert len(set(colors)) == 255 and (0, 0, 0) not in colors
    assert all(len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in colors)
    again = LabelSchema("many", tuple(LabelClass(f"c{i}", i) for i in range(1, 256)))
    assert again == plain and LabelSchema.from_dict(json.loads(json.dumps(plain.to_dict()))) == plain
    # well separated: the fixed palette's colours lie more than 50 apart in RGB, and far from grey
    rgb = np.array(DEFAULT_COLORS, float)
    gaps = np.sqrt(((rgb[:, None] - rgb[None]) ** 2).sum(-1))[np.triu_indices(len(rgb), 1)]
    assert gaps.min() > 50 and (rgb.max(1) - rgb.min(1)).min() >= 50

    # given colours are kept; a default never repeats one (class 2 would take palette colour 1)
    mixed = LabelSchema(
        "mixed", (LabelClass("a", 1, DEFAULT_COLORS[1]), LabelClass("b", 2), LabelClass("c", 3, (1, 2, 3)))
    )
    assert [c.color for c in mixed.classes] == [DEFAULT_COLORS[1], DEFAULT_COLORS[2], (1, 2, 3)]
    assert [c.color for c in CAMUS.classes] == [(220, 50, 47), (133, 153, 0), (38, 139, 210)]
    assert "color" not in LabelClass("a", 1).to_dict()  # a class alone has none until a schema gives it
    with pytest.raises(SchemaError, match=r"Expected an RGB colour \[r, g, b\]"):
        LabelClass("a", 1, (0, 0, 300))


def test_previews_draw_old_all_white_classes_in_distinct_colours():
    # a store written before default colours recorded white for every class given none
    old = LabelSchema.from_dict(
        {
            "name": "old",
            "classes": [{"name": n, "value": v, "color": [255, 255, 255]} for n, v in (("a", 1), ("b", 2))],
        }
    )
    assert [c.color for c in old.classes] == [(255, 255, 255)] * 2
    shown = display_colors(old)
    assert shown[0] == (255, 255, 255) and shown[1] != shown[0]
    labels = np.zeros((4, 8), np.uint8)
    labels[:, :4], labels[:, 4:] = 1, 2
    out = overlay(np.zeros((4, 8, 3), np.uint8), labels, old)
    assert tuple(out[0, 0]) != tuple(out[0, 7])
    assert display_colors(CAMUS) == tuple(c.color for c in CAMUS.classes)  # distinct colours untouched


def _readme_toml() -> str:
    text = README.read_text()
    section = text[text.index("\n## Label schemas\n") :]
    section = section[: section.index("\n## ", 1)]
    blocks = re.findall(r"```toml\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "Expected one TOML example in the README's 'Label schemas' section"
    return blocks[0]


def test_the_readme_schema_example_parses_and_means_what_it_says(tmp_path):
    path = tmp_path / "my_heart.toml"
    path.write_text(_readme_toml())
    schema = get_schema(path)
    assert schema.name == "my_heart" and schema.names == ("lv_cavity", "lv_myocardium", "rv_cavity")
    assert schema.classes[0].color == (220, 50, 47) and schema.classes[2].color == DEFAULT_COLORS[2]
    assert schema.classes[1].source_value == 128 and schema.classes[0].aliases == ("endocardium", "LV blood")
    raw = np.array([[0, 1], [128, 3]], np.int32)
    assert schema.encode_source(raw, "case").tolist() == [[0, 1], [2, 3]]
    assert schema.rules.required == ("lv_myocardium",)
    assert dict(schema.rules.min_area) == {"lv_cavity": 0.0002, "lv_myocardium": 0.001}
    assert schema.rules.neighbours == (("lv_cavity", ("lv_myocardium",)),)
    # what the README says of matching: ACDC by name, nnU-Net's ACDC names by alias
    assert [(p.own, p.by) for p in match_classes(ACDC, schema).pairs] == [
        ("rv_cavity", "name"),
        ("lv_myocardium", "name"),
        ("lv_cavity", "name"),
    ]
    nnunet = LabelSchema("nnunet", (LabelClass("RV", 1), LabelClass("MLV", 2), LabelClass("LVC", 3)))
    assert [(p.own, p.other) for p in match_classes(ACDC, nnunet).pairs] == [
        ("rv_cavity", "RV"),
        ("lv_myocardium", "MLV"),
        ("lv_cavity", "LVC"),
    ]
    json_path = tmp_path / "my_heart.json"
    json_path.write_text(json.dumps(schema.to_dict()))
    assert get_schema(json_path) == schema
