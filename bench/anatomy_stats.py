"""Compare procedural anatomy with the real expert labels: per-statistic median and 5-95% range.

Run from the repository root:

    python bench/anatomy_stats.py [--n 600] [--out ../notes/anatomy.md] [--json out/anatomy_stats.json]

``--out`` replaces the part of the file between the ``anatomy_stats`` begin/end markers (or writes
the whole file when it has none).

Reads CAMUS (apical 2/4-chamber echo, 224 x 224) and ACDC (short-axis MR) from ../shared/data with
nibabel, renders the same number of procedural maps per view with ``synthgen.sources.anatomy``, runs
the plausibility gate on both, and writes the comparison table as Markdown (and JSON if asked).
Statistics are measured identically on real and procedural maps by the functions below.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from synthgen.schemas import ACDC, CAMUS
from synthgen.sources.anatomy import render, sample_params
from synthgen.sources.gate import GateReport, check_batch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ECHO_SHAPE = (224, 224)
SA_SHAPE = (216, 256)  # the commonest ACDC slice shape


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


def echo_stats(x: np.ndarray) -> dict[str, float]:
    """Statistics of one CAMUS-schema map (cavity 1, myocardium 2, atrium 3)."""
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


def load_camus() -> tuple[np.ndarray, np.ndarray]:
    """All CAMUS ground-truth maps (N, 224, 224) and whether each is a 2-chamber view."""
    import nibabel as nib

    files = sorted((DATA / "camus").glob("patient*/patient*_?CH_E?_gt.nii.gz"))
    maps = np.stack([np.asarray(nib.load(f).dataobj)[:, :, 0].T for f in files]).astype(np.uint8)
    return maps, np.array(["_2CH_" in f.name for f in files])


def load_acdc_slices() -> list[np.ndarray]:
    """Every ACDC ground-truth slice with myocardium, as (rows, cols) uint8."""
    import nibabel as nib

    files = sorted((DATA / "acdc").glob("patient*/patient*_frame??_gt.nii.gz"))
    slices = [z.astype(np.uint8) for f in files for z in np.asarray(nib.load(f).dataobj).transpose(2, 0, 1)]
    return [z for z in slices if (z == 2).any()]


def procedural(view: str, n: int, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.stack([render(sample_params(np.random.default_rng([seed, i]), view), shape) for i in range(n)])


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


def compare(real: list[np.ndarray] | np.ndarray, synth: np.ndarray, stats) -> dict[str, dict]:
    a, b = summarise([stats(x) for x in real]), summarise([stats(x) for x in synth])
    return {k: {"real": a[k], "procedural": b[k]} for k in a}


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
    camus, two = load_camus()
    acdc = load_acdc_slices()
    parts, results, gates = [], {}, []
    for view, real in (("echo_a4c", camus[~two]), ("echo_a2c", camus[two])):
        synth = procedural(view, args.n, ECHO_SHAPE)
        results[view] = compare(real, synth, echo_stats)
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
    synth = procedural("sa_mr", args.n, SA_SHAPE)
    results["sa_mr"] = compare(acdc, synth, sa_stats)
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
