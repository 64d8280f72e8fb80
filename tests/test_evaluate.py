"""evaluate seg / realism / utility: plumbing on tiny stores, FID and KID against references, errors."""

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
import zarr
from click.testing import CliRunner
from helpers.seg import GREY, TINY_MODEL, make_seg_store, tiny_train_config

from synthgen.cli import cli
from synthgen.errors import SchemaError, StoreError
from synthgen.evaluation import realism as rl
from synthgen.evaluation import segmentation as ev
from synthgen.evaluation.utility import UtilityConfig, patient_splits, prepare_stores, run_utility
from synthgen.models.segmenters import (
    SegmenterSpec,
    build_segmenter,
    init_segmenter,
    load_segmenter,
    save_segmenter,
)
from synthgen.schemas import ACDC, CAMUS, LabelClass, LabelSchema
from synthgen.storage.splits import is_test_patient, store_patients
from synthgen.storage.store import StoreReader, StoreWriter
from synthgen.trainers.runs import seeded

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture
def checkpoint(tmp_path):
    """A randomly initialised tiny U-Net checkpoint for the CAMUS schema at 32 x 32."""
    model = build_segmenter(TINY_MODEL, 1, CAMUS.num_classes)
    init_segmenter(model, seeded(0, 0))
    spec = SegmenterSpec(TINY_MODEL, (32, 32), 1, CAMUS, train_config={"train": "real.zarr"})
    return str(save_segmenter(tmp_path / "ckpt", model, spec))


PATIENTS = np.repeat(np.arange(1, 21), 2)  # 20 patients, 2 samples each; 10 and 20 are test patients


def test_frechet_distance_matches_scipy_sqrtm_and_is_zero_on_itself():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 5))
    b = rng.normal(size=(150, 5)) @ np.diag([1, 2, 0.5, 1, 3]) + 0.7
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    want = mu @ mu + np.trace(sa + sb - 2 * scipy.linalg.sqrtm(sa @ sb).real)
    assert rl.frechet_distance(a, b) == pytest.approx(want, rel=1e-8)
    assert rl.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_kid_mmd_matches_brute_force_and_separates_distributions():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(5, 3)) + 0.5

    def k(u, v):
        return (u @ v / 3 + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / 30
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
    xy = sum(k(x[i], y[j]) for i in range(6) for j in range(5)) / 30
    assert rl.mmd2_polynomial(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    same = rl.kernel_distance(rng.normal(size=(300, 4)), rng.normal(size=(300, 4)), rng, 20, 100)
    apart = rl.kernel_distance(rng.normal(size=(300, 4)), rng.normal(size=(300, 4)) + 1, rng, 20, 100)
    assert abs(same[0]) < 3 * same[1] + 0.01 and apart[0] > 10 * abs(same[0])


def test_nearest_neighbours_match_brute_force():
    rng = np.random.default_rng(2)
    q, r = rng.random((7, 10)), rng.random((9, 10))
    idx, dist = rl.nearest_neighbours(q, r, chunk=3)
    d = np.sqrt(((q[:, None] - r[None]) ** 2).mean(-1))
    np.testing.assert_array_equal(idx, d.argmin(1))
    np.testing.assert_allclose(dist, d.min(1), rtol=1e-9)


def test_evaluate_seg_rows_match_the_metrics(checkpoint, tmp_path, monkeypatch):
    store = make_seg_store(str(tmp_path / "s.zarr"), n=40, patients=PATIENTS, spacing=(0.5, 0.5))
    result = ev.evaluate_segmentation(checkpoint, store, tmp_path / "out", split="test")
    assert [r["index"] for r in result.rows] == [18, 19, 38, 39] and result.unit == "mm"
    assert {r["patient"] for r in result.rows} == {10, 20}
    with (tmp_path / "out" / "per_sample.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and "left_atrium_hd95" in rows[0]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["summary"]["lv_cavity"]["dice"]["n"] == 4
    assert (tmp_path / "out" / "summary.md").read_text().startswith("| class |")

    # noise-free images say their class by grey level: a perfect "prediction", then one missing the atrium
    clean = make_seg_store(str(tmp_path / "clean.zarr"), n=40, noise=0.0)

    def perfect(model, spec, images, normalise="none"):
        return np.abs(images[:, 0, :, :, None] * 255 - GREY).argmin(-1).astype(np.uint8)

    monkeypatch.setattr(ev, "predict", perfect)
    best = ev.evaluate_segmentation(checkpoint, clean)
    assert best.unit == "px" and len(best.rows) == 40
    assert all(r[f"{n}_dice"] == 1.0 and r[f"{n}_hd95"] == 0.0 for r in best.rows for n in CAMUS.names)

    def no_atrium(model, spec, images, normalise="none"):
        out = perfect(model, spec, images)
        out[out == 3] = 0
        return out

    monkeypatch.setattr(ev, "predict", no_atrium)
    missed = ev.evaluate_segmentation(checkpoint, clean, spacing=(2.0, 2.0))
    assert all(r["left_atrium_dice"] == 0.0 and np.isnan(r["left_atrium_hd95"]) for r in missed.rows)
    assert missed.summary["left_atrium"]["hd95"]["undefined"] == 40
    assert missed.summary["lv_cavity"]["dice"]["mean"] == 1.0 and missed.unit == "mm"


def test_evaluate_seg_scores_shared_classes_and_refuses_a_schema_sharing_none(checkpoint, tmp_path):
    acdc = make_seg_store(str(tmp_path / "acdc.zarr"), n=4, schema=ACDC)
    shared = ev.evaluate_segmentation(checkpoint, acdc)  # tests/test_cross_schema.py has the rest
    assert list(shared.summary) == ["lv_cavity", "lv_myocardium"]
    liver = LabelSchema("liver", (LabelClass("liver", 1), LabelClass("tumour", 2), LabelClass("vessel", 3)))
    apart = make_seg_store(str(tmp_path / "liver.zarr"), n=4, schema=liver)
    with pytest.raises(
        SchemaError, match="Expected a store sharing a class with the segmenter's schema 'camus'"
    ):
        ev.evaluate_segmentation(checkpoint, apart)
    result = CliRunner().invoke(cli, ["evaluate", "seg", checkpoint, apart])
    assert result.exit_code == 1 and result.output.startswith("synthgen: error: Expected a store sharing")


def test_realism_flags_copies_of_training_images(checkpoint, tmp_path):
    real = make_seg_store(str(tmp_path / "real.zarr"), n=40, patients=PATIENTS)
    reader = StoreReader(real)
    train = np.flatnonzero(~np.isin(store_patients(reader), [10, 20]))
    from synthgen.evaluation.utility import write_subset

    copies = write_subset(reader, str(tmp_path / "copies.zarr"), train[:8], {})
    cfg = rl.RealismConfig(copies, real, checkpoint, str(tmp_path / "out"), kid_subsets=5, kid_subset_size=4)
    report = rl.evaluate_realism(cfg)
    memo = report["memorisation"]
    assert memo["synthetic_to_nearest_real"]["p100"] == pytest.approx(0.0, abs=1e-6)
    assert memo["synthetic_closer_than_closest_reference"] == 1.0
    assert memo["closest_pairs"][0]["real"] in train[:8].tolist()
    # the reported FID is the Fréchet distance of the copies' and the training split's features, and
    # copies of training images sit closer to it than an all-grey store does
    model, spec = load_segmenter(checkpoint)
    f_copies, _ = rl.store_features(model, spec, StoreReader(copies), np.arange(8), 64)
    f_train, _ = rl.store_features(model, spec, reader, train, 64)
    fid = report["fid"]["synthetic_vs_real"]
    assert fid == pytest.approx(rl.frechet_distance(f_copies, f_train), rel=1e-9, abs=1e-12)
    source = StoreReader(copies)
    grey = StoreWriter.create(str(tmp_path / "grey.zarr"), source.attrs)
    images, labels = source.read_block(0, 8)
    grey.write_shard(0, np.full_like(images, 110), labels, {"patient": source.read_meta("patient", 0, 8)})
    grey.mark_complete([0])
    f_grey, _ = rl.store_features(model, spec, StoreReader(grey.url), np.arange(8), 64)
    assert fid < rl.frechet_distance(f_grey, f_train)
    assert "real_reference_vs_real" in report["kid"]
    assert set(report["label_adherence"]) == set(CAMUS.names)
    for name in ("realism.json", "memorisation.csv", "label_adherence.csv", "closest_pairs.png"):
        assert (tmp_path / "out" / name).is_file()
    assert any("FID" in line for line in rl.realism_lines(report))


def test_utility_splits_are_disjoint_nested_and_use_the_shared_test_split(tmp_path):
    real = make_seg_store(str(tmp_path / "real.zarr"), n=40, patients=PATIENTS)
    cfg = UtilityConfig(real, str(tmp_path / "u"), fractions=(0.2, 0.5))
    splits = patient_splits(StoreReader(real), cfg)
    patients = {k: set(PATIENTS[v].tolist()) for k, v in splits.items()}
    assert patients["test"] == {p for p in range(1, 21) if is_test_patient(p)} == {10, 20}
    assert (
        not patients["test"] & (patients["val"] | patients["train"])
        and not patients["val"] & patients["train"]
    )
    assert patients["train10"] <= patients["train25"] <= patients["train"]
    assert len(patients["train10"]) == 3 and len(patients["train25"]) == 8  # of 16 pool patients
    urls = prepare_stores(cfg)
    copy = StoreReader(urls["val"])
    np.testing.assert_array_equal(
        copy.read_block(0, copy.layout.n)[1], StoreReader(real).read_block(0, 40)[1][splits["val"]]
    )


def test_utility_split_stores_replace_a_killed_write_and_survive_concurrent_runs(tmp_path):
    """A split store left unopenable by a run killed mid-write (older versions wrote in place) is
    written again; a dead run's private partial copy is removed; two runs started together on one
    OUT (one per seed, as the README suggests for two cores) both get complete, identical stores."""
    real = make_seg_store(str(tmp_path / "real.zarr"), n=40, patients=PATIENTS)
    out = tmp_path / "u"
    stores = out / "stores"
    zarr.open_group(str(stores / "val.zarr"), mode="w", zarr_format=3)  # a root and no arrays
    with pytest.raises(StoreError):
        StoreReader(str(stores / "val.zarr"))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (stores / f".train.zarr.{gone.pid}.partial").mkdir()
    urls = prepare_stores(UtilityConfig(real, str(out)))
    assert StoreReader(urls["val"]).attrs.is_complete
    assert not list(stores.glob(".*"))
    shutil.rmtree(stores)
    script = (
        "import sys; from synthgen.evaluation.utility import UtilityConfig, prepare_stores; "
        "prepare_stores(UtilityConfig(sys.argv[1], sys.argv[2]))"
    )
    runs = [subprocess.Popen([sys.executable, "-c", script, real, str(out)]) for _ in range(2)]
    assert [r.wait(timeout=120) for r in runs] == [0, 0]
    assert sorted(p.name for p in stores.iterdir()) == sorted(f"{k}.zarr" for k in urls)
    source = StoreReader(real).read_block(0, 40)[1]
    splits = patient_splits(StoreReader(real), UtilityConfig(real, str(out)))
    for name, url in urls.items():
        copy = StoreReader(url)
        assert copy.attrs.is_complete
        np.testing.assert_array_equal(copy.read_block(0, copy.layout.n)[1], source[splits[name]])


def test_utility_table_real_arms_and_resume(tmp_path):
    real = make_seg_store(str(tmp_path / "real.zarr"), n=40, patients=PATIENTS)
    train = tiny_train_config("", "", "", steps=2, val_every=2, batch_size=4)
    cfg = UtilityConfig(real, str(tmp_path / "u"), seeds=(0,), train=train)
    table, _ = run_utility(cfg, progress=False)
    assert table.splitlines()[0].startswith("| arm | augmentation | real train samples | lv_cavity Dice")
    rows = [[c.strip() for c in line.split("|")[1:3]] for line in table.splitlines()[2:5]]
    level = train.augment.__class__.__name__
    expected = {"NoneType": "none", "AugmentConfig": "light", "StrongAugment": "strong"}[level]
    assert rows == [["real", expected], ["real10", expected], ["real25", expected]]
    assert json.loads((tmp_path / "u" / "utility.json").read_text())["arms"]["real"]["0"]["n"] == 4
    weights = tmp_path / "u" / "arms" / "real" / "seed0" / "best" / "segmenter.safetensors"
    stamp = weights.stat().st_mtime_ns
    run_utility(cfg, progress=False)  # everything done: nothing retrains
    assert weights.stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_utility_splits_of_real_camus(tmp_path):
    from helpers.data import real_data

    from synthgen.storage.ingestion import IngestConfig, ingest

    url = str(tmp_path / "camus.zarr")
    ingest(IngestConfig(source=str(real_data("camus")), out=url, limit=240))
    reader = StoreReader(url)
    splits = patient_splits(reader, UtilityConfig(url, str(tmp_path / "u")))
    patients = store_patients(reader)
    assert set(patients[splits["test"]].tolist()) == {p for p in patients.tolist() if p % 10 == 0} != set()
    assert len(splits["test"]) + len(splits["val"]) + len(splits["train"]) == reader.num_available
    assert set(splits["train10"]) <= set(splits["train25"]) <= set(splits["train"])


def test_utility_cli_errors(tmp_path):
    real = make_seg_store(str(tmp_path / "real.zarr"), n=8, patients=PATIENTS[:8])
    result = CliRunner().invoke(
        cli, ["evaluate", "utility", real, str(tmp_path / "u"), "--arms", "synthetic"]
    )
    assert result.exit_code == 1 and "Expected --synth for arms ['synthetic']" in result.output
    result = CliRunner().invoke(cli, ["evaluate", "utility", real, str(tmp_path / "u"), "--arms", "realx"])
    assert result.exit_code == 1 and "Expected arms from" in result.output
    no_test = make_seg_store(str(tmp_path / "no_test.zarr"), n=8, patients=np.array([1, 2, 3, 4, 5, 6, 7, 8]))
    result = CliRunner().invoke(cli, ["evaluate", "utility", no_test, str(tmp_path / "u2"), "--arms", "real"])
    assert result.exit_code == 1 and "Expected test patients (number % 10 == 0)" in result.output
    assert "none among its 8 patients (1 to 8)" in result.output and not (tmp_path / "u2" / "arms").exists()
