"""Segmentation metrics against brute-force references on tiny masks, and the empty-mask conventions."""

import math

import numpy as np
import pytest

from synthgen.errors import KernelInputError
from synthgen.evaluation.metrics import (
    METRICS,
    class_metrics,
    dice_iou,
    mask_metrics,
    summarize,
    surface,
)
from synthgen.kernels import batch_dice


def brute_surface(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask with a 4-neighbour outside it or outside the image, by explicit loops."""
    h, w = mask.shape
    out = np.zeros_like(mask, bool)
    for r in range(h):
        for c in range(w):
            if not mask[r, c]:
                continue
            for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                rr, cc = r + dr, c + dc
                if not (0 <= rr < h and 0 <= cc < w) or not mask[rr, cc]:
                    out[r, c] = True
    return out


def brute_metrics(pred, ref, spacing):
    inter, total = np.sum(pred & ref), pred.sum() + ref.sum()
    dice = 2 * inter / total
    iou = inter / np.sum(pred | ref)
    sp = np.argwhere(brute_surface(pred)) * np.asarray(spacing)
    sr = np.argwhere(brute_surface(ref)) * np.asarray(spacing)
    d = np.sqrt(((sp[:, None, :] - sr[None, :, :]) ** 2).sum(-1))
    a, b = d.min(1), d.min(0)  # pred -> ref, ref -> pred
    return {
        "dice": dice,
        "iou": iou,
        "hausdorff": max(a.max(), b.max()),
        "hd95": max(np.percentile(a, 95), np.percentile(b, 95)),
        "assd": (a.sum() + b.sum()) / (a.size + b.size),
    }


def random_mask(rng, shape, p):
    mask = rng.random(shape) < p
    if not mask.any():
        mask[rng.integers(shape[0]), rng.integers(shape[1])] = True
    return mask


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 2.0)])
def test_metrics_match_brute_force_on_random_masks(spacing):
    rng = np.random.default_rng(7)
    for _ in range(40):
        shape = (int(rng.integers(3, 12)), int(rng.integers(3, 12)))
        pred, ref = (
            random_mask(rng, shape, rng.uniform(0.1, 0.7)),
            random_mask(rng, shape, rng.uniform(0.1, 0.7)),
        )
        got, want = mask_metrics(pred, ref, spacing), brute_metrics(pred, ref, spacing)
        for m in METRICS:
            assert got[m] == pytest.approx(want[m], rel=1e-12, abs=1e-12), (m, pred, ref)


def test_surface_matches_brute_force_and_border_counts_as_outside():
    rng = np.random.default_rng(1)
    for _ in range(20):
        mask = rng.random((7, 9)) < 0.6
        np.testing.assert_array_equal(surface(mask), brute_surface(mask))
    full = np.ones((4, 5), bool)
    assert surface(full).sum() == 4 * 5 - 2 * 3  # the ring, the 2 x 3 interior is not surface
    single = np.zeros((5, 5), bool)
    single[2, 2] = True
    np.testing.assert_array_equal(surface(single), single)


def test_known_distances_of_shifted_squares():
    ref = np.zeros((20, 20), bool)
    ref[5:10, 5:10] = True
    pred = np.roll(ref, 3, axis=1)
    m = mask_metrics(pred, ref)
    assert m["hausdorff"] == 3.0 and m["dice"] == pytest.approx(2 * 10 / 50)
    assert m["iou"] == pytest.approx(10 / 40)
    # with 2 mm columns the same shift is 6 mm
    assert mask_metrics(pred, ref, (1.0, 2.0))["hausdorff"] == 6.0


def test_far_apart_masks_distances_unaffected_by_cropping():
    ref = np.zeros((30, 40), bool)
    pred = np.zeros((30, 40), bool)
    ref[0:2, 0:2] = True
    pred[27:30, 36:40] = True
    want = brute_metrics(pred, ref, (1.0, 1.0))
    got = mask_metrics(pred, ref)
    assert got["hausdorff"] == pytest.approx(want["hausdorff"]) and got["dice"] == 0.0
    assert got["hausdorff"] == pytest.approx(math.hypot(28, 38))  # corner (29, 39) to ref pixel (1, 1)


def test_empty_mask_conventions():
    empty, some = np.zeros((6, 6), bool), np.zeros((6, 6), bool)
    some[2:4, 2:4] = True
    both = mask_metrics(empty, empty)
    assert both == {"dice": 1.0, "iou": 1.0, "hausdorff": 0.0, "hd95": 0.0, "assd": 0.0}
    for pred, ref in ((empty, some), (some, empty)):
        one = mask_metrics(pred, ref)
        assert one["dice"] == 0.0 and one["iou"] == 0.0
        assert all(math.isnan(one[m]) for m in ("hausdorff", "hd95", "assd"))
    assert dice_iou(empty, empty) == (1.0, 1.0)


def test_identical_masks_are_perfect():
    mask = np.zeros((9, 9), bool)
    mask[1:7, 2:8] = True
    assert mask_metrics(mask, mask) == {"dice": 1.0, "iou": 1.0, "hausdorff": 0.0, "hd95": 0.0, "assd": 0.0}


def test_class_metrics_and_batch_dice_agree():
    rng = np.random.default_rng(3)
    pred = rng.integers(0, 4, (5, 8, 8)).astype(np.uint8)
    ref = rng.integers(0, 4, (5, 8, 8)).astype(np.uint8)
    ref[0][ref[0] == 3] = 0  # class 3 absent from one reference
    pred[0][pred[0] == 3] = 0  # and from its prediction: Dice 1 by convention
    fast = batch_dice(pred, ref, 4)
    for i in range(5):
        per_class = class_metrics(pred[i], ref[i], {"a": 1, "b": 2, "c": 3})
        np.testing.assert_allclose(fast[i], [per_class[n]["dice"] for n in "abc"])
    assert fast[0, 2] == 1.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(KernelInputError, match="Expected two 2D masks of one shape"):
        mask_metrics(np.zeros((4, 4), bool), np.zeros((4, 5), bool))


def test_summarize_counts_undefined_and_brackets_the_mean():
    values = [0.5, 0.7, np.nan, 0.9, 0.6, np.nan]
    s = summarize(values)
    assert s["n"] == 6 and s["undefined"] == 2
    assert s["median"] == pytest.approx(0.65) and s["mean"] == pytest.approx(0.675)
    assert s["p2.5"] == pytest.approx(np.percentile([0.5, 0.7, 0.9, 0.6], 2.5))
    assert s["mean_ci_low"] <= s["mean"] <= s["mean_ci_high"]
    assert summarize(values) == s  # seeded bootstrap: reproducible
    assert math.isnan(summarize([np.nan])["median"]) and summarize([np.nan])["undefined"] == 1
