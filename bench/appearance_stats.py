"""Image statistics of real CAMUS and synthetic echo stores side by side, the variety of one label map,
and a preview grid.

Build the stores, then run from the repository root:

    synthgen ingest /work/shared/data/camus camus.zarr
    synthgen build-dataset --out old.zarr --n 400 --no-appearance
    synthgen build-dataset --out new.zarr --n 400
    synthgen build-dataset --out rand.zarr --n 400 --generator randomised
    python bench/appearance_stats.py --real camus.zarr --store old=old.zarr --store new=new.zarr \\
        --store randomised=rand.zarr [--generator NAME=CHECKPOINT] [--json out.json] [--md out.md] \\
        [--grid grid.png]

Every image is measured identically at 128 x 128 (``SIZE``): a store of another size is resized with
synthgen's one image resize (``resize_images``) and one label resize (``resize_labels``). Grey levels
are the store's intensity range mapped to 0-255. Per image:

- the **fan**: pixels above 0 after a 3 x 3 opening, largest component, holes filled
  (``sector_geometry.fan_mask``);
- ``base_width``: the fan's widest row over the image width; ``half_angle_deg``: half the angle
  between the fan's two fitted straight edges, in pixel space (``sector_geometry.measure``; NaN where
  the fit fails);
- ``hf_energy``: high-frequency energy, the mean of ``|image - box3(image)|`` (``box3``: the 3 x 3
  mean, borders reflected) over the fan eroded by ``ERODE_PX`` pixels, so that the fan's own edge does
  not count;
- ``contrast``: the mean grey level of the myocardium minus that of the cavity (all pixels of each
  class, inside the fan or not); ``low_contrast`` is the share of images where it is below
  ``LOW_CONTRAST`` (and, since the randomised generator draws the sign at random, the share where
  its absolute value is);
- ``outside_fan``: the share of labelled pixels (label > 0) outside the fan, per image (its mean is
  reported) and pooled over all images of a store;
- ``fan_mean``: the mean grey level inside the fan.

Each statistic is summarised per store by its median and 5th-95th percentiles; ``fan_mean`` and
``hf_energy`` also by their standard deviation across images. Where a store holds ``meta/appearance``
(the appearance draw, ``synthgen.kernels.randomise`` layout), the drawn half angle and far-boundary
width are summarised too.

**Variety of one label map**: the first held-out CAMUS map (patient number % 10 == 0), resized to
128, is drawn ``DRAWS`` times (samples 0 to DRAWS - 1, so different appearance keys) by the build's
own code (``pipeline.generate_images``) under three configs: the old default (no appearance stage),
the new default and the randomised generator; each ``--generator NAME=CHECKPOINT`` adds two more (that
generator without and with the appearance stage; a generator with a style input gets each sample's
style from the build's style stream). The standard deviations of ``fan_mean`` and
``hf_energy`` across those draws are set against their standard deviations across real images.

**Grid** (``--grid``): one greyscale PNG of 128 px tiles, ``GRID_COLUMNS`` a row, each row named on a
left margin: held-out real CAMUS images, the first images of each ``--store``, and the draws of the
one label map by the new default, by the randomised generator and by each ``--generator`` alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sector_geometry import fan_mask, measure

from synthgen.kernels import resize_images, resize_labels
from synthgen.kernels.randomise import HALF_ANGLE, WIDTH

SIZE = (128, 128)
ERODE_PX = 3
LOW_CONTRAST = 10.0
DRAWS = 16
GRID_COLUMNS = 8
MARGIN_PX = 150
CAVITY, MYOCARDIUM = "lv_cavity", "lv_myocardium"
VARIANTS = {
    "old default": {"appearance": {"enabled": False}},
    "new default": {},
    "randomised": {"generator": "randomised"},
}
BUILD_COMMANDS = """synthgen ingest /work/shared/data/camus camus.zarr
synthgen build-dataset --out old.zarr --n 400 --no-appearance
synthgen build-dataset --out new.zarr --n 400
synthgen build-dataset --out rand.zarr --n 400 --generator randomised"""
PER_IMAGE = ("base_width", "half_angle_deg", "hf_energy", "contrast", "outside_fan", "fan_mean")


@dataclass
class Images:
    """Grey images (N, 128, 128) float32 in 0-255, their label maps and the class values to compare."""

    grey: np.ndarray
    labels: np.ndarray
    cavity: int
    myocardium: int
    appearance: np.ndarray | None = None  # (N, params) meta/appearance, where the store has it


@dataclass
class ImageStats:
    """Per-image statistics (see the module docstring), one array entry per image."""

    base_width: np.ndarray
    half_angle_deg: np.ndarray
    hf_energy: np.ndarray
    contrast: np.ndarray
    outside_fan: np.ndarray
    fan_mean: np.ndarray
    labelled: np.ndarray  # labelled pixels per image
    labelled_outside: np.ndarray  # of which outside the fan


@dataclass
class Summary:
    """Median and 5th-95th percentiles of one statistic over a store's images (finite values)."""

    n: int
    median: float
    p5: float
    p95: float


@dataclass
class StoreSummary:
    name: str
    images: int
    stats: dict[str, Summary]
    std_fan_mean: float
    std_hf_energy: float
    std_contrast: float
    low_contrast: float  # share of images with contrast below LOW_CONTRAST
    low_abs_contrast: float  # share with |contrast| below LOW_CONTRAST (the randomised sign is random)
    outside_fan_pooled: float
    outside_fan_image_mean: float
    half_angle_fit_failed: int
    drawn: dict[str, Summary] | None  # from meta/appearance


@dataclass
class Variety:
    """Statistics of DRAWS draws of one label map under one config."""

    name: str
    std_fan_mean: float
    std_hf_energy: float
    std_contrast: float
    fan_mean: Summary
    hf_energy: Summary
    half_angle_deg: Summary


def class_value(schema, name: str) -> int:
    """The label value of class ``name`` in ``schema``."""
    if name not in schema.names:
        sys.exit(f"Expected a class {name!r} in the store's label schema. Got {schema.names} instead.")
    return schema.values[schema.names.index(name)]


def to_grey(images: np.ndarray, intensity) -> np.ndarray:
    """Store images -> float32 grey levels 0-255 at SIZE (resized with synthgen's image resize)."""
    images = resize_images(np.asarray(images), SIZE)
    scale = 255.0 / (intensity.high - intensity.low)
    return ((images.astype(np.float32) - intensity.low) * scale).astype(np.float32)


def read_store(url: str, indices: np.ndarray | None = None) -> Images:
    """The images and label maps of store ``url`` (all available samples, or ``indices``) at SIZE."""
    from synthgen.storage import StoreReader, store_exists

    if not store_exists(url):
        sys.exit(
            f"No store at {url}. Build it first: see 'python bench/appearance_stats.py --help' for the commands."
        )
    reader = StoreReader(url)
    if len(reader.layout.image_shape) != 2:
        sys.exit(f"Expected grey images (H, W) in {url}. Got shape {reader.layout.image_shape} instead.")
    if indices is None:
        indices = reader.available_indices()
    has_appearance = "appearance" in {m.name for m in reader.layout.meta}
    grey, labels, appearance = [], [], []
    for k in reader.complete_shards:
        start, stop = reader.layout.shard_bounds(k)
        keep = indices[(indices >= start) & (indices < stop)]
        if not keep.size:
            continue
        images, maps = reader.read_block(start, stop)
        grey.append(to_grey(images[keep - start], reader.attrs.intensity))
        labels.append(resize_labels(maps[keep - start], SIZE))
        if has_appearance:
            appearance.append(reader.read_meta("appearance", start, stop)[keep - start])
    if not grey:
        sys.exit(f"Expected complete shards in {url}. Found none: finish its build first.")
    return Images(
        grey=np.concatenate(grey),
        labels=np.concatenate(labels),
        cavity=class_value(reader.schema, CAVITY),
        myocardium=class_value(reader.schema, MYOCARDIUM),
        appearance=np.concatenate(appearance) if appearance else None,
    )


def test_indices(url: str) -> np.ndarray:
    """Indices of the held-out test patients' samples (patient number % 10 == 0) of an ingested store."""
    from synthgen.storage import StoreReader, split_indices

    return split_indices(StoreReader(url), "test")


def hf_energy(grey: np.ndarray, fan: np.ndarray) -> float:
    """Mean |image - 3 x 3 box blur| over the fan eroded by ERODE_PX pixels (NaN if nothing is left)."""
    inner = ndi.binary_erosion(fan, iterations=ERODE_PX)
    if not inner.any():
        return float("nan")
    residual = np.abs(grey - ndi.uniform_filter(grey, size=3, mode="reflect"))
    return float(residual[inner].mean())


def class_mean(grey: np.ndarray, labels: np.ndarray, value: int) -> float:
    mask = labels == value
    return float(grey[mask].mean()) if mask.any() else float("nan")


def image_stats(images: Images) -> ImageStats:
    """The per-image statistics of the module docstring."""
    out = {name: np.full(len(images.grey), np.nan) for name in PER_IMAGE}
    labelled = np.zeros(len(images.grey), np.int64)
    outside = np.zeros(len(images.grey), np.int64)
    for i, (grey, labels) in enumerate(zip(images.grey, images.labels, strict=True)):
        fan = fan_mask(np.rint(grey).astype(np.uint8))
        fit = measure(np.rint(grey).astype(np.uint8), labels)
        out["half_angle_deg"][i] = fit["half_angle_deg"]
        widths = fan.sum(axis=1)
        out["base_width"][i] = widths.max() / fan.shape[1]
        out["hf_energy"][i] = hf_energy(grey, fan)
        out["contrast"][i] = class_mean(grey, labels, images.myocardium) - class_mean(
            grey, labels, images.cavity
        )
        labelled[i] = np.count_nonzero(labels)
        outside[i] = np.count_nonzero((labels > 0) & ~fan)
        if labelled[i]:
            out["outside_fan"][i] = outside[i] / labelled[i]
        if fan.any():
            out["fan_mean"][i] = float(grey[fan].mean())
    return ImageStats(**out, labelled=labelled, labelled_outside=outside)


def summarise(values: np.ndarray) -> Summary:
    v = values[np.isfinite(values)]
    if not v.size:
        return Summary(0, float("nan"), float("nan"), float("nan"))
    p5, median, p95 = np.percentile(v, (5, 50, 95))
    return Summary(int(v.size), float(median), float(p5), float(p95))


def summarise_store(name: str, images: Images) -> StoreSummary:
    s = image_stats(images)
    drawn = None
    if images.appearance is not None:
        drawn = {
            "drawn_half_angle_deg": summarise(images.appearance[:, HALF_ANGLE].astype(float)),
            "drawn_width": summarise(images.appearance[:, WIDTH].astype(float)),
        }
    contrast = s.contrast[np.isfinite(s.contrast)]
    return StoreSummary(
        name=name,
        images=len(images.grey),
        stats={q: summarise(getattr(s, q)) for q in PER_IMAGE},
        std_fan_mean=float(np.nanstd(s.fan_mean)),
        std_hf_energy=float(np.nanstd(s.hf_energy)),
        std_contrast=float(np.nanstd(s.contrast)),
        low_contrast=float((contrast < LOW_CONTRAST).mean()),
        low_abs_contrast=float((np.abs(contrast) < LOW_CONTRAST).mean()),
        outside_fan_pooled=float(s.labelled_outside.sum() / max(s.labelled.sum(), 1)),
        outside_fan_image_mean=float(np.nanmean(s.outside_fan)),
        half_angle_fit_failed=int(np.isnan(s.half_angle_deg).sum()),
        drawn=drawn,
    )


def draw_one_map(labels: np.ndarray, overrides: dict, n: int) -> tuple[np.ndarray, object]:
    """``n`` images (n, 128, 128) in the store dtype of one label map (128 x 128) by the build's own
    code under ``overrides``, as samples 0 to n - 1; and the build's intensity."""
    from synthgen.engine import pipeline
    from synthgen.schemas import load_build_config

    config = load_build_config(None, overrides)
    gen = pipeline.generator(config)
    attrs = pipeline.store_attrs(config)
    indices = np.arange(n)
    styles = pipeline.draw_styles(config, indices, gen.style_dim)
    batch = np.repeat(labels[None], n, 0)
    images, _ = pipeline.generate_images(config, gen, batch, styles, attrs.intensity, indices=indices)
    return images, attrs.intensity


def variety(name: str, images: Images) -> Variety:
    s = image_stats(images)
    return Variety(
        name=name,
        std_fan_mean=float(np.nanstd(s.fan_mean)),
        std_hf_energy=float(np.nanstd(s.hf_energy)),
        std_contrast=float(np.nanstd(s.contrast)),
        fan_mean=summarise(s.fan_mean),
        hf_energy=summarise(s.hf_energy),
        half_angle_deg=summarise(s.half_angle_deg),
    )


def write_grid(path: Path, rows: list[tuple[str, np.ndarray]]) -> None:
    """One greyscale PNG: each row's images (up to GRID_COLUMNS, 0-255) as tiles, named on the left."""
    from PIL import Image, ImageDraw

    h, w = SIZE
    gap = 4
    canvas = np.zeros((len(rows) * (h + gap) + gap, MARGIN_PX + GRID_COLUMNS * (w + gap)), np.uint8)
    canvas[:] = 40
    for r, (_, tiles) in enumerate(rows):
        top = gap + r * (h + gap)
        for c, tile in enumerate(tiles[:GRID_COLUMNS]):
            left = MARGIN_PX + c * (w + gap)
            canvas[top : top + h, left : left + w] = np.clip(np.rint(tile), 0, 255).astype(np.uint8)
    image = Image.fromarray(canvas, mode="L")
    draw = ImageDraw.Draw(image)
    for r, (name, _) in enumerate(rows):
        top = gap + r * (h + gap)
        for j, line in enumerate(name.split("\n")):
            draw.text((6, top + h // 2 - 12 + 12 * j), line, fill=255)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def fmt(s: Summary, digits: int = 1) -> str:
    if not s.n:
        return "-"
    return f"{s.median:.{digits}f} [{s.p5:.{digits}f}, {s.p95:.{digits}f}]"


def markdown(stores: list[StoreSummary], varieties: list[Variety], commands: str) -> str:
    """The two tables, with the commands that made them."""
    names = [s.name for s in stores]
    lines = [
        "# Appearance statistics: real CAMUS and synthetic stores",
        "",
        "```",
        BUILD_COMMANDS,
        commands,
        "```",
        "",
        "All images at 128 x 128, grey levels 0-255. Median [5th, 95th percentile] over each store's images;"
        " definitions in the docstring of bench/appearance_stats.py.",
        "",
        "| statistic | " + " | ".join(names) + " |",
        "| --- |" + " --- |" * len(names),
        "| images | " + " | ".join(str(s.images) for s in stores) + " |",
    ]
    digits = {"base_width": 3, "half_angle_deg": 1, "outside_fan": 3}
    for q in PER_IMAGE:
        lines.append(f"| {q} | " + " | ".join(fmt(s.stats[q], digits.get(q, 1)) for s in stores) + " |")
    lines += [
        "| half-angle fit failed | " + " | ".join(str(s.half_angle_fit_failed) for s in stores) + " |",
        f"| share contrast < {LOW_CONTRAST:g} | "
        + " | ".join(f"{s.low_contrast:.1%}" for s in stores)
        + " |",
        f"| share abs(contrast) < {LOW_CONTRAST:g} | "
        + " | ".join(f"{s.low_abs_contrast:.1%}" for s in stores)
        + " |",
        "| outside_fan pooled | " + " | ".join(f"{s.outside_fan_pooled:.2%}" for s in stores) + " |",
        "| outside_fan per-image mean | "
        + " | ".join(f"{s.outside_fan_image_mean:.2%}" for s in stores)
        + " |",
        "| std of fan_mean | " + " | ".join(f"{s.std_fan_mean:.1f}" for s in stores) + " |",
        "| std of hf_energy | " + " | ".join(f"{s.std_hf_energy:.2f}" for s in stores) + " |",
    ]
    for q in ("drawn_half_angle_deg", "drawn_width"):
        lines.append(
            f"| {q} (meta/appearance) | "
            + " | ".join(fmt(s.drawn[q], 3 if q == "drawn_width" else 1) if s.drawn else "-" for s in stores)
            + " |"
        )
    real = stores[0]
    lines += [
        "",
        f"## Variety of one label map ({DRAWS} draws of the first held-out CAMUS map, resized to 128)",
        "",
        "| | std fan_mean | std hf_energy | std contrast | fan_mean | hf_energy | half_angle_deg |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {real.name}: across {real.images} real images | {real.std_fan_mean:.1f} | "
        f"{real.std_hf_energy:.2f} | {real.std_contrast:.1f} | {fmt(real.stats['fan_mean'])} | "
        f"{fmt(real.stats['hf_energy'])} | {fmt(real.stats['half_angle_deg'])} |",
    ]
    for v in varieties:
        lines.append(
            f"| {v.name} | {v.std_fan_mean:.1f} | {v.std_hf_energy:.2f} | {v.std_contrast:.1f} | "
            f"{fmt(v.fan_mean)} | {fmt(v.hf_energy)} | {fmt(v.half_angle_deg)} |"
        )
    return "\n".join(lines) + "\n"


def parse_store(text: str) -> tuple[str, str]:
    name, sep, url = text.partition("=")
    if not sep or not name or not url:
        raise argparse.ArgumentTypeError(f"Expected --store NAME=PATH. Got {text!r} instead.")
    return name, url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--real", required=True, help="store ingested from CAMUS (synthgen ingest)")
    parser.add_argument(
        "--store", type=parse_store, action="append", default=[], help="NAME=PATH of a synthetic store"
    )
    parser.add_argument(
        "--generator",
        type=parse_store,
        action="append",
        default=[],
        help="NAME=CHECKPOINT of another generator to draw the one label map with",
    )
    parser.add_argument("--json", type=Path, help="write the statistics as JSON here")
    parser.add_argument("--md", type=Path, help="write the tables as Markdown here")
    parser.add_argument("--grid", type=Path, help="write the preview grid PNG here")
    args = parser.parse_args(argv)
    commands = "python bench/appearance_stats.py " + " ".join(sys.argv[1:] if argv is None else argv)

    real = read_store(args.real)
    held_out = test_indices(args.real)
    if not held_out.size:
        sys.exit(f"Expected held-out CAMUS patients (number % 10 == 0) in {args.real}. Found none.")
    stores = [("real CAMUS", real)] + [(name, read_store(url)) for name, url in args.store]
    summaries = [summarise_store(name, images) for name, images in stores]

    one = read_store(args.real, held_out[:1])
    variants = dict(VARIANTS)
    for name, checkpoint in args.generator:
        variants[name] = {"generator": checkpoint, "appearance": {"enabled": False}}
        variants[f"{name} + appearance"] = {"generator": checkpoint}
    draws: dict[str, Images] = {}
    for name, overrides in variants.items():
        images, intensity = draw_one_map(one.labels[0], overrides, DRAWS)
        draws[name] = Images(
            to_grey(images, intensity), np.repeat(one.labels, DRAWS, 0), one.cavity, one.myocardium
        )
    varieties = [variety(name, images) for name, images in draws.items()]

    md = markdown(summaries, varieties, commands)
    print(md)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "commands": commands,
            "size": list(SIZE),
            "stores": [asdict(s) for s in summaries],
            "variety": {"draws": DRAWS, "label_map": f"{args.real} sample {int(held_out[0])}"}
            | {"configs": [asdict(v) for v in varieties]},
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(md)
    if args.grid:
        picks = held_out[np.linspace(0, held_out.size - 1, GRID_COLUMNS).astype(int)]
        rows = [("real CAMUS\n(held out)", read_store(args.real, picks).grey)]
        rows += [(name, images.grey) for name, images in stores[1:]]
        rows += [
            ("one map:\nnew default", draws["new default"].grey),
            ("one map:\nrandomised", draws["randomised"].grey),
        ]
        rows += [(f"one map:\n{name}", draws[name].grey) for name, _ in args.generator]
        write_grid(args.grid, rows)
        print(f"wrote {args.grid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
