"""A PNG grid of 64 label maps for a person who knows the cardiac views to judge.

Run from the repository root:

    python bench/label_grid.py [--out ../notes/label_grid.png] [--seed 0]

Rows (8 maps each, all 224 x 224, coloured by each schema's palette, black background):
1. procedural apical 4-chamber echo      5. ACDC volumes cut along random planes (centre, 2x)
2. procedural apical 2-chamber echo      6. real CAMUS expert labels, as annotated
3. procedural short-axis MR (centre, 2x) 7. the same CAMUS maps deformed (elastic + affine)
4. procedural axial CT (MM-WHS)          8. the same CAMUS maps, a second deformation
Each tile is framed white when the plausibility gate passes it and red when it rejects it; the
rejection reasons are printed. Rows 5-8 need ../shared/data and are left dark without it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from synthgen.schemas import ACDC, CAMUS, LabelSchema
from synthgen.sources.gate import check
from synthgen.sources.label_sources import source_from_config

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SIZE = 224
PER_ROW = 8
# the build defaults (synthgen.schemas.build_config.DeformConfig, at 128 px) scaled to 224 px
DEFORM_SPACING, DEFORM_MAX = 56.0, 7.0


def procedural(view: str, seed: int) -> tuple[np.ndarray, LabelSchema]:
    source = source_from_config({"kind": "procedural", "view": view}, (SIZE, SIZE))
    return source.draw_batch(seed, range(PER_ROW)).labels, source.schema


def zoom(maps: np.ndarray) -> np.ndarray:
    """The central half of each map at twice the size (short-axis hearts fill ~5% of the field)."""
    q = SIZE // 4
    return maps[:, q : SIZE - q, q : SIZE - q].repeat(2, axis=1).repeat(2, axis=2)


def acdc_slices(seed: int) -> np.ndarray:
    files = sorted((DATA / "acdc").glob("patient*/patient*_frame??_gt.nii.gz"))[::17]
    config = {"kind": "volume", "urls": [str(f) for f in files], "spacing": [6.5, 1.0, 1.0]}
    return source_from_config(config, (SIZE, SIZE)).draw_batch(seed, range(PER_ROW)).labels


def camus_maps(seed: int) -> np.ndarray:
    import nibabel as nib

    files = sorted((DATA / "camus").glob("patient*/patient*_?CH_E?_gt.nii.gz"))
    pick = np.random.default_rng(seed).choice(len(files), PER_ROW, replace=False)
    return np.stack([np.asarray(nib.load(files[i]).dataobj)[:, :, 0].T for i in pick]).astype(np.uint8)


def deformed(maps: np.ndarray, seed: int) -> np.ndarray:
    from synthgen.kernels import AffineRanges, deform_labels, sample_affine_params

    ranges = AffineRanges(
        max_rotation=8.0, min_scale=0.92, max_scale=1.08, max_shear=4.0, max_translation=0.04 * SIZE
    )
    rngs = [np.random.default_rng([seed, i]) for i in range(len(maps))]
    affines = [sample_affine_params(r, ranges) for r in rngs]
    seeds = [int(r.integers(2**31)) for r in rngs]
    return deform_labels(maps, seeds, DEFORM_SPACING, DEFORM_MAX, affine=affines)


def tile(labels: np.ndarray, schema: LabelSchema, reasons: list[str], where: str) -> np.ndarray:
    result = check(labels, schema)
    rgb = schema.palette()[labels]
    frame = (255, 255, 255) if result.passed else (255, 0, 0)
    rgb[:2], rgb[-2:], rgb[:, :2], rgb[:, -2:] = frame, frame, frame, frame
    if not result.passed:
        reasons.append(f"{where}: {', '.join(result.reasons)}")
    return rgb


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("label_grid.png"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rows: list[tuple[str, np.ndarray | None, LabelSchema]] = []
    views = (("echo A4C", "a4c"), ("echo A2C", "a2c"), ("SA MR (2x)", "short_axis"), ("CT axial", "ct_axial"))
    for r, (title, view) in enumerate(views):
        maps, schema = procedural(view, args.seed * 10 + r)
        rows.append((title, zoom(maps) if view == "short_axis" else maps, schema))
    if DATA.is_dir():
        camus = camus_maps(args.seed)
        rows += [
            ("ACDC 3D slices (2x)", zoom(acdc_slices(args.seed)), ACDC),
            ("CAMUS real", camus, CAMUS),
            ("CAMUS deformed", deformed(camus, args.seed + 1), CAMUS),
            ("CAMUS deformed", deformed(camus, args.seed + 2), CAMUS),
        ]
    else:
        print(f"real data not found at {DATA}: rows 5-8 left empty", file=sys.stderr)
        rows += [
            (t, None, CAMUS) for t in ("ACDC 3D slices", "CAMUS real", "CAMUS deformed", "CAMUS deformed")
        ]
    margin, reasons, lines = 120, [], []
    canvas = np.zeros((len(rows) * SIZE, margin + PER_ROW * SIZE, 3), np.uint8)
    for r, (title, maps, schema) in enumerate(rows):
        if maps is None:
            continue
        for c in range(PER_ROW):
            canvas[r * SIZE : (r + 1) * SIZE, margin + c * SIZE : margin + (c + 1) * SIZE] = tile(
                maps[c], schema, reasons, f"row {r + 1} ({title}) tile {c + 1}"
            )
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    for r, (title, _, schema) in enumerate(rows):
        draw.text((6, r * SIZE + SIZE // 2 - 12), f"{r + 1}. {title}", fill=(255, 255, 255))
        draw.text((6, r * SIZE + SIZE // 2 + 4), f"schema {schema.name}", fill=(160, 160, 160))
    image.save(args.out)
    lines.append(f"wrote {args.out} ({canvas.shape[1]} x {canvas.shape[0]})")
    lines += ["gate rejections:"] + (reasons or ["none"])
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
