"""``synthgen inspect``: the summary, class frequencies, the preview sheet, and stores that are not stores."""

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from helpers.data import disc_labels
from PIL import Image

from synthgen.cli import cli
from synthgen.errors import InputDataError
from synthgen.schemas import CAMUS
from synthgen.schemas.store_layout import Intensity, MetaField, StoreAttrs, StoreLayout
from synthgen.storage.preview import boundaries, overlay, preview_indices, render_sheet, to_display
from synthgen.storage.store import StoreReader, StoreWriter
from synthgen.storage.summary import format_summary, summarize_store


def make_store(url, n=10, shard=4, complete=None, dtype="uint8", labels=None):
    layout = StoreLayout(
        n=n, image_shape=(16, 16), image_dtype=dtype, shard_size=shard, meta=(MetaField("seed", "int32"),)
    )
    labels = disc_labels(n, 16, 16) if labels is None else labels
    images = (labels.astype(np.float32) * 60 + 10).astype(dtype)
    writer = StoreWriter.create(
        url, StoreAttrs(layout, CAMUS, Intensity.for_dtype(dtype), provenance={"tool": "test"})
    )
    for k in range(layout.num_shards) if complete is None else complete:
        a, b = layout.shard_bounds(k)
        writer.write_shard(k, images[a:b], labels[a:b], {"seed": np.arange(a, b, dtype=np.int32)})
    writer.mark_complete(range(layout.num_shards) if complete is None else complete)
    return labels


def test_class_fractions_exact_over_complete_shards_only(tmp_path):
    url = str(tmp_path / "s.zarr")
    labels = make_store(url, complete=[0, 2])  # shard 1 (samples 4..7) is not complete
    summary = summarize_store(StoreReader(url))
    counted = np.concatenate([labels[0:4], labels[8:10]])
    expected = {v: float((counted == v).mean()) for v in (0, 1, 2, 3)}
    assert summary.class_fractions() == pytest.approx(expected)
    assert summary.counted_shards == (0, 2) and summary.counted_samples == 6 and summary.available == 6
    text = format_summary(summary)
    assert "2 of 3 complete" in text and "over 6 samples (all complete shards)" in text
    assert "lv_cavity" in text and "seed" in text and "tool          test" in text


def test_class_fractions_over_a_subset_of_shards(tmp_path):
    url = str(tmp_path / "s.zarr")
    make_store(url, n=20, shard=2)
    summary = summarize_store(StoreReader(url), max_shards=3)
    assert summary.counted_shards == (0, 4, 9) and summary.counted_samples == 6
    assert "3 of 10 complete shards, evenly spread" in format_summary(summary)


def test_value_outside_schema_is_shown(tmp_path):
    url = str(tmp_path / "s.zarr")
    labels = disc_labels(4, 16, 16)
    labels[0, 0, 0] = 9
    make_store(url, n=4, labels=labels)
    text = format_summary(summarize_store(StoreReader(url)))
    assert "9  NOT IN SCHEMA" in text


def test_inspect_cli_with_preview(tmp_path):
    url = tmp_path / "s.zarr"
    make_store(str(url), n=10)
    png = tmp_path / "p.png"
    result = CliRunner().invoke(cli, ["inspect", str(url), "--preview", str(png), "--n", "4"])
    assert result.exit_code == 0, result.output
    assert "samples      10 (10 available" in result.output and "p.png (4 samples)" in result.output
    sheet = np.asarray(Image.open(png).convert("RGB"))
    colours = {tuple(c) for c in sheet.reshape(-1, 3)}
    assert all(tuple(c.color) in colours for c in CAMUS.classes)  # outlines in the schema colours


@pytest.mark.parametrize("kind", ["missing", "empty", "file", "plain zarr"])
def test_inspect_not_a_store(tmp_path, kind):
    path = tmp_path / "x"
    if kind == "empty":
        path.mkdir()
    elif kind == "file":
        path.write_text("hello")
    elif kind == "plain zarr":
        zarr.open_group(str(path), mode="w").create_array("images", shape=(2, 4), dtype="uint8")
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("synthgen: error: ")
    assert ("not a synthgen store" in lines[0]) if kind == "plain zarr" else ("No Zarr store" in lines[0])


def test_preview_of_store_without_complete_shards(tmp_path):
    url = str(tmp_path / "s.zarr")
    make_store(url, complete=[])
    result = CliRunner().invoke(cli, ["inspect", url, "--preview", str(tmp_path / "p.png")])
    assert result.exit_code == 1 and "complete shards to preview" in result.stderr
    assert "no complete shards to count" in result.output


def test_overlay_and_boundaries():
    labels = np.zeros((8, 8), np.uint8)
    labels[2:6, 2:6] = 1
    labels[3:5, 3:5] = 2
    edge = boundaries(labels)
    assert edge[2, 2] and edge[3, 3] and not edge[0, 0]
    grey = np.full((8, 8, 3), 100, np.uint8)
    out = overlay(grey, labels, CAMUS)
    assert tuple(out[2, 2]) == CAMUS.classes[0].color and tuple(out[0, 0]) == (100, 100, 100)


def test_to_display_ranges():
    u16 = np.array([[0, 65535]], np.uint16)
    assert to_display(u16, Intensity.for_dtype("uint16"))[0, :, 0].tolist() == [0, 255]
    f = np.array([[-3.0, 5.0, np.nan]], np.float32)  # outside the declared [0, 1]: percentile stretch
    shown = to_display(f, Intensity.for_dtype("float32"))
    assert shown.dtype == np.uint8 and shown[0, 0, 0] == 0 and shown[0, 1, 0] == 255
    rgb = np.zeros((3, 4, 4), np.uint8)
    rgb[0] = 255
    assert tuple(to_display(rgb, Intensity())[0, 0]) == (255, 0, 0)


def test_render_sheet_size_and_indices():
    labels = disc_labels(5, 20, 30)
    sheet = render_sheet(list(labels * 50), list(labels), CAMUS, Intensity(), columns=2)
    assert sheet.size == (2 * (2 * 30 + 12), 3 * (20 + 4) + 4 + 18)
    assert preview_indices(np.arange(100), 5).tolist() == [0, 25, 50, 74, 99]
    assert preview_indices(np.arange(3), 5).tolist() == [0, 1, 2]
    with pytest.raises(InputDataError):
        render_sheet([], [], CAMUS, Intensity())
