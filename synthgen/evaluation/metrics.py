"""Segmentation metrics per class: Dice, IoU, Hausdorff distance, HD95, ASSD; and their summaries.

Definitions (2D masks, ``spacing`` = (row, col) pixel size; distances come out in its unit, mm where the
spacing is known, pixels otherwise):

- The *surface* of a mask is its pixels with at least one 4-neighbour outside the mask (the image border
  counts as outside). A one-pixel mask is its own surface.
- d(a, B) is the Euclidean distance from surface pixel centre ``a`` to the nearest surface pixel centre
  of B (``scipy.ndimage.distance_transform_edt`` on the complement of B's surface, with ``sampling``).
- Hausdorff = max(max_a d(a, B), max_b d(b, A)).
- HD95 = max(P95_a d(a, B), P95_b d(b, A)) (each directed 95th percentile, linear interpolation; the
  convention of MedPy and MONAI).
- ASSD = (sum_a d(a, B) + sum_b d(b, A)) / (|surface A| + |surface B|) (Heimann et al. 2009).

Empty-mask conventions (a class absent from the prediction, the reference, or both):

- both empty: Dice = IoU = 1 and every distance = 0 (nothing to find, nothing found);
- exactly one empty: Dice = IoU = 0 and every distance is NaN (undefined). Summaries skip NaN and
  report how many values were undefined, so a missed structure shows as Dice 0 and a count, never as
  a made-up distance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from synthgen import seeding
from synthgen.errors import KernelInputError

METRICS = ("dice", "iou", "hausdorff", "hd95", "assd")
_CROSS = ndimage.generate_binary_structure(2, 1)


def _check_pair(pred: np.ndarray, ref: np.ndarray) -> None:
    if pred.shape != ref.shape or pred.ndim != 2:
        raise KernelInputError(
            f"Expected two 2D masks of one shape. Got {pred.shape} and {ref.shape} instead."
        )


def dice_iou(pred: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of two boolean masks (both empty: 1, 1)."""
    inter = np.count_nonzero(pred & ref)
    total = np.count_nonzero(pred) + np.count_nonzero(ref)
    if total == 0:
        return 1.0, 1.0
    return 2.0 * inter / total, inter / (total - inter)


def surface(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (the image border counts as outside)."""
    eroded = ndimage.binary_erosion(mask, structure=_CROSS, border_value=0)
    return mask & ~eroded


def surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] = (1.0, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Directed distances (pred surface -> ref surface, ref surface -> pred surface) of two non-empty masks.

    The distance transform runs on the bounding box of both surfaces only: every nearest surface pixel
    lies inside it, so cropping changes no distance.
    """
    sp, sr = surface(pred), surface(ref)
    rows, cols = np.nonzero(sp | sr)
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    sp, sr = sp[box], sr[box]
    to_ref = ndimage.distance_transform_edt(~sr, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~sp, sampling=spacing)
    return to_ref[sp], to_pred[sr]


def mask_metrics(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] = (1.0, 1.0)
) -> dict[str, float]:
    """All of :data:`METRICS` for two boolean masks, with the empty-mask conventions of this module."""
    _check_pair(pred, ref)
    pred, ref = pred.astype(bool, copy=False), ref.astype(bool, copy=False)
    dice, iou = dice_iou(pred, ref)
    has_pred, has_ref = pred.any(), ref.any()
    if not has_pred and not has_ref:
        return {"dice": dice, "iou": iou, "hausdorff": 0.0, "hd95": 0.0, "assd": 0.0}
    if not (has_pred and has_ref):
        return {"dice": dice, "iou": iou, "hausdorff": np.nan, "hd95": np.nan, "assd": np.nan}
    a, b = surface_distances(pred, ref, spacing)
    return {
        "dice": dice,
        "iou": iou,
        "hausdorff": float(max(a.max(), b.max())),
        "hd95": float(max(np.percentile(a, 95), np.percentile(b, 95))),
        "assd": float((a.sum() + b.sum()) / (a.size + b.size)),
    }


def class_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    classes: Mapping[str, int],
    spacing: Sequence[float] = (1.0, 1.0),
) -> dict[str, dict[str, float]]:
    """``{class name: mask_metrics}`` for label maps ``pred`` and ``ref`` and ``{name: value}`` classes."""
    _check_pair(pred, ref)
    return {name: mask_metrics(pred == v, ref == v, spacing) for name, v in classes.items()}


def summarize(values: Sequence[float], *, seed: int = 0, n_boot: int = 1000) -> dict[str, float]:
    """Median, mean, the 2.5-97.5 percentile range of the values, and a bootstrap 95% interval of the mean.

    NaN values (undefined distances) are skipped and counted in ``undefined``.
    """
    x = np.asarray(values, np.float64)
    defined = x[np.isfinite(x)]
    out = {"n": int(x.size), "undefined": int(x.size - defined.size)}
    if defined.size == 0:
        nan = float("nan")
        return out | dict.fromkeys(("median", "mean", "p2.5", "p97.5", "mean_ci_low", "mean_ci_high"), nan)
    rng = seeding.rng(seed, defined.size)
    boot = defined[rng.integers(0, defined.size, (n_boot, defined.size))].mean(axis=1)
    return out | {
        "median": float(np.median(defined)),
        "mean": float(defined.mean()),
        "p2.5": float(np.percentile(defined, 2.5)),
        "p97.5": float(np.percentile(defined, 97.5)),
        "mean_ci_low": float(np.percentile(boot, 2.5)),
        "mean_ci_high": float(np.percentile(boot, 97.5)),
    }
