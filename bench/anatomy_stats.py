"""Compare procedural anatomy with the real expert labels: per-statistic median and 5-95% range.

Run from the repository root:

    python bench/anatomy_stats.py [--n 600] [--out bench/results/anatomy_stats.md] [--json out/anatomy_stats.json]

``--out`` replaces the part of the file between the ``anatomy_stats`` begin/end markers (or writes
the whole file when it has none).

Reads CAMUS (apical 2/4-chamber echo, 224 x 224) and ACDC (short-axis MR) from ../shared/data with
nibabel, renders the same number of procedural maps per view with ``synthgen.sources.anatomy``, runs
the plausibility gate on both, and writes the comparison table as Markdown (and JSON if asked).
Statistics are measured identically on real and procedural maps by the functions below.

Echo shape statistics, per structure (``lv`` cavity, ``myo`` myocardium, ``la`` atrium):
``elongation`` is the sqrt of the ratio of the principal second moments of its pixels (1 for a disc);
the others are measured on the outline of its largest 8-connected component, the mask smoothed by a
Gaussian of SMOOTH_PX pixels and contoured at 0.5 (so pixel staircases do not count as boundary):

- ``isoperimetric``: 4 pi area / perimeter^2 of the outline (1 for a disc, 0.79 for a square);
- ``solidity``: outline area / the area of its convex hull (1 for a convex shape);
- ``corner_share``: the share of the outline's absolute turning that happens in its most bent
  CORNER_TOP of length, the turning measured between chords of TURN_PX pixels either side (about
  0.15 to 0.27 for discs and ellipses, above 0.6 for squares and rectangles 40 pixels across: the
  boxy shapes).

``outside_sector`` is the share of labelled pixels outside the ultrasound sector: for a real map the
sector is the image's non-black fan (each row and column of non-black pixels filled between its first
and last one, which fills dark blood pools and keeps the fan convex); for a procedural map it is the
source's own sector (``sector_half_angle``, ``sector_radius``). Its mean per map is listed too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import contourpy
import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

from synthgen.schemas import ACDC, CAMUS
from synthgen.sources.anatomy import render, sample_params
from synthgen.sources.anatomy_echo import sector_mask
from synthgen.sources.anatomy_shapes import largest_component
from synthgen.sources.gate import GateReport, check_batch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ECHO_SHAPE = (224, 224)
SA_SHAPE = (216, 256)  # the commonest ACDC slice shape
SMOOTH_PX, TURN_PX, CORNER_TOP = 1.0, 3, 0.1  # outline smoothing, turning chord, corner share of length


def _edges(a: np.ndarray, b: np.ndarray) -> int:
    """4-neighbour pixel edges between two masks."""
    return int(
        (a[:, 1:] & b[:, :-1]).sum()
        + (a[:, :-1] & b[:, 1:]).sum()
        + (a[1:] & b[:-1]).sum()
        + (a[:-1] & b[1:]).sum()
    )


def _elongation(mask: np.ndarray) -> float:
    ys, xs = np.nonzero(mask)
    if ys.size < 3:
        return np.nan
    ev = np.linalg.eigvalsh(np.cov(np.stack([ys, xs])))
    return float(np.sqrt(ev[1] / max(ev[0], 1e-9)))


def _shoelace(c: np.ndarray) -> float:
    return 0.5 * abs(float(np.dot(c[:, 0], np.roll(c[:, 1], -1)) - np.dot(c[:, 1], np.roll(c[:, 0], -1))))


def _outline(mask: np.ndarray) -> np.ndarray:
    """The closed outline (K, 2) of ``mask``'s largest component, smoothed, without the repeated end point."""
    part = largest_component(mask)
    rows, cols = np.flatnonzero(part.any(axis=1)), np.flatnonzero(part.any(axis=0))
    crop = part[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    pad = int(np.ceil(4 * SMOOTH_PX)) + 1  # shapes cut by the image border close along it
    z = ndimage.gaussian_filter(np.pad(crop, pad).astype(np.float64), SMOOTH_PX)
    lines = contourpy.contour_generator(z=z, line_type=contourpy.LineType.Separate).lines(0.5)
    c = max(lines, key=_shoelace)
    return c[:-1] if np.array_equal(c[0], c[-1]) else c


def outline_stats(mask: np.ndarray) -> dict[str, float]:
    """Isoperimetric ratio, solidity and corner share of ``mask``'s outline (see the module docstring)."""
    if mask.sum() < 9:
        return dict.fromkeys(("isoperimetric", "solidity", "corner_share"), np.nan)
    c = _outline(mask)
    closed = np.vstack([c, c[:1]])
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(closed, axis=0).T))])
    perimeter, area = arc[-1], _shoelace(c)
    s = np.arange(0.0, perimeter, 1.0)  # one point per pixel of length
    r = np.stack([np.interp(s, arc, closed[:, 0]), np.interp(s, arc, closed[:, 1])], axis=1)
    chord = np.roll(r, -TURN_PX, axis=0) - np.roll(r, TURN_PX, axis=0)
    heading = np.arctan2(chord[:, 1], chord[:, 0])
    turn = np.abs(np.angle(np.exp(1j * (np.roll(heading, -1) - heading))))
    top = np.sort(turn)[::-1][: max(round(CORNER_TOP * turn.size), 1)]
    return {
        "isoperimetric": 4 * np.pi * area / perimeter**2,
        "solidity": area / ConvexHull(c).volume,
        "corner_share": float(top.sum() / turn.sum()),
    }


def echo_stats(x: np.ndarray, sector: np.ndarray) -> dict[str, float]:
    """Statistics of one CAMUS-schema map (cavity 1, myocardium 2, atrium 3) in its ``sector`` (bool)."""
    h, w = x.shape
    lv, myo, la = x == 1, x == 2, x == 3
    out = {f"area_{n}": float(m.mean()) for n, m in (("lv", lv), ("myo", myo), ("la", la))}
    out["lv_la_ratio"] = out["area_lv"] / out["area_la"] if la.any() else np.nan
    out["wall_px"] = myo.sum() / max(_edges(lv, myo), 1)
    ys, xs = np.nonzero(lv)
    top = ys.min()
    apex = np.array([top, xs[ys == top].mean()])
    near_la = np.zeros_like(la)
    near_la[:-1] |= la[1:]
    near_la[1:] |= la[:-1]
    near_la[:, :-1] |= la[:, 1:]
    near_la[:, 1:] |= la[:, :-1]
    ann = np.argwhere(lv & near_la)  # the mitral annulus: cavity pixels next to the atrium
    if len(ann):
        base = ann.mean(axis=0)
        axis = base - apex
        out["lv_length_px"] = float(np.hypot(*axis))
        out["lv_angle_deg"] = float(np.degrees(np.arctan2(axis[1], axis[0])))
        out["lv_width_px"] = lv.sum() / out["lv_length_px"]
    else:
        out["lv_length_px"] = out["lv_angle_deg"] = out["lv_width_px"] = np.nan
    out["apex_y"] = top / h
    out["apex_x"] = apex[1] / w
    out["myo_top_y"] = np.nonzero(myo)[0].min() / h
    ly, lx = np.nonzero(la)
    out["la_cy"], out["la_cx"] = ly.mean() / h, lx.mean() / w
    out["la_elongation"] = _elongation(la)
    out["lv_elongation"], out["myo_elongation"] = _elongation(lv), _elongation(myo)
    for name, mask in (("lv", lv), ("myo", myo), ("la", la)):
        out |= {f"{name}_{key}": stat for key, stat in outline_stats(mask).items()}
    labelled = x > 0
    out["outside_sector"] = float((labelled & ~sector).sum() / max(labelled.sum(), 1))
    return out


def sa_stats(x: np.ndarray) -> dict[str, float]:
    """Statistics of one ACDC-schema map (RV 1, myocardium 2, LV cavity 3)."""
    h, w = x.shape
    side = np.sqrt(h * w)
    rv, myo, lv = x == 1, x == 2, x == 3
    out = {f"area_{n}": float(m.mean()) for n, m in (("lv", lv), ("myo", myo), ("rv", rv))}
    out["wall_pct"] = 100 * myo.sum() / max(_edges(lv, myo), 1) / side
    out["lv_rv_ratio"] = lv.sum() / rv.sum() if rv.any() else np.nan
    ys, xs = np.nonzero(lv | myo)
    cy, cx = ys.mean(), xs.mean()
    out["lv_cy"], out["lv_cx"] = cy / h, cx / w
    out["lv_elongation"] = _elongation(lv)
    if rv.any():
        ry, rx = np.nonzero(rv)
        epi = np.sqrt((lv | myo).sum() / np.pi)
        out["rv_angle_deg"] = float(np.degrees(np.arctan2(-(ry.mean() - cy), rx.mean() - cx)))
        out["rv_distance"] = float(np.hypot(ry.mean() - cy, rx.mean() - cx) / epi)
    else:
        out["rv_angle_deg"] = out["rv_distance"] = np.nan
    return out


def fan_of(image: np.ndarray) -> np.ndarray:
    """The sector of a real echo image: its non-black pixels, each row and column filled between its
    first and last non-black pixel (the fan is convex; blood pools inside it may be black)."""

    def spans(m: np.ndarray) -> np.ndarray:
        idx = np.arange(m.shape[1])
        first = np.where(m.any(axis=1), m.argmax(axis=1), m.shape[1])
        last = m.shape[1] - 1 - m[:, ::-1].argmax(axis=1)
        return (idx >= first[:, None]) & (idx <= last[:, None])

    nonblack = image > 0
    return spans(nonblack) & spans(nonblack.T).T


def load_camus() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All CAMUS ground-truth maps (N, 224, 224), whether each is a 2-chamber view, and each image's fan."""
    import nibabel as nib

    files = sorted((DATA / "camus").glob("patient*/patient*_?CH_E?_gt.nii.gz"))
    maps = np.stack([np.asarray(nib.load(f).dataobj)[:, :, 0].T for f in files]).astype(np.uint8)
    images = (np.asarray(nib.load(f.with_name(f.name.replace("_gt", ""))).dataobj)[:, :, 0].T for f in files)
    fans = np.stack([fan_of(x) for x in images])
    return maps, np.array(["_2CH_" in f.name for f in files]), fans


def load_acdc_slices() -> list[np.ndarray]:
    """Every ACDC ground-truth slice with myocardium, as (rows, cols) uint8."""
    import nibabel as nib

    files = sorted((DATA / "acdc").glob("patient*/patient*_frame??_gt.nii.gz"))
    slices = [z.astype(np.uint8) for f in files for z in np.asarray(nib.load(f).dataobj).transpose(2, 0, 1)]
    return [z for z in slices if (z == 2).any()]


def procedural(view: str, n: int, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.stack([render(sample_params(np.random.default_rng([seed, i]), view), shape) for i in range(n)])


def procedural_echo(
    view: str, n: int, shape: tuple[int, int], seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``procedural`` echo maps (the same draws) and each one's own sector."""
    params = [sample_params(np.random.default_rng([seed, i]), view) for i in range(n)]
    return np.stack([render(p, shape) for p in params]), np.stack([sector_mask(p, shape) for p in params])


def summarise(rows: list[dict[str, float]]) -> dict[str, tuple[float, float, float]]:
    out = {}
    for key in rows[0]:
        v = np.array([r[key] for r in rows], np.float64)
        v = v[np.isfinite(v)]
        out[key] = tuple(float(q) for q in np.percentile(v, [50, 5, 95])) if v.size else (np.nan,) * 3
    return out


def _fmt(q: tuple[float, float, float]) -> str:
    digits = 4 if abs(q[0]) < 0.1 else 2 if abs(q[0]) < 10 else 1
    return f"{q[0]:.{digits}f} [{q[1]:.{digits}f}, {q[2]:.{digits}f}]"


def compare(real: list[dict[str, float]], synth: list[dict[str, float]]) -> dict[str, dict]:
    """Per statistic, the summaries of the real and the procedural rows (one row of statistics per map)."""
    a, b = summarise(real), summarise(synth)
    return {k: {"real": a[k], "procedural": b[k]} for k in a}


def mean_of(rows: list[dict[str, float]], key: str) -> float:
    return float(np.nanmean([r[key] for r in rows]))


def table(title: str, result: dict[str, dict], n_real: int, n_synth: int) -> str:
    lines = [
        f"### {title}",
        "",
        f"median [5%, 95%]; real n = {n_real}, procedural n = {n_synth}",
        "",
        "| statistic | real | procedural |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {k} | {_fmt(v['real'])} | {_fmt(v['procedural'])} |" for k, v in result.items()]
    return "\n".join(lines) + "\n"


def gate_line(name: str, maps, schema) -> str:
    flags = np.concatenate([check_batch(np.asarray(x)[None], schema)[1] for x in maps])
    report = GateReport.from_flags(flags, schema)
    return (
        f"- {name}: gate pass rate {report.pass_rate:.1%} of {report.checked}; rejections {report.counts()}"
    )


BEGIN, END = "<!-- anatomy_stats: begin -->", "<!-- anatomy_stats: end -->"


def write_between_markers(path: Path, text: str) -> None:
    """Replace what lies between the BEGIN and END markers of ``path`` (or write the file whole)."""
    block = f"{BEGIN}\n{text}{END}"
    old = path.read_text() if path.exists() else ""
    if BEGIN in old and END in old:
        block = old[: old.index(BEGIN)] + block + old[old.index(END) + len(END) :]
    path.write_text(block if block.endswith("\n") else block + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=600, help="procedural maps per view")
    p.add_argument("--out", type=Path, default=None, help="Markdown file to write the tables into")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if not DATA.is_dir():
        print(f"real data not found at {DATA}", file=sys.stderr)
        return 1
    camus, two, fans = load_camus()
    acdc = load_acdc_slices()
    parts, results, gates = [], {}, []
    outside: dict[str, dict[str, float]] = {}  # mean share of labelled pixels outside the sector
    pooled: dict[str, list[float]] = {"real": [], "procedural": []}
    for view, pick in (("echo_a4c", ~two), ("echo_a2c", two)):
        real = camus[pick]
        synth, sectors = procedural_echo(view, args.n, ECHO_SHAPE)
        rows = {
            "real": [echo_stats(x, f) for x, f in zip(real, fans[pick], strict=True)],
            "procedural": [echo_stats(x, f) for x, f in zip(synth, sectors, strict=True)],
        }
        results[view] = compare(rows["real"], rows["procedural"])
        for kind in pooled:
            pooled[kind] += [r["outside_sector"] for r in rows[kind]]
        outside[view] = {kind: mean_of(rows[kind], "outside_sector") for kind in rows}
        parts.append(
            table(
                f"{view} vs CAMUS {'2CH' if view.endswith('a2c') else '4CH'}",
                results[view],
                len(real),
                len(synth),
            )
        )
        gates += [
            gate_line(f"CAMUS real {view[-3:]}", real, CAMUS),
            gate_line(f"procedural {view}", synth, CAMUS),
        ]
    outside["both"] = {kind: float(np.mean(v)) for kind, v in pooled.items()}
    results["outside_sector_mean"] = outside
    parts.append(
        "Labelled pixels outside the sector, mean per map: "
        + "; ".join(f"{k} real {v['real']:.2%}, procedural {v['procedural']:.2%}" for k, v in outside.items())
        + ".\n"
    )
    synth = procedural("sa_mr", args.n, SA_SHAPE)
    results["sa_mr"] = compare([sa_stats(x) for x in acdc], [sa_stats(x) for x in synth])
    parts.append(table("sa_mr vs ACDC (slices with myocardium)", results["sa_mr"], len(acdc), len(synth)))
    gates += [
        gate_line("ACDC real (slices with myocardium)", acdc, ACDC),
        gate_line("procedural sa_mr", synth, ACDC),
    ]
    from synthgen.schemas import MMWHS

    gates.append(gate_line("procedural ct_axial", procedural("ct_axial", args.n, (256, 256)), MMWHS))
    text = "\n".join(parts) + "\n" + "\n".join(gates) + "\n"
    print(text)
    if args.out:
        write_between_markers(args.out, text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
