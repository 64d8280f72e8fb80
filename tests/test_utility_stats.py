"""The usefulness statistics (bootstrap intervals over seeds and images, paired differences, shift drops),
the acquisition shifts, and evaluate utility with seeds through the CLI: files, resumption, shifts."""

import dataclasses
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.seg import make_seg_store
from PIL import Image

import synthgen.evaluation.utility as utility_module
from synthgen.cli import cli
from synthgen.errors import ConfigError
from synthgen.evaluation.shift import NEUTRAL, AcquisitionShift, shifts_for, store_modality
from synthgen.evaluation.utility_report import utility_plot, utility_table
from synthgen.evaluation.utility_stats import bootstrap_mean, draw_resamples, utility_stats
from synthgen.kernels import appearance

CLASSES = ("a", "b")


def scores(seeds: int, images: int, seed: int = 0, spread: float = 0.1) -> np.ndarray:
    """(seeds, images, 2 classes) Dice-like scores: an image difficulty shared by every seed, plus noise."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, spread, (1, images, 1))
    return np.clip(0.8 + difficulty + rng.normal(0, 0.02, (seeds, images, 2)), 0, 1)


# -- statistics on constructed inputs ---------------------------------------------------------------
def test_interval_contains_the_mean_and_shrinks_with_more_images_and_seeds():
    widths = {}
    for seeds, images in ((1, 10), (3, 10), (3, 100), (3, 1000)):
        v = scores(seeds, images)[..., 0]
        e = bootstrap_mean(v, draw_resamples(seeds, images, 1000))
        assert e.low < e.mean < e.high and e.mean == pytest.approx(v.mean())
        widths[seeds, images] = e.high - e.low
    assert widths[3, 1000] < widths[3, 100] / 2 < widths[3, 10] / 4
    # a seed that scores differently widens the interval: seeds are resampled too
    v = scores(3, 100)[..., 0]
    v[2] += 0.15
    e = bootstrap_mean(v, draw_resamples(3, 100, 1000))
    assert e.high - e.low > 2 * widths[3, 100]


def test_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    hits = 0
    for trial in range(200):
        v = rng.normal(0.7, 0.1, (1, 40))
        e = bootstrap_mean(v, draw_resamples(1, 40, 400, seed=trial))
        hits += e.low <= 0.7 <= e.high
    assert 0.88 <= hits / 200 <= 0.99


def test_paired_difference_of_an_arm_with_itself_is_zero_and_pairing_finds_small_gains():
    real = scores(3, 50)
    better = real + 0.01 + np.random.default_rng(2).normal(0, 0.002, real.shape)
    stats = utility_stats({"real": real, "same": real.copy(), "better": better}, CLASSES, resamples=500)
    same = stats.arms["same"].diff
    for c in (*CLASSES, "mean"):
        assert (same[c].mean, same[c].low, same[c].high) == (0.0, 0.0, 0.0)
    assert stats.arms["real"].diff is None and stats.reference == "real"
    gain = stats.arms["better"].diff["mean"]
    assert gain.mean == pytest.approx(0.01, abs=1e-3) and 0.008 < gain.low < gain.high < 0.012
    # unpaired, the two arms' own intervals overlap: the image difficulty dominates them
    assert stats.arms["better"].dice["mean"].low < stats.arms["real"].dice["mean"].high
    assert stats.arms["real"].dice["a"].mean == pytest.approx(real[..., 0].mean())
    assert stats.arms["real"].dice["mean"].mean == pytest.approx(real.mean())


def test_statistics_are_reproducible_and_need_the_same_seeds_and_images():
    data = {"real": scores(2, 30), "other": scores(2, 30, seed=1)}
    assert utility_stats(data, CLASSES).to_dict() == utility_stats(data, CLASSES).to_dict()
    assert utility_stats(data, CLASSES, seed=1).to_dict() != utility_stats(data, CLASSES).to_dict()
    with pytest.raises(ConfigError, match="same seeds and test images"):
        utility_stats({"real": scores(2, 30), "other": scores(2, 29)}, CLASSES)
    with pytest.raises(ConfigError, match="same seeds and test images"):
        utility_stats({"real": scores(3, 30), "other": scores(2, 30)}, CLASSES)
    no_reference = utility_stats({"other": scores(2, 30)}, CLASSES)
    assert no_reference.reference is None and no_reference.arms["other"].diff is None


def test_shift_drops_and_the_mean_drop_against_the_reference():
    real, robust = scores(2, 40), scores(2, 40, seed=3)
    shifted = {
        "real": {"gamma": real - 0.10, "blur": real - 0.20},
        "robust": {"gamma": robust - 0.02, "blur": robust - 0.04},
    }
    stats = utility_stats({"real": real, "robust": robust}, CLASSES, shifted=shifted, resamples=300)
    assert stats.shifts == ("gamma", "blur")
    r, s = stats.arms["real"], stats.arms["robust"]
    assert r.shifts["gamma"].drop.mean == pytest.approx(0.10) and r.shifts["blur"].drop.mean == pytest.approx(
        0.2
    )
    assert r.shifts["gamma"].drop.low == pytest.approx(0.10) and r.mean_drop.mean == pytest.approx(0.15)
    assert s.mean_drop.mean == pytest.approx(0.03) and s.mean_drop_diff.mean == pytest.approx(-0.12)
    assert r.mean_drop_diff is None
    assert s.shifts["gamma"].dice.mean == pytest.approx((robust - 0.02).mean())
    with pytest.raises(ConfigError, match="under the shifts"):
        utility_stats({"real": real, "robust": robust}, CLASSES, shifted={"real": shifted["real"]})

    meta = {a: {"augment": "strong", "real_train_samples": 10} for a in ("real", "robust")}
    table = utility_table(stats, meta, [0, 1])
    assert (
        "| robust | strong | 10 | " in table
        and "| mean drop [95% CI] | mean drop - real's [95% CI] |" in table
    )
    assert (
        f"{s.mean_drop_diff.mean:+.4f} [{s.mean_drop_diff.low:+.4f}, {s.mean_drop_diff.high:+.4f}]" in table
    )


def test_plot_draws_every_arm(tmp_path):
    stats = utility_stats({"real": scores(2, 20), "other": scores(2, 20, seed=1)}, CLASSES, resamples=100)
    utility_plot(stats, tmp_path / "u.png")
    image = np.asarray(Image.open(tmp_path / "u.png").convert("RGB"))
    assert image.shape[0] > 200 and len(np.unique(image.reshape(-1, 3), axis=0)) > 20  # markers, not blank


# -- acquisition shifts -----------------------------------------------------------------------------
@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    ramp = np.linspace(0.2, 0.8, 48, dtype=np.float32)
    return np.clip(ramp[None, None, None, :] + rng.normal(0, 0.05, (4, 1, 48, 48)), 0, 1).astype(np.float32)


def test_shifts_are_fixed_per_image_whatever_the_batch(images):
    idx = np.array([3, 7, 11, 20])
    for name in shifts_for("mr"):
        shift = AcquisitionShift(name, "mr")
        out = shift(images, idx)
        assert out.shape == images.shape and out.dtype == np.float32 and 0 <= out.min() <= out.max() <= 1
        assert np.abs(out - images).mean() > 0.01, name  # it changes the images
        np.testing.assert_array_equal(out, shift(images, idx))  # every arm sees these images
        np.testing.assert_array_equal(out[2:3], shift(images[2:3], idx[2:3]))  # batch does not matter
    bias = AcquisitionShift("bias", "mr")
    a, b = bias(images[:1], idx[:1]), bias(images[:1], idx[1:2])  # the same image as another sample
    assert np.abs(a - b).mean() > 1e-3  # each image its own field
    other_seed = AcquisitionShift("bias", "mr", seed=1)(images[:1], idx[:1])
    assert np.abs(a - other_seed).mean() > 1e-3
    np.testing.assert_allclose(AcquisitionShift("inversion", "mr")(images, idx), 1 - images)
    np.testing.assert_allclose(AcquisitionShift("gamma", "ct")(images, idx), images**1.6, atol=2e-3)


def test_the_neutral_appearance_leaves_images_as_they_are(images):
    flat = images[:, 0]
    for modality in ("echo", "mr", "ct"):
        config = dataclasses.replace(NEUTRAL, modality=modality)
        out, _ = appearance(
            np.zeros(flat.shape, np.uint8),
            np.arange(4, dtype=np.uint64),
            np.asarray(config.ranges()),
            num_classes=1,
            modality=modality,
            texture=False,
            sector=False,
            base=flat,
        )
        np.testing.assert_allclose(out, flat, atol=2e-3)


def test_shift_choices_follow_the_modality():
    assert "inversion" in shifts_for("mr") and "inversion" not in shifts_for("echo")
    assert store_modality("camus") == "echo" and store_modality("acdc") == "mr"
    assert store_modality("camus", "ct") == "ct"
    with pytest.raises(ConfigError, match="Expected a shift in"):
        AcquisitionShift("inversion", "echo")
    with pytest.raises(ConfigError, match="--modality"):
        store_modality("myschema")


# -- evaluate utility through the CLI -----------------------------------------------------------------
PATIENTS = np.repeat(np.arange(1, 21), 2)  # 20 patients, 2 samples each; 10, 20 test
TINY = [
    *("--arch", "unet", "--width", "4", "--depth", "2", "--image-size", "32", "32", "--batch-size", "4"),
    *("--lr", "0.03", "--steps", "2", "--val-every", "2", "--no-augment", "--no-progress", "--threads", "1"),
]


@pytest.fixture
def stores(tmp_path):
    real = make_seg_store(str(tmp_path / "real.zarr"), n=40, patients=PATIENTS)
    return real, make_seg_store(str(tmp_path / "synth.zarr"), n=16, seed=5, synthetic=True)


@pytest.fixture
def count_training(monkeypatch):
    """The (arm folder, seed) of every segmenter evaluate utility trains; ``fail_after`` stops the run
    there as a kill would (nothing after it is written)."""
    trained, limit = [], {"fail_after": None}

    def counting(cfg, **kwargs):
        if limit["fail_after"] is not None and len(trained) >= limit["fail_after"]:
            raise KeyboardInterrupt
        trained.append(cfg.out_dir.split("arms/")[1])
        return real_train_seg(cfg, **kwargs)

    real_train_seg = utility_module.train_seg
    monkeypatch.setattr(utility_module, "train_seg", counting)
    return trained, limit


def utility(real, out, *extra):
    return CliRunner().invoke(cli, ["evaluate", "utility", real, str(out), *TINY, *extra])


def test_utility_with_seeds_resumes_per_arm_and_seed_and_adds_shifts(stores, tmp_path, count_training):
    real, synth = stores
    trained, limit = count_training
    out = tmp_path / "u"
    args = ["--synth", synth, "--arms", "real,real10-finetune", "--seeds", "2"]
    limit["fail_after"] = 4  # killed while training the 5th of 6 segmenters
    killed = utility(real, out, *args)
    assert killed.exit_code == 130 and "synthgen: error: interrupted" in killed.stderr
    assert trained == ["real/seed0", "synthetic/seed0", "real10-finetune/seed0", "real/seed1"]
    assert not (out / "utility.md").exists()

    limit["fail_after"] = None
    trained.clear()
    result = utility(real, out, *args)
    assert result.exit_code == 0, result.output
    assert trained == ["synthetic/seed1", "real10-finetune/seed1"]  # the rest was reused
    assert "real, seed 0: done before, reused" in result.stderr
    # the fine-tuning arm started from the synthetic arm of its own seed, on the 10% store
    cfg = json.loads((out / "arms" / "real10-finetune" / "seed1" / "result.json").read_text())["train_config"]
    assert cfg["init"] == str(out / "arms" / "synthetic" / "seed1" / "best") and cfg["seed"] == 1
    assert cfg["train"].endswith("train10.zarr")

    lines = (out / "utility.md").read_text().splitlines()
    assert lines[0].startswith("| arm | augmentation | real train samples | lv_cavity Dice [95% CI] |")
    rows = {line.split(" | ")[0][2:]: line for line in lines[2:5]}
    assert list(rows) == ["real", "synthetic", "real10-finetune"]
    report = json.loads((out / "utility.json").read_text())
    stats = report["statistics"]
    assert stats["seeds"] == 2 and stats["test_images"] == 4 and stats["reference"] == "real"
    assert stats["arms"]["real"]["diff_vs_reference"] is None
    diff = stats["arms"]["synthetic"]["diff_vs_reference"]["mean"]
    assert f"{diff['mean']:+.4f} [{diff['ci'][0]:+.4f}, {diff['ci'][1]:+.4f}]" in rows["synthetic"]
    assert set(report["arms"]["real10-finetune"]) == {"0", "1"}
    assert (out / "utility.png").stat().st_size > 5000

    # the per-image Dice behind the statistics is what evaluate seg scored for that segmenter
    record = json.loads((out / "arms" / "real" / "seed0" / "result.json").read_text())
    csv_lines = (out / "arms" / "real" / "seed0" / "eval" / "per_sample.csv").read_text().splitlines()
    column = csv_lines[0].split(",").index("lv_cavity_dice")
    assert record["test"]["dice"]["lv_cavity"] == [
        pytest.approx(float(r.split(",")[column])) for r in csv_lines[1:]
    ]

    # --shift later scores the existing segmenters without training any
    trained.clear()
    weights = out / "arms" / "real" / "seed1" / "best" / "segmenter.safetensors"
    stamp = weights.stat().st_mtime_ns
    shifted = utility(real, out, *args, "--shift")
    assert shifted.exit_code == 0, shifted.output
    assert trained == [] and weights.stat().st_mtime_ns == stamp
    stats = json.loads((out / "utility.json").read_text())["statistics"]
    assert stats["shifts"] == ["gamma", "bias", "noise", "blur", "resolution"]  # camus: echo, no inversion
    for arm in ("real", "synthetic", "real10-finetune"):
        entry = stats["arms"][arm]
        assert (
            set(entry["shifts"]) == set(stats["shifts"])
            and entry["mean_drop"]["ci"][0] <= entry["mean_drop"]["mean"]
        )
    assert "| arm | unshifted | gamma | bias | noise | blur | resolution | mean drop" in shifted.stdout
    shift_summary = json.loads(
        (out / "arms" / "real" / "seed0" / "shift" / "gamma" / "summary.json").read_text()
    )
    assert shift_summary["shift"]["name"] == "gamma" and shift_summary["shift"]["level"] == {"gamma": 1.6}

    # a lost result (an arm killed after training, before its result was written) reruns that pair only
    (out / "arms" / "real10-finetune" / "seed0" / "result.json").unlink()
    trained.clear()
    again = utility(real, out, *args, "--shift")
    assert again.exit_code == 0, again.output
    assert trained == ["real10-finetune/seed0"] and weights.stat().st_mtime_ns == stamp
    assert "shift" in json.loads((out / "arms" / "real10-finetune" / "seed0" / "result.json").read_text())


@pytest.mark.slow
def test_utility_resumes_after_kill_9(stores, tmp_path, count_training):
    real, _ = stores
    out = tmp_path / "u"
    args = [real, str(out), *TINY, "--arms", "real,real10", "--seeds", "2"]
    command = [sys.executable, "-m", "synthgen.cli", "evaluate", "utility", *args]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first, deadline = out / "arms" / "real" / "seed0" / "result.json", time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p.parent.relative_to(out / "arms").as_posix() for p in (out / "arms").glob("*/seed*/result.json")}
    every = {"real/seed0", "real10/seed0", "real/seed1", "real10/seed1"}
    assert "real/seed0" in done and done < every  # killed after the first pair, before the last
    trained, _ = count_training
    result = utility(*args[:2], *args[2:])
    assert result.exit_code == 0, result.output
    assert set(trained) == every - done and len(trained) == len(every - done)
    assert json.loads((out / "utility.json").read_text())["statistics"]["seeds"] == 2


def test_shifted_images_are_the_same_for_every_arm(stores, tmp_path, monkeypatch):
    """Every segmenter under a shift is handed the same images (recorded at the shift's output)."""
    real, synth = stores
    seen = {}
    original = AcquisitionShift.__call__

    def recording(self, images, indices):
        out = original(self, images, indices)
        seen.setdefault(self.name, []).append((indices.tolist(), out.copy()))
        return out

    monkeypatch.setattr(AcquisitionShift, "__call__", recording)
    result = utility(
        real, tmp_path / "u", "--synth", synth, "--arms", "real,synthetic", "--seeds", "0,3", "--shift"
    )
    assert result.exit_code == 0, result.output
    for name, calls in seen.items():
        assert len(calls) == 4, name  # two arms, two seeds
        for indices, out in calls[1:]:
            assert indices == calls[0][0]
            np.testing.assert_array_equal(out, calls[0][1])
    assert set(seen) == set(shifts_for("echo"))
    assert sorted(p.name for p in (tmp_path / "u" / "arms" / "synthetic").iterdir()) == ["seed0", "seed3"]


def test_utility_seed_options_and_errors(stores, tmp_path):
    real, _ = stores
    bad = utility(real, tmp_path / "u", "--seeds", "0")
    assert bad.exit_code == 2 and "Expected a count N >= 1 or a list of seeds" in bad.output
    repeated = utility(real, tmp_path / "u", "--seeds", "1,1")
    assert repeated.exit_code == 1 and "Expected distinct non-negative training seeds" in repeated.stderr
    needs = utility(real, tmp_path / "u", "--arms", "real10-finetune")
    assert needs.exit_code == 1 and "Expected --synth for arms ['real10-finetune']" in needs.stderr


def test_evaluate_seg_under_a_shift(stores, tmp_path):
    real, _ = stores
    train = CliRunner().invoke(cli, ["train-seg", real, str(tmp_path / "seg"), *TINY])
    assert train.exit_code == 0, train.output
    ckpt = str(tmp_path / "seg" / "best")
    plain = CliRunner().invoke(
        cli, ["evaluate", "seg", ckpt, real, "--split", "test", "--out", str(tmp_path / "a")]
    )
    inverted = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "seg",
            ckpt,
            real,
            "--split",
            "test",
            "--shift",
            "inversion",
            "--modality",
            "mr",
            "--out",
            str(tmp_path / "b"),
        ],
    )
    assert plain.exit_code == 0 and inverted.exit_code == 0, inverted.output
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["shift"] == {"name": "inversion", "modality": "mr", "seed": 0, "level": {}}
    assert "shift" not in json.loads((tmp_path / "a" / "summary.json").read_text())
    refused = CliRunner().invoke(cli, ["evaluate", "seg", ckpt, real, "--shift", "inversion"])
    assert (
        refused.exit_code == 1
        and "Expected a shift in ('gamma', 'bias', 'noise', 'blur', 'resolution')" in refused.stderr
    )
