"""Ingestion: layouts, readers, resampling, bad input through the CLI, and the real CAMUS/ACDC data."""

import gzip
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from click.testing import CliRunner
from helpers.cli import assert_clean_failure
from helpers.data import disc_labels, real_data
from PIL import Image

from synthgen.cli import cli
from synthgen.errors import ConfigError, InputDataError
from synthgen.kernels import resize_labels
from synthgen.storage.ingestion import IngestConfig, ingest, store_image_dtype
from synthgen.storage.layouts import detect_layout, discover
from synthgen.storage.readers import read_volume
from synthgen.storage.store import StoreReader, store_exists

H, W = 12, 16  # rows, cols: not square, so a missing or extra transpose shows


def _pair(seed: int, shape=(H, W), dtype=np.uint8) -> tuple[np.ndarray, np.ndarray]:
    labels = disc_labels(1, *shape, seed=seed)[0]
    rng = np.random.default_rng(seed)
    image = (labels * 50 + rng.integers(0, 40, shape)).astype(dtype)
    return image, labels


def _save_nifti(path: Path, rows_cols: np.ndarray) -> None:
    """Save (rows, cols) or (slices, rows, cols) the way CAMUS/ACDC do: NIfTI (x, y, z)."""
    vol = rows_cols[None] if rows_cols.ndim == 2 else rows_cols
    nib.save(nib.Nifti1Image(np.ascontiguousarray(vol.transpose(2, 1, 0)), np.eye(4)), path)


def make_camus(root: Path, patients=(1, 2), suffix=".nii.gz") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    truth = {}
    for p in patients:
        folder = root / f"patient{p:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for v, view in enumerate(("2CH", "4CH")):
            for f, phase in enumerate(("ED", "ES")):
                image, labels = _pair(p * 10 + v * 2 + f)
                name = f"patient{p:04d}_{view}_{phase}"
                truth[f"patient{p:04d}/{name}{suffix}"] = (image, labels)
                if suffix == ".mhd":
                    sitk.WriteImage(sitk.GetImageFromArray(image), str(folder / f"{name}.mhd"))
                    sitk.WriteImage(sitk.GetImageFromArray(labels), str(folder / f"{name}_gt.mhd"))
                else:
                    _save_nifti(folder / f"{name}{suffix}", image)
                    _save_nifti(folder / f"{name}_gt{suffix}", labels)
    return truth


def make_acdc(root: Path, shapes=((3, 12, 16), (2, 10, 16))) -> None:
    for p, shape in enumerate(shapes, start=1):
        folder = root / f"patient{p:03d}"
        folder.mkdir(parents=True)
        (folder / "Info.cfg").write_text("ED: 1\nES: 7\nGroup: NOR\n")
        for frame in (1, 7):
            labels = disc_labels(shape[0], *shape[1:], seed=p + frame)
            _save_nifti(
                folder / f"patient{p:03d}_frame{frame:02d}.nii.gz", (labels * 60 + 10).astype(np.uint8)
            )
            _save_nifti(folder / f"patient{p:03d}_frame{frame:02d}_gt.nii.gz", labels)


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


# -- happy paths -----------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".nii.gz", ".mhd"])
def test_camus_labels_and_images_equal_sources(tmp_path, suffix):
    truth = make_camus(tmp_path / "src", suffix=suffix)
    result = run("ingest", tmp_path / "src", tmp_path / "out.zarr")
    assert result.exit_code == 0, result.output
    reader = StoreReader(str(tmp_path / "out.zarr"))
    assert reader.layout.n == 8 and reader.attrs.is_complete
    images, labels = reader.read_block(0, 8)
    sources = reader.attrs.provenance["sources"]
    for i, index in enumerate(reader.read_meta("source_index")):
        image, lab = truth[sources[index]]
        np.testing.assert_array_equal(images[i], image)
        np.testing.assert_array_equal(labels[i], lab)
    assert reader.read_meta("view").tolist() == [1, 1, 2, 2] * 2
    assert reader.read_meta("phase").tolist() == [1, 2] * 4
    assert reader.read_meta("patient").tolist() == [1] * 4 + [2] * 4
    assert reader.schema.name == "camus" and reader.attrs.provenance["layout"] == "camus"
    assert reader.attrs.provenance["label_sources"][0].endswith(f"_2CH_ED_gt{suffix}")


def test_acdc_slices_need_size_then_resample(tmp_path):
    make_acdc(tmp_path / "src")
    out = tmp_path / "out.zarr"
    assert_clean_failure(run("ingest", tmp_path / "src", out), out, "--size", "12 x 16", "10 x 16")
    result = run("ingest", tmp_path / "src", out, "--size", 24, 32, "--shard-size", 4)
    assert result.exit_code == 0, result.output
    reader = StoreReader(str(out))
    assert reader.layout.n == 2 * 3 + 2 * 2 and reader.layout.image_shape == (24, 32)
    assert reader.read_meta("slice_index").tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 0, 1]
    assert reader.read_meta("phase").tolist() == [1, 1, 1, 2, 2, 2, 1, 1, 2, 2]
    assert reader.read_meta("view").tolist() == [3] * 10
    np.testing.assert_allclose(reader.read_meta("spacing")[0], [0.5, 0.5])
    _, labels = reader.read_block(0, 10)
    first = read_volume(tmp_path / "src/patient001/patient001_frame01_gt.nii.gz", "x", "label")
    np.testing.assert_array_equal(labels[1], resize_labels(first[1], (24, 32)))


def test_pairs_png_npy_and_patterns(tmp_path):
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "labels").mkdir()
    for i in range(3):
        image, labels = _pair(i, dtype=np.uint16)
        Image.fromarray(image).save(src / "images" / f"case{i}.png")
        Image.fromarray(labels).save(src / "labels" / f"case{i}.png")
    out = tmp_path / "out.zarr"
    result = run("ingest", src, out, "--schema", "camus", "--pattern", "../labels/{name}")
    assert result.exit_code == 0, result.output
    reader = StoreReader(str(out))
    assert reader.layout.image_dtype == "uint16"  # not forced to 8 bits
    images, labels = reader.read_block(0, 3)
    np.testing.assert_array_equal(images[2], _pair(2, dtype=np.uint16)[0])
    np.testing.assert_array_equal(labels[2], _pair(2)[1])
    assert np.isnan(reader.read_meta("spacing")).all()

    npy = tmp_path / "npy"
    npy.mkdir()
    for i in range(2):
        image, labels = _pair(i)
        np.save(npy / f"s{i}.npy", image.astype(np.float64))
        np.save(npy / f"s{i}_mask.npy", labels.astype(np.int64))
    assert run("ingest", npy, tmp_path / "n.zarr", "--schema", "camus").exit_code == 0
    assert StoreReader(str(tmp_path / "n.zarr")).layout.image_dtype == "float32"


def test_include_limit_and_overwrite(tmp_path):
    make_camus(tmp_path / "src", patients=(1, 2, 3))
    out = tmp_path / "out.zarr"
    assert run("ingest", tmp_path / "src", out, "--include", "patient0002/*").exit_code == 0
    assert StoreReader(str(out)).read_meta("patient").tolist() == [2] * 4
    assert_exists = run("ingest", tmp_path / "src", out)
    assert assert_exists.exit_code == 1 and "--overwrite" in assert_exists.stderr
    assert store_exists(str(out))  # the existing store is left alone
    assert run("ingest", tmp_path / "src", out, "--overwrite", "--limit", 5).exit_code == 0
    assert StoreReader(str(out)).layout.n == 5


def test_overwrite_refuses_a_folder_that_is_not_a_store(tmp_path):
    make_camus(tmp_path / "src")
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "precious.txt").write_text("x")
    result = run("ingest", tmp_path / "src", tmp_path / "keep", "--overwrite")
    assert result.exit_code == 1 and "not a synthgen store" in result.stderr
    assert (tmp_path / "keep" / "precious.txt").exists()


# -- bad input: one line, exit 1, no store left ------------------------------------------------------
def test_truncated_nifti(tmp_path):
    make_camus(tmp_path / "src")
    target = tmp_path / "src/patient0002/patient0002_4CH_ES_gt.nii.gz"
    data = target.read_bytes()
    target.write_bytes(data[: len(data) - 20])  # small file: the header itself is cut
    out = tmp_path / "out.zarr"
    assert_clean_failure(run("ingest", tmp_path / "src", out), out, "patient0002_4CH_ES_gt.nii.gz")


def test_truncated_nifti_data(tmp_path):
    """The header reads, the store is created, then decompressing the data fails: the store goes."""
    folder = tmp_path / "src/patient0001"
    folder.mkdir(parents=True)
    noise = np.random.default_rng(0).integers(0, 255, (128, 128), dtype=np.uint8)  # incompressible
    _save_nifti(folder / "patient0001_2CH_ED.nii.gz", noise)
    _save_nifti(folder / "patient0001_2CH_ED_gt.nii.gz", np.zeros((128, 128), np.uint8))
    target = folder / "patient0001_2CH_ED.nii.gz"
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    out = tmp_path / "out.zarr"
    assert_clean_failure(run("ingest", tmp_path / "src", out), out, "patient0001_2CH_ED.nii.gz", "EOFError")


def test_corrupt_nifti_header(tmp_path):
    make_camus(tmp_path / "src")
    (tmp_path / "src/patient0001/patient0001_2CH_ED.nii.gz").write_bytes(gzip.compress(b"not a nifti" * 10))
    out = tmp_path / "out.zarr"
    assert_clean_failure(run("ingest", tmp_path / "src", out), out, "patient0001_2CH_ED.nii.gz")


def test_truncated_mhd_raw(tmp_path):
    make_camus(tmp_path / "src", suffix=".mhd")
    raw = tmp_path / "src/patient0001/patient0001_4CH_ED_gt.raw"
    raw.write_bytes(raw.read_bytes()[:50])
    out = tmp_path / "out.zarr"
    assert_clean_failure(run("ingest", tmp_path / "src", out), out, "patient0001_4CH_ED_gt.mhd", "truncated")


def test_label_value_outside_schema(tmp_path):
    make_camus(tmp_path / "src")
    labels = _pair(0)[1]
    labels[0, 0] = 7
    _save_nifti(tmp_path / "src/patient0002/patient0002_2CH_ES_gt.nii.gz", labels)
    out = tmp_path / "out.zarr"
    assert_clean_failure(run("ingest", tmp_path / "src", out), out, "value 7", "patient0002_2CH_ES_gt.nii.gz")


def test_mismatched_shapes(tmp_path):
    make_camus(tmp_path / "src")
    _save_nifti(tmp_path / "src/patient0001/patient0001_4CH_ES_gt.nii.gz", np.zeros((H, W + 1), np.uint8))
    out = tmp_path / "out.zarr"
    assert_clean_failure(run("ingest", tmp_path / "src", out), out, "same shape", "patient0001_4CH_ES")


def test_empty_folder_and_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out.zarr"
    assert_clean_failure(run("ingest", tmp_path / "empty", out), out, "holds none")
    assert_clean_failure(run("ingest", tmp_path / "nowhere", out), out, "not one")


def test_image_without_label(tmp_path):
    make_camus(tmp_path / "src")
    (tmp_path / "src/patient0001/patient0001_2CH_ES_gt.nii.gz").unlink()
    out = tmp_path / "out.zarr"
    assert_clean_failure(run("ingest", tmp_path / "src", out), out, "patient0001_2CH_ES.nii.gz has no label")
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    Image.fromarray(_pair(0)[0]).save(pairs / "a.png")
    Image.fromarray(_pair(0)[1]).save(pairs / "a_gt.png")
    Image.fromarray(_pair(1)[0]).save(pairs / "b.png")
    assert_clean_failure(
        run("ingest", pairs, out, "--schema", "camus"), out, "b.png has no label", "--pattern"
    )


def test_pairs_need_a_schema_and_bad_pattern(tmp_path):
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    Image.fromarray(_pair(0)[0]).save(pairs / "a.png")
    Image.fromarray(_pair(0)[1]).save(pairs / "a_gt.png")
    out = tmp_path / "out.zarr"
    assert_clean_failure(run("ingest", pairs, out), out, "--schema")
    assert_clean_failure(
        run("ingest", pairs, out, "--schema", "camus", "--pattern", "{stem}_gt"), out, "{name}"
    )


def test_failure_after_store_created_deletes_it(tmp_path):
    """A label error in the second shard: the store was created and one shard written; all is removed."""
    make_camus(tmp_path / "src", patients=(1, 2, 3))
    labels = _pair(0)[1]
    labels[3, 3] = 9
    _save_nifti(tmp_path / "src/patient0003/patient0003_4CH_ES_gt.nii.gz", labels)
    out = tmp_path / "out.zarr"
    assert_clean_failure(run("ingest", tmp_path / "src", out, "--shard-size", 4), out, "value 9")
    assert not out.exists()


# -- pieces ----------------------------------------------------------------------------------------
def test_detect_layout_ambiguous(tmp_path):
    names = ["patient0001/patient0001_2CH_ED.nii.gz", "patient001/patient001_frame01.nii.gz"]
    with pytest.raises(InputDataError, match="--layout"):
        detect_layout(names, tmp_path)
    assert detect_layout(names[:1], tmp_path) == "camus"
    assert detect_layout(["a.png", "a_gt.png"], tmp_path) == "pairs"


def test_discover_skips_output_store_inside_source(tmp_path):
    make_camus(tmp_path / "src", patients=(1,))
    first = ingest(IngestConfig(str(tmp_path / "src"), str(tmp_path / "src" / "store.zarr")), progress=False)
    assert first.attrs.layout.n == 4
    layout, pairs = discover(tmp_path / "src")
    assert layout == "camus" and len(pairs) == 4


def test_config_round_trip_and_validation():
    config = IngestConfig("a", "b", layout="acdc", size=(64, 48), include=("p*",), limit=3)
    assert IngestConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="layout"):
        IngestConfig("a", "b", layout="nope")
    with pytest.raises(ConfigError, match="--size"):
        IngestConfig("a", "b", size=(0, 4))


def test_store_image_dtypes():
    assert [store_image_dtype(d) for d in ("uint8", "uint16", "float16", "int16", "float64", "bool")] == [
        "uint8",
        "uint16",
        "float16",
        "float32",
        "float32",
        "uint8",
    ]


# -- real data -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_real_camus_labels_equal_sources_pixel_for_pixel(tmp_path):
    source = real_data("camus")
    t0 = time.perf_counter()
    result = ingest(IngestConfig(str(source), str(tmp_path / "camus.zarr")), progress=False)
    seconds = time.perf_counter() - t0
    reader = StoreReader(str(tmp_path / "camus.zarr"))
    assert result.layout == "camus" and reader.attrs.is_complete and reader.layout.image_shape == (224, 224)
    sources = reader.attrs.provenance["label_sources"]
    index = reader.read_meta("source_index")
    for k, _, labels in reader.iter_shards():
        start, _ = reader.layout.shard_bounds(k)
        for j, lab in enumerate(labels):
            raw = np.asanyarray(nib.load(source / sources[index[start + j]]).dataobj)
            np.testing.assert_array_equal(lab, raw[:, :, 0].T, err_msg=sources[index[start + j]])
    assert seconds < 60, f"ingesting CAMUS took {seconds:.1f} s"


@pytest.mark.slow
def test_real_acdc_ingests_with_size(tmp_path):
    source = real_data("acdc")
    out = tmp_path / "acdc.zarr"
    result = ingest(
        IngestConfig(str(source), str(out), size=(128, 128), include=("patient00*",)), progress=False
    )
    reader = StoreReader(str(out))
    assert result.layout == "acdc" and reader.attrs.is_complete
    assert reader.layout.n == sum(nib.load(source / f).shape[2] for f in reader.attrs.provenance["sources"])
    _, labels = reader.read_block(0, reader.layout.n)
    assert set(np.unique(labels).tolist()) == {0, 1, 2, 3}


# -- readers ---------------------------------------------------------------------------------------
def _write_format(path: Path, volume: np.ndarray, fmt: str) -> Path:
    """Write a (slices, rows, cols) volume in ``fmt``; returns the file written."""
    xyz = np.ascontiguousarray(volume.transpose(2, 1, 0))
    if fmt in ("nii", "nii.gz", "nifti2"):
        cls = nib.Nifti2Image if fmt == "nifti2" else nib.Nifti1Image
        target = path.with_suffix(".nii" if fmt == "nii" else ".nii.gz")
        nib.save(cls(xyz, np.diag([0.7, 0.9, 2.0, 1.0])), target)
    elif fmt == "scaled":
        img = nib.Nifti1Image(xyz.astype(np.int16), np.eye(4))
        img.header.set_slope_inter(0.5, 1.0)
        target = path.with_suffix(".nii.gz")
        nib.save(img, target)
    elif fmt == "mhd":
        target = path.with_suffix(".mhd")
        sitk.WriteImage(sitk.GetImageFromArray(volume), str(target))
    elif fmt == "tiff":
        target = path.with_suffix(".tif")
        frames = [Image.fromarray(v) for v in volume]
        frames[0].save(target, save_all=True, append_images=frames[1:])
    else:
        target = path.with_suffix(".npy")
        np.save(target, volume)
    return target


@pytest.mark.parametrize("fmt", ["nii", "nii.gz", "nifti2", "scaled", "mhd", "tiff", "npy"])
def test_readers_agree_on_array_order(tmp_path, fmt):
    from synthgen.storage.readers import probe

    volume = np.random.default_rng(1).integers(0, 200, (3, 5, 7)).astype(np.uint8)
    target = _write_format(tmp_path / "v", volume, fmt)
    info = probe(target, "v")
    data = read_volume(target, "v")
    assert info.shape == (3, 5, 7) and data.shape == (3, 5, 7)
    if fmt == "scaled":
        assert info.dtype == "float32" and data.dtype == np.float32
        np.testing.assert_allclose(data, volume * 0.5 + 1.0)
    else:
        assert info.dtype == "uint8"
        np.testing.assert_array_equal(data, volume)
    if fmt in ("nii.gz", "nifti2"):
        assert info.spacing == pytest.approx((0.9, 0.7))


def test_rgb_images_and_rgb_label_rejected(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        image, labels = _pair(i)
        Image.fromarray(np.stack([image, image // 2, 255 - image], axis=-1)).save(src / f"c{i}.png")
        Image.fromarray(labels).save(src / f"c{i}_gt.png")
    out = tmp_path / "out.zarr"
    assert run("ingest", src, out, "--schema", "camus").exit_code == 0
    reader = StoreReader(str(out))
    assert reader.layout.image_shape == (3, H, W)
    image, _ = reader.read_sample(1)
    np.testing.assert_array_equal(image[2], 255 - _pair(1)[0])
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(src / "c1_gt.png")
    out2 = tmp_path / "out2.zarr"
    assert_clean_failure(run("ingest", src, out2, "--schema", "camus"), out2, "c1_gt.png", "RGB")
