"""Measure the ultrasound sector (fan) geometry of the real CAMUS echo frames.

Run from the repository root:

    python bench/sector_geometry.py [--out bench/results/sector_geometry.json]

Reads every CAMUS frame (2CH and 4CH views, ED and ES, all patients) from ../shared/data/camus
with nibabel, finds the fan (pixels > ``--threshold`` after a 3 x 3 opening, largest component,
holes filled) and fits to each frame:

- ``apex_row``, ``apex_col``: the intersection of the two straight lateral edges, as fractions of
  the image height / width (0 is the top / left edge of the image, 1 the bottom / right edge; the
  apex may lie slightly outside [0, 1]);
- ``half_angle_deg``: half the angle between the two edges; ``tilt_deg``: the angle of their
  bisector from vertical, positive when the fan leans to the right (its far end lies to the right);
- ``depth``: the distance from the apex to the far arc along the bisector, as a fraction of the
  image height (median over rays within a quarter of the half angle of the bisector);
- ``base_width``: the fan's width at its widest row, as a fraction of the image width;
- ``arc_col_radius``: the column semi-axis of the far boundary, as a fraction of the image width.
  The frames were cropped and resized to a square without keeping the aspect ratio, so the far
  arc is an ellipse around the apex in pixels: its row semi-axis is ``depth`` (to within the
  tilt), its column semi-axis this; ``arc_rms_px`` is the fit's RMS radial residual;
- ``half_angle_arc_deg``: the half opening angle once that ellipse is scaled back to a circle,
  i.e. the scan's own half angle if the original arc was circular;
- ``label_outside_fan``: the share of expert-labelled pixels (label > 0) outside the fan mask
  (and ``label_outside_model``: outside the fitted sector model);
- ``model_iou``: intersection over union of the fan mask and the fitted sector model (the two
  edges and the far ellipse), a check of the fit;
- ``edge_rms_px``: the RMS residual of the worse of the two edge lines.

Each lateral edge is fitted as a line ``col = a * row + b`` through the outermost fan pixel of
each row, over the middle 80% of the rows between the top of the fan and the row where that edge
is outermost, leaving out rows clipped by the image border, with iterative outlier rejection.
``half_angle_deg`` and ``tilt_deg`` are in pixel units, not the probe's physical angles.

Prints a table and writes JSON with, per quantity, the median, 1st, 5th, 95th and 99th
percentiles, min, max and the count of frames; the labelled-outside-fan share pooled over all
frames and per frame; per-view medians; and the frames whose fit failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "sector_geometry.json"
PERCENTILES = (1, 5, 50, 95, 99)
QUANTITIES = (
    "apex_row",
    "apex_col",
    "half_angle_deg",
    "tilt_deg",
    "depth",
    "base_width",
    "arc_col_radius",
    "half_angle_arc_deg",
    "edge_rms_px",
    "arc_rms_px",
    "model_iou",
    "label_outside_fan",
    "label_outside_model",
)
MIN_EDGE_ROWS = 20


def read_frame(path: Path) -> np.ndarray:
    """Read one CAMUS frame or label map as a (rows, cols) array, rows running down from the probe.

    Parameters
    ----------
    path : Path
        A ``.nii.gz`` file of shape (x, y, 1).

    Returns
    -------
    numpy.ndarray
        The frame transposed to (rows, cols).
    """
    import nibabel as nib

    data = np.asarray(nib.load(path).dataobj)
    return np.ascontiguousarray(data.reshape(data.shape[:2]).T)


def fan_mask(image: np.ndarray, threshold: int = 0) -> np.ndarray:
    """The fan: pixels above ``threshold``, opened with a 3 x 3 square, largest component, holes filled.

    Parameters
    ----------
    image : numpy.ndarray
        A (rows, cols) grey frame.
    threshold : int
        Pixels strictly above this value count as inside the fan.

    Returns
    -------
    numpy.ndarray
        Boolean (rows, cols) mask.
    """
    mask = ndi.binary_opening(image > threshold, structure=np.ones((3, 3), bool))
    labels, n = ndi.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == sizes.argmax()
    return ndi.binary_fill_holes(mask)


def robust_line(rows: np.ndarray, cols: np.ndarray, iterations: int = 5) -> tuple[float, float, float, int]:
    """Fit ``col = a * row + b`` by least squares, dropping points beyond 3 robust sigmas (at least 1 px).

    Parameters
    ----------
    rows, cols : numpy.ndarray
        Coordinates of the edge points.
    iterations : int
        The most rejection rounds.

    Returns
    -------
    tuple
        ``(a, b, rms, kept)``: slope, intercept, RMS residual of the kept points (px) and their count.
    """
    keep = np.ones(rows.size, bool)
    for _ in range(iterations):
        a, b = np.polyfit(rows[keep], cols[keep], 1)
        residual = cols - (a * rows + b)
        mad = np.median(np.abs(residual[keep] - np.median(residual[keep])))
        new_keep = np.abs(residual) <= max(3.0 * 1.4826 * mad, 1.0)
        if np.array_equal(new_keep, keep) or new_keep.sum() < MIN_EDGE_ROWS:
            break
        keep = new_keep
    a, b = np.polyfit(rows[keep], cols[keep], 1)
    rms = float(np.sqrt(np.mean((cols[keep] - (a * rows[keep] + b)) ** 2)))
    return float(a), float(b), rms, int(keep.sum())


def edge_points(mask: np.ndarray, side: str) -> tuple[np.ndarray, np.ndarray]:
    """The outer boundary of the fan on one side, one point per row, for the straight part of the edge.

    Takes the rows from the top of the fan down to the row where this side is outermost, keeps
    the middle 80% of them, and drops rows whose boundary pixel touches the image border. Columns
    are the outer edge of the boundary pixel (``first - 0.5`` on the left, ``last + 0.5`` on the
    right), in pixel-centre coordinates.

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean fan mask.
    side : str
        ``"left"`` or ``"right"``.

    Returns
    -------
    tuple of numpy.ndarray
        ``(rows, cols)`` as floats.
    """
    width = mask.shape[1]
    rows = np.flatnonzero(mask.any(axis=1))
    sub = mask[rows]
    if side == "left":
        cols = sub.argmax(axis=1).astype(float)
        end = rows[np.argmin(cols)]
        clipped = cols <= 0
        cols -= 0.5
    else:
        cols = (width - 1 - sub[:, ::-1].argmax(axis=1)).astype(float)
        end = rows[np.argmax(cols)]
        clipped = cols >= width - 1
        cols += 0.5
    top = rows[0]
    lo, hi = top + 0.1 * (end - top), top + 0.9 * (end - top)
    use = (rows >= lo) & (rows <= hi) & ~clipped
    return rows[use].astype(float), cols[use]


def ray_depth(mask: np.ndarray, apex: tuple[float, float], angles: np.ndarray, step: float = 0.25):
    """Distance from the apex to the farthest fan pixel along each ray (nearest-pixel sampling).

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean fan mask.
    apex : tuple of float
        (row, col) in pixel-centre coordinates.
    angles : numpy.ndarray
        Ray angles from vertical in radians, positive towards the right.
    step : float
        Sampling step along the ray in pixels.

    Returns
    -------
    tuple of numpy.ndarray
        ``(depth, clipped)``: the distance (px) half a step past the last inside sample, and whether
        the ray left the image right after it (the arc is cut by the image border there).
    """
    h, w = mask.shape
    reach = np.hypot(max(abs(apex[0]), abs(h - apex[0])), max(abs(apex[1]), abs(w - apex[1]))) + 2
    t = np.arange(0.0, reach, step)
    r = np.rint(apex[0] + t[None, :] * np.cos(angles)[:, None]).astype(int)
    c = np.rint(apex[1] + t[None, :] * np.sin(angles)[:, None]).astype(int)
    inside_image = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    hit = np.zeros(r.shape, bool)
    hit[inside_image] = mask[r[inside_image], c[inside_image]]
    any_hit = hit.any(axis=1)
    last = t.size - 1 - hit[:, ::-1].argmax(axis=1)
    depth = np.where(any_hit, t[last] + step / 2, np.nan)
    after = np.minimum(last + 1, t.size - 1)
    clipped = any_hit & ~inside_image[np.arange(len(angles)), after]
    return depth, clipped


def fit_arc(
    mask: np.ndarray, apex: tuple[float, float], half: float, tilt: float
) -> tuple[float, float, float]:
    """Fit the far boundary as an axis-aligned ellipse centred on the apex.

    The frames were resized to a square without keeping the aspect ratio, so the circular far
    arc of the scan becomes an ellipse ``(dr / A)**2 + (dc / B)**2 = 1`` around the apex. Its
    points are the ray ends of :func:`ray_depth` over the middle 90% of the opening, leaving out
    rays cut by the image border.

    Parameters
    ----------
    mask : numpy.ndarray
        Boolean fan mask.
    apex : tuple of float
        (row, col) in pixel-centre coordinates.
    half, tilt : float
        Half opening angle and tilt in radians.

    Returns
    -------
    tuple of float
        ``(A, B, rms)``: the row and column semi-axes and the RMS radial residual, in pixels
        (NaN when fewer than 10 rays reach the arc inside the image).
    """
    angles = tilt + np.linspace(-0.9, 0.9, 61) * half
    depth, clipped = ray_depth(mask, apex, angles)
    ok = np.isfinite(depth) & ~clipped
    if ok.sum() < 10:
        return float("nan"), float("nan"), float("nan")
    dr, dc = depth[ok] * np.cos(angles[ok]), depth[ok] * np.sin(angles[ok])
    (u, v), *_ = np.linalg.lstsq(np.c_[dr**2, dc**2], np.ones(int(ok.sum())), rcond=None)
    a, b = 1 / np.sqrt(u), 1 / np.sqrt(v)
    radial = depth[ok] * (1 - 1 / np.sqrt(dr**2 / a**2 + dc**2 / b**2))  # ray end minus ellipse
    return float(a), float(b), float(np.sqrt(np.mean(radial**2)))


def sector_model(
    shape: tuple[int, int], apex, half: float, tilt: float, axes: tuple[float, float]
) -> np.ndarray:
    """Rasterise the fitted sector: between the two edges and inside the far ellipse.

    Parameters
    ----------
    shape : tuple of int
        (rows, cols) of the image.
    apex : tuple of float
        (row, col) in pixel-centre coordinates.
    half, tilt : float
        Half opening angle and tilt in radians (tilt from vertical, positive towards the right).
    axes : tuple of float
        Row and column semi-axes of the far ellipse in pixels.

    Returns
    -------
    numpy.ndarray
        Boolean mask of the pixel centres inside the sector.
    """
    rr, cc = np.mgrid[: shape[0], : shape[1]].astype(float)
    dr, dc = rr - apex[0], cc - apex[1]
    angle = np.arctan2(dc, dr) - tilt
    return (np.abs(angle) <= half) & ((dr / axes[0]) ** 2 + (dc / axes[1]) ** 2 <= 1) & (dr > 0)


def measure(image: np.ndarray, label: np.ndarray, threshold: int = 0) -> dict:
    """Fit the sector of one frame and measure how much of its label lies outside.

    Parameters
    ----------
    image, label : numpy.ndarray
        (rows, cols) frame and expert label map.
    threshold : int
        The fan threshold, see :func:`fan_mask`.

    Returns
    -------
    dict
        The quantities of :data:`QUANTITIES` (NaN where the fit failed), the pixel counts behind
        the label shares, the clipping flags, and ``failed`` (a reason, or None).
    """
    h, w = image.shape
    mask = fan_mask(image, threshold)
    labelled = label > 0
    out = {q: float("nan") for q in QUANTITIES}
    out.update(
        labelled=int(labelled.sum()),
        outside_fan=int((labelled & ~mask).sum()),
        outside_model=0,
        depth_clipped=False,
        width_clipped=False,
        failed=None,
    )
    if out["labelled"]:
        out["label_outside_fan"] = out["outside_fan"] / out["labelled"]
    if mask.sum() < 0.05 * h * w:
        out["failed"] = "fan smaller than 5% of the image"
        return out

    fits = {}
    for side in ("left", "right"):
        rows, cols = edge_points(mask, side)
        if rows.size < MIN_EDGE_ROWS:
            out["failed"] = f"{side} edge: only {rows.size} usable rows"
            return out
        a, b, rms, kept = robust_line(rows, cols)
        if kept < 0.5 * rows.size:
            out["failed"] = f"{side} edge: {kept} of {rows.size} rows fit a line"
            return out
        fits[side] = (a, b, rms)
    (al, bl, rms_l), (ar, br, rms_r) = fits["left"], fits["right"]
    if ar - al <= 1e-6:
        out["failed"] = "edges do not diverge downwards"
        return out
    apex_r = (br - bl) / (al - ar)
    apex_c = al * apex_r + bl
    theta_l, theta_r = np.arctan(al), np.arctan(ar)
    half, tilt = (theta_r - theta_l) / 2, (theta_r + theta_l) / 2

    rays = tilt + np.linspace(-0.25, 0.25, 21) * half
    depths, clipped = ray_depth(mask, (apex_r, apex_c), rays)
    depth_px = float(np.nanmedian(depths))

    widths = mask.sum(axis=1)
    widest = int(widths.argmax())
    row_cols = np.flatnonzero(mask[widest])

    arc_a, arc_b, arc_rms = fit_arc(mask, (apex_r, apex_c), half, tilt)
    axes = (arc_a, arc_b) if np.isfinite(arc_a) else (depth_px, depth_px)
    model = sector_model(mask.shape, (apex_r, apex_c), half, tilt, axes)
    out.update(
        apex_row=(apex_r + 0.5) / h,
        apex_col=(apex_c + 0.5) / w,
        half_angle_deg=float(np.degrees(half)),
        tilt_deg=float(np.degrees(tilt)),
        depth=depth_px / h,
        base_width=(row_cols[-1] - row_cols[0] + 1) / w,
        arc_col_radius=arc_b / w,
        half_angle_arc_deg=float(np.degrees(np.arctan(np.tan(half) * arc_a / arc_b))),
        edge_rms_px=max(rms_l, rms_r),
        arc_rms_px=arc_rms,
        model_iou=float((mask & model).sum() / (mask | model).sum()),
        outside_model=int((labelled & ~model).sum()),
        depth_clipped=bool(clipped.mean() > 0.5),
        width_clipped=bool(row_cols[0] == 0 or row_cols[-1] == w - 1),
    )
    if out["labelled"]:
        out["label_outside_model"] = out["outside_model"] / out["labelled"]
    return out


def summarise(values: np.ndarray) -> dict:
    """Median, 1/5/95/99th percentiles, min, max and count of the finite values.

    Parameters
    ----------
    values : numpy.ndarray
        One value per frame; NaN for frames without a value.

    Returns
    -------
    dict
        Keys ``n``, ``min``, ``p1``, ``p5``, ``median``, ``p95``, ``p99``, ``max``.
    """
    v = values[np.isfinite(values)]
    if not v.size:
        return {"n": 0}
    p = np.percentile(v, PERCENTILES)
    return {
        "n": int(v.size),
        "min": float(v.min()),
        "p1": float(p[0]),
        "p5": float(p[1]),
        "median": float(p[2]),
        "p95": float(p[3]),
        "p99": float(p[4]),
        "max": float(v.max()),
    }


def frame_paths(camus: Path) -> list[Path]:
    """Every CAMUS image file (not the ``_gt`` labels) under ``camus``, sorted."""
    return sorted(p for p in camus.glob("patient*/patient*_?CH_E?.nii.gz"))


def main(argv: list[str] | None = None) -> int:
    """Measure every frame, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    parser.add_argument("--data", type=Path, default=DATA / "camus", help="CAMUS folder")
    parser.add_argument("--threshold", type=int, default=0, help="fan = pixels above this grey value")
    args = parser.parse_args(argv)

    if not args.data.is_dir():
        sys.exit(f"CAMUS data not found at {args.data}: expected ../shared/data/camus beside the repository.")
    paths = frame_paths(args.data)
    if not paths:
        sys.exit(f"No CAMUS frames (patientNNNN/patientNNNN_{{2CH,4CH}}_{{ED,ES}}.nii.gz) in {args.data}.")

    frames = []
    for path in paths:
        label_path = path.with_name(path.name.replace(".nii.gz", "_gt.nii.gz"))
        result = measure(read_frame(path), read_frame(label_path), args.threshold)
        frames.append({"name": path.name.removesuffix(".nii.gz"), **result})

    table = {q: summarise(np.array([f[q] for f in frames], float)) for q in QUANTITIES}
    by_view = {
        view: {q: float(np.nanmedian([f[q] for f in frames if f"_{view}_" in f["name"]])) for q in QUANTITIES}
        for view in ("2CH", "4CH")
    }
    labelled = sum(f["labelled"] for f in frames)
    failed = [f"{f['name']}: {f['failed']}" for f in frames if f["failed"]]
    result = {
        "frames": len(frames),
        "threshold": args.threshold,
        "failed": failed,
        "depth_clipped": sum(f["depth_clipped"] for f in frames),
        "width_clipped": sum(f["width_clipped"] for f in frames),
        "label_outside_fan_pooled": sum(f["outside_fan"] for f in frames) / labelled,
        "label_outside_fan_frame_mean": float(np.nanmean([f["label_outside_fan"] for f in frames])),
        "label_outside_model_pooled": sum(f["outside_model"] for f in frames) / labelled,
        "quantities": table,
        "median_by_view": by_view,
    }

    print(f"{len(frames)} CAMUS frames, fan = pixels > {args.threshold}; {len(failed)} fits failed")
    cols = ("n", "min", "p1", "p5", "median", "p95", "p99", "max")
    print(f"{'quantity':<20}" + "".join(f" {c:>10}" for c in cols))
    for q, s in table.items():
        print(f"{q:<20}" + "".join(f" {s.get(c, float('nan')):>10.4g}" for c in cols))
    print(
        f"labelled pixels outside the fan: pooled {result['label_outside_fan_pooled']:.2%}, "
        f"per-frame median {table['label_outside_fan'].get('median', float('nan')):.2%}, "
        f"per-frame mean {result['label_outside_fan_frame_mean']:.2%}; "
        f"outside the fitted sector: pooled {result['label_outside_model_pooled']:.2%}"
    )
    print(
        f"arc cut by the image border along the bisector: {result['depth_clipped']} frames; "
        f"widest row touching the side border: {result['width_clipped']} frames"
    )
    for line in failed:
        print("failed:", line)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
