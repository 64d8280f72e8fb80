"""The plausibility gate: each rule on tiny synthetic maps, flags, reports, and the real labels."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from helpers.data import SHARED_DATA, disc_labels, real_data
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from synthgen.errors import LabelValueError, SchemaError
from synthgen.schemas import ACDC, CAMUS, MMWHS, LabelClass, LabelSchema, PlausibilityRules
from synthgen.sources.gate import (
    GateReport,
    GateResult,
    check,
    check_batch,
    decode_flags,
    flag_codes,
)

CAVITY, WALL, ATRIUM = 1, 2, 3


@pytest.fixture
def heart() -> np.ndarray:
    """A 32 x 32 CAMUS-like map: cavity in a wall ring, atrium below the wall."""
    return disc_labels(1)[0]


def test_plausible_map_passes(heart):
    assert check(heart, CAMUS) == GateResult(True, ())


def test_missing_class(heart):
    heart[heart == ATRIUM] = 0
    assert check(heart, CAMUS) == GateResult(False, ("missing:left_atrium",))


def test_split_class(heart):
    heart[0:3, 0:3] = WALL  # a second island of myocardium in a corner
    assert check(heart, CAMUS).reasons == ("split:lv_myocardium",)


def test_diagonal_contact_is_one_component():
    labels = np.zeros((16, 16), np.uint8)
    labels[2:6, 2:6] = WALL
    labels[6:10, 6:10] = WALL  # touches the first block at one corner only
    schema = dataclasses.replace(CAMUS, rules=PlausibilityRules(connected=("lv_myocardium",)))
    assert check(labels, schema).passed
    labels[6, 6] = 0
    assert check(labels, schema).reasons == ("split:lv_myocardium",)


def test_small_class(heart):
    heart[heart == ATRIUM] = 0
    heart[30, 15:17] = ATRIUM  # 2 pixels of 1024 < 0.004
    assert check(heart, CAMUS).reasons == ("small:left_atrium",)


def test_cavity_punched_through_wall(heart):
    rows, cols = np.nonzero(heart == CAVITY)
    r = int(rows.mean())
    heart[r - 1 : r + 2, int(cols.mean()) :] = CAVITY  # a channel out to the right edge
    assert check(heart, CAMUS).reasons == ("touches:lv_cavity:background",)


def test_cavity_touching_a_forbidden_chamber(heart):
    acdc = np.zeros_like(heart)  # the same heart in ACDC values: RV 1, wall 2, cavity 3
    acdc[heart == CAVITY] = 3
    acdc[heart == WALL] = 2
    assert check(acdc, ACDC).passed
    rows, cols = np.nonzero(acdc == 3)
    acdc[rows.max() - 1 : rows.max() + 6, int(cols.mean()) - 2 : int(cols.mean()) + 2] = 1
    assert check(acdc, ACDC).reasons == ("touches:lv_cavity:rv_cavity",)


def test_image_edge_counts_as_background():
    labels = np.zeros((20, 20), np.uint8)
    labels[0:10, 4:16] = WALL
    labels[0:6, 8:12] = CAVITY  # enclosed by the wall except at the top edge of the image
    schema = dataclasses.replace(
        CAMUS, rules=PlausibilityRules(neighbours=(("lv_cavity", ("lv_myocardium",)),))
    )
    assert check(labels, schema).reasons == ("touches:lv_cavity:background",)
    labels[0, 8:12] = WALL
    assert check(labels, schema).passed


def test_contact_tolerance_is_a_fraction_of_the_border(heart):
    rows, cols = np.nonzero(heart == CAVITY)
    top, c = rows.min(), int(cols.mean())
    heart[top - 4 : top, c] = CAVITY  # a one-pixel channel: 1 edge with background of ~40
    rules = PlausibilityRules(neighbours=(("lv_cavity", ("lv_myocardium",)),))
    strict = dataclasses.replace(CAMUS, rules=rules)
    lenient = dataclasses.replace(CAMUS, rules=dataclasses.replace(rules, contact_tolerance=0.05))
    assert check(heart, strict).reasons == ("touches:lv_cavity:background",)
    assert check(heart, lenient).passed


def test_batch_matches_one_by_one_and_flags_decode():
    maps = disc_labels(6)
    maps[1][maps[1] == ATRIUM] = 0
    maps[2][0:2, 0:2] = WALL
    maps[3][:] = 0
    maps[4][maps[4] == CAVITY] = 0
    passed, flags = check_batch(maps, CAMUS)
    assert flags.dtype == np.uint32 and passed.dtype == bool
    for x, p, f in zip(maps, passed, flags, strict=True):
        one = check(x, CAMUS)
        assert one.passed == p and one.reasons == decode_flags(f, CAMUS)
    assert passed.tolist() == [True, False, False, False, False, True]
    assert decode_flags(flags[3], CAMUS) == (
        "missing:lv_cavity",
        "missing:lv_myocardium",
        "missing:left_atrium",
    )


def test_empty_batch():
    passed, flags = check_batch(np.zeros((0, 8, 8), np.uint8), CAMUS)
    assert passed.shape == flags.shape == (0,)


def test_values_outside_the_schema_are_errors(heart):
    heart[0, 0] = 9
    with pytest.raises(LabelValueError, match="Label value 9"):
        check(heart, CAMUS)
    with pytest.raises(LabelValueError, match=r"\(N, H, W\) uint8"):
        check_batch(heart.astype(np.int32)[None], CAMUS)
    with pytest.raises(LabelValueError, match="one \\(H, W\\)"):
        check(heart[None], CAMUS)


def test_schema_values_need_not_be_consecutive():
    wall, cavity = MMWHS.value_of("lv_myocardium"), MMWHS.value_of("lv_cavity")
    labels = np.zeros((24, 24), np.uint8)
    labels[4:20, 4:20] = wall
    labels[8:16, 8:16] = cavity
    assert check(labels, MMWHS).passed
    labels[labels == cavity] = MMWHS.value_of("aorta")
    assert check(labels, MMWHS).reasons == ("missing:lv_cavity",)


def test_flag_layout_is_documented_and_bounded():
    assert flag_codes(CAMUS) == (
        "missing:lv_cavity",
        "missing:lv_myocardium",
        "missing:left_atrium",
        "split:lv_cavity",
        "split:lv_myocardium",
        "split:left_atrium",
        "small:lv_cavity",
        "small:lv_myocardium",
        "small:left_atrium",
        "touches:lv_cavity:background",
    )
    assert flag_codes(ACDC)[-2:] == ("touches:lv_cavity:background", "touches:lv_cavity:rv_cavity")
    names = tuple(f"c{i}" for i in range(12))
    big = LabelSchema(
        "big",
        tuple(LabelClass(n, i + 1) for i, n in enumerate(names)),
        PlausibilityRules(required=names, connected=names, min_area=tuple((n, 0.1) for n in names)),
    )
    with pytest.raises(SchemaError, match="32 flag bits"):
        flag_codes(big)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6))
def test_split_flags_match_per_sample_labelling(seed, n):
    masks = np.random.default_rng(seed).random((n, 12, 12)) < 0.3
    masks[n // 2] = False  # an empty sample in the middle
    split = [ndimage.label(m, structure=np.ones((3, 3)))[1] > 1 for m in masks]
    _, flags = check_batch(np.where(masks, CAVITY, 0).astype(np.uint8), CAMUS)
    bit = np.uint32(1 << flag_codes(CAMUS).index("split:lv_cavity"))
    assert ((flags & bit) != 0).tolist() == split


def test_report_counts_merges_and_round_trips():
    maps = disc_labels(4)
    maps[0][maps[0] == ATRIUM] = 0
    maps[1][maps[1] == ATRIUM] = 0
    maps[1][0:2, 0:2] = WALL
    _, flags = check_batch(maps, CAMUS)
    report = GateReport.from_flags(flags, CAMUS)
    assert (report.checked, report.passed, report.rejected) == (4, 2, 2)
    assert report.counts() == {"missing:left_atrium": 2, "split:lv_myocardium": 1}
    merged = report.merge(GateReport.from_flags(flags[:1], CAMUS))
    assert merged.checked == 5 and merged.counts()["missing:left_atrium"] == 3
    assert GateReport.from_dict(json.loads(json.dumps(merged.to_dict()))) == merged
    assert GateReport().pass_rate == 1.0 and report.pass_rate == 0.5


def _real_camus() -> np.ndarray:
    import nibabel as nib

    files = sorted(real_data("camus").glob("patient*/patient*_?CH_E?_gt.nii.gz"))
    return np.stack([np.asarray(nib.load(f).dataobj)[:, :, 0].T for f in files]).astype(np.uint8)


def _real_acdc_slices() -> list[np.ndarray]:
    import nibabel as nib

    files = sorted(real_data("acdc").glob("patient*/patient*_frame??_gt.nii.gz"))
    return [z.astype(np.uint8) for f in files for z in np.asarray(nib.load(f).dataobj).transpose(2, 0, 1)]


def _break(maps: np.ndarray) -> dict[str, np.ndarray]:
    """Real maps broken three ways: cavity punched through the lateral wall, split wall, no atrium."""
    punched, split, missing = maps.copy(), maps.copy(), maps.copy()
    for p, s, m in zip(punched, split, missing, strict=True):
        rows, cols = np.nonzero(p == CAVITY)
        r, c = int(rows.mean()), int(cols.mean())
        p[r - 2 : r + 3, c:][p[r - 2 : r + 3, c:] != ATRIUM] = CAVITY
        s[:8, :8] = WALL
        m[m == ATRIUM] = 0
    return {"punched": punched, "split": split, "missing": missing}


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="real data ../shared/data not found")
def test_real_expert_labels_pass():
    camus = _real_camus()
    report = GateReport.from_flags(check_batch(camus, CAMUS)[1], CAMUS)
    assert report.checked == len(camus) and report.pass_rate >= 0.98, report.to_dict()
    broken = _break(camus[::10])
    for name, maps in broken.items():
        report = GateReport.from_flags(check_batch(maps, CAMUS)[1], CAMUS)
        assert report.passed == 0, (name, report.to_dict())
    slices = [z for z in _real_acdc_slices() if z.any()]  # empty apex/base slices are rejected
    flags = np.array([check_batch(z[None], ACDC)[1][0] for z in slices])
    report = GateReport.from_flags(flags, ACDC)
    assert report.pass_rate >= 0.98, report.to_dict()
