"""A PNG contact sheet of samples: each tile shows the image and, beside it, the image with its labels.

Labels are drawn in the schema's colours (:func:`display_colors`): a translucent fill and an opaque
one-pixel outline, so that both the class and how well its boundary sits on the image can be judged by eye. Images are mapped
to grey levels by the store's intensity range (uint8 as is); RGB images are shown in colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from synthgen.errors import InputDataError, StoreError
from synthgen.schemas import Intensity, LabelSchema, fill_colors

MAX_TILE = 256  # longest side of one picture in the sheet; larger samples are shrunk for display


def to_display(image: np.ndarray, intensity: Intensity) -> np.ndarray:
    """(H, W, 3) uint8 for an (H, W) or (C, H, W) image, mapping [low, high] to [0, 255]."""
    if image.ndim == 3:
        image = image[:3].transpose(1, 2, 0) if image.shape[0] >= 3 else image[0]
    if image.dtype == np.uint8 and intensity.low == 0 and intensity.high == 255:
        grey = image
    else:
        low, high = float(intensity.low), float(intensity.high)
        finite = image[np.isfinite(image)] if image.dtype.kind == "f" else image
        if finite.size and (finite.min() < low or finite.max() > high):  # range not as declared
            low, high = (float(v) for v in np.percentile(finite, (0.5, 99.5)))
        scale = 255.0 / max(high - low, 1e-12)
        grey = np.clip((np.nan_to_num(image.astype(np.float32)) - low) * scale, 0, 255).astype(np.uint8)
    return grey if grey.ndim == 3 else np.repeat(grey[..., None], 3, axis=2)


def boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels of a label map whose label differs from a 4-neighbour's, inside non-background classes."""
    edge = np.zeros(labels.shape, bool)
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    return edge & (labels > 0)


def display_colors(schema: LabelSchema) -> tuple[tuple[int, int, int], ...]:
    """The colour of each class of ``schema`` on screen: its own, except where an earlier class has the
    same one (stores written before classes got default colours hold white for every class given
    none): then a default colour that no other class has (:func:`~synthgen.schemas.fill_colors`)."""
    seen: set[tuple[int, ...]] = set()
    colors = []
    for c in schema.classes:
        colors.append(None if tuple(c.color) in seen else c.color)
        seen.add(tuple(c.color))
    return fill_colors(colors)


def overlay(rgb: np.ndarray, labels: np.ndarray, schema: LabelSchema, alpha: float = 0.35) -> np.ndarray:
    """``rgb`` with the label classes blended in at ``alpha`` and outlined opaquely."""
    colors = schema.palette(display_colors(schema))[labels].astype(np.float32)
    out = rgb.astype(np.float32)
    fg = labels > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * colors[fg]
    edge = boundaries(labels)
    out[edge] = colors[edge]
    return out.astype(np.uint8)


def _legend(schema: LabelSchema, width: int):
    from PIL import Image, ImageDraw

    sheet = Image.new("RGB", (width, 18), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    x = 4
    for c, color in zip(schema.classes, display_colors(schema), strict=True):
        draw.rectangle((x, 4, x + 10, 14), fill=color)
        text = f"{c.value} {c.name}"
        draw.text((x + 14, 3), text, fill=(255, 255, 255))
        x += 14 + int(draw.textlength(text)) + 12
    return sheet


def render_sheet(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    schema: LabelSchema,
    intensity: Intensity,
    captions: Sequence[str] | None = None,
    columns: int | None = None,
):
    """A PIL image: one tile [image | image + labels] per sample, in a grid, with a class legend."""
    from PIL import Image, ImageDraw

    if len(images) != len(labels) or not len(images):
        raise InputDataError(
            f"Expected as many images as labels, at least one. Got {len(images)} and {len(labels)}."
        )
    h, w = labels[0].shape
    scale = min(1.0, MAX_TILE / max(h, w))
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    columns = columns or max(1, min(4, int(np.ceil(np.sqrt(len(images))))))
    rows = -(-len(images) // columns)
    gap = 4
    sheet = Image.new("RGB", (columns * (2 * tw + 3 * gap), rows * (th + gap) + gap), (40, 40, 40))
    draw = ImageDraw.Draw(sheet)
    for i, (image, lab) in enumerate(zip(images, labels, strict=True)):
        rgb = to_display(np.asarray(image), intensity)
        pair = np.concatenate([rgb, overlay(rgb, np.asarray(lab), schema)], axis=1)
        tile = Image.fromarray(pair)
        if scale < 1:
            tile = tile.resize((2 * tw, th), Image.Resampling.NEAREST)
        x, y = (i % columns) * (2 * tw + 3 * gap) + gap, (i // columns) * (th + gap) + gap
        sheet.paste(tile, (x, y))
        if captions is not None:
            draw.text((x + 2, y + 1), captions[i], fill=(255, 255, 0))
    legend = _legend(schema, sheet.width)
    full = Image.new("RGB", (sheet.width, sheet.height + legend.height))
    full.paste(sheet, (0, 0))
    full.paste(legend, (0, sheet.height))
    return full


def preview_indices(available: np.ndarray, n: int) -> np.ndarray:
    """``n`` sample indices spread evenly over ``available`` (all of them if fewer)."""
    if len(available) <= n:
        return available
    return available[np.linspace(0, len(available) - 1, n).round().astype(np.int64)]


def write_preview(reader, path: str | Path, n: int = 16) -> list[int]:
    """Write a PNG sheet of ``n`` samples of a store (evenly spread over complete shards).

    Returns the sample indices shown.
    """
    available = reader.available_indices()
    if not len(available):
        raise StoreError(f"Expected complete shards to preview in {reader.url}. It has none.")
    chosen = preview_indices(available, n)
    images, labels = zip(*(reader.read_sample(int(i)) for i in chosen), strict=True)
    sheet = render_sheet(images, labels, reader.schema, reader.attrs.intensity, [f"#{i}" for i in chosen])
    try:
        sheet.save(path, format="PNG")
    except OSError as e:
        raise StoreError(f"Cannot write the preview {path}: {e}") from e
    return [int(i) for i in chosen]
