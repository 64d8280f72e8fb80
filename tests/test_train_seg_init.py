"""train-seg strategies: --init (fine-tuning from a checkpoint, refused when it does not fit, recorded so
that evaluation knows what the init saw) and --synth-share-schedule (the synthetic share of each batch
follows the schedule, drawn from the seed)."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers.seg import make_seg_store, tiny_train_config

from synthgen.cli import cli
from synthgen.errors import ConfigError
from synthgen.models.segmenters import load_segmenter
from synthgen.schemas import ACDC
from synthgen.storage import LoaderConfig
from synthgen.storage.splits import RunSplits
from synthgen.trainers.segmenter import SegTrainConfig, plan_splits, train_seg, training_stream

pytestmark = pytest.mark.usefixtures("torch_one_thread")

PATIENTS = np.repeat(np.arange(1, 21), 2)  # 20 patients, 2 samples each; 10, 20 test; 5, 15 validation
TINY = [
    *("--arch", "unet", "--width", "4", "--depth", "2", "--image-size", "32", "32"),
    *("--batch-size", "4", "--lr", "0.03", "--device", "cpu", "--no-progress", "--no-augment"),
]


def train_cli(train, out, *extra, steps=4):
    result = CliRunner().invoke(
        cli, ["train-seg", train, str(out), *TINY, "--steps", str(steps), "--val-every", str(steps), *extra]
    )
    return result


@pytest.fixture
def real(tmp_path):
    return make_seg_store(str(tmp_path / "real.zarr"), n=40, patients=PATIENTS)


@pytest.fixture
def synth(tmp_path):
    return make_seg_store(str(tmp_path / "synth.zarr"), n=64, seed=5, synthetic=True)


def weights(folder):
    model, _ = load_segmenter(folder)
    return {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}


def test_init_starts_from_the_checkpoint_weights(real, tmp_path):
    val = make_seg_store(str(tmp_path / "val.zarr"), n=8, seed=1)
    first = train_seg(tiny_train_config(real, val, str(tmp_path / "a"), steps=8), progress=False)
    # a learning rate too small to move anything: the fine-tuned weights are the init's
    tuned_cfg = tiny_train_config(
        real, val, str(tmp_path / "b"), steps=1, val_every=1, lr=1e-12, init=str(tmp_path / "a"), seed=3
    )
    train_seg(tuned_cfg, progress=False)
    fresh_cfg = tiny_train_config(real, val, str(tmp_path / "c"), steps=1, val_every=1, lr=1e-12, seed=3)
    train_seg(fresh_cfg, progress=False)
    init, tuned, fresh = (
        weights(first.best),
        weights(tmp_path / "b" / "best"),
        weights(tmp_path / "c" / "best"),
    )
    convs = [k for k in init if k.endswith("weight") and init[k].dim() == 4]
    assert convs
    for k in convs:
        torch.testing.assert_close(tuned[k], init[k], atol=1e-6, rtol=0)
    assert max(float((fresh[k] - init[k]).abs().max()) for k in convs) > 0.05
    # the spec records where it started, and the config round-trips
    _, spec = load_segmenter(tmp_path / "b" / "best")
    assert spec.train_config["init"] == str(tmp_path / "a")
    assert SegTrainConfig.from_dict(spec.train_config) == tuned_cfg


def test_init_is_recorded_and_evaluation_counts_what_the_init_saw(real, tmp_path):
    other = make_seg_store(str(tmp_path / "other.zarr"), n=40, seed=4, patients=PATIENTS + 100)
    assert train_cli(real, tmp_path / "pre").exit_code == 0
    result = train_cli(other, tmp_path / "tuned", "--init", str(tmp_path / "pre" / "best"))
    assert result.exit_code == 0, result.output
    assert f"Started from the segmenter {tmp_path / 'pre' / 'best'}." in result.stdout
    record = RunSplits.read(tmp_path / "tuned" / "best", {})
    pre = RunSplits.read(tmp_path / "pre" / "best", {})
    assert [s.url for s in record.train] == [other]
    assert [(s.url, s.split) for s in record.init] == [(real, "train"), (real, "val")]
    np.testing.assert_array_equal(record.init[0].indices, pre.train[0].indices)
    assert json.loads((tmp_path / "tuned" / "best" / "splits.json").read_text())["init"]

    # the fine-tuned segmenter never read `real`, but its init trained on its train patients
    seen = CliRunner().invoke(cli, ["evaluate", "seg", str(tmp_path / "tuned" / "best"), real])
    assert seen.exit_code == 0, seen.output
    assert "36 of the 40 evaluated samples" in seen.stderr and "trained on 36 samples" in seen.stderr
    held_out = CliRunner().invoke(
        cli, ["evaluate", "seg", str(tmp_path / "tuned" / "best"), real, "--split", "test", "--strict"]
    )
    assert held_out.exit_code == 0 and "warning" not in held_out.output
    # a chain: starting from the fine-tuned one carries both generations
    assert train_cli(other, tmp_path / "again", "--init", str(tmp_path / "tuned")).exit_code == 0
    chain = RunSplits.read(tmp_path / "again" / "best", {})
    assert {s.url for s in chain.init} == {real, other} and len(chain.init) == 4


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (
            "architecture",
            "architecture {'arch': 'unet', 'width': 4, 'depth': 2} (this run: {'arch': 'unet', ",
        ),
        ("schema", "schema [('lv_cavity', 1)"),
        ("missing", "Expected a segmenter checkpoint folder with segmenter.json"),
    ],
)
def test_init_that_does_not_fit_is_refused_in_one_line(real, tmp_path, case, message):
    assert train_cli(real, tmp_path / "pre").exit_code == 0
    init, train, extra = str(tmp_path / "pre"), real, []
    if case == "architecture":
        extra = ["--width", "8"]
    elif case == "schema":
        train = make_seg_store(str(tmp_path / "acdc.zarr"), n=40, schema=ACDC, patients=PATIENTS)
    else:
        init = str(tmp_path / "nothing")
    result = train_cli(train, tmp_path / "tuned", "--init", init, *extra)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith("synthgen: error: Expected ") and message in lines[0], lines[0]
    assert not (tmp_path / "tuned" / "best").exists()


def served_stores(cfg: SegTrainConfig, steps: int) -> list[np.ndarray]:
    """The store of every sample of the first ``steps`` training batches, walked as train_seg walks them."""
    splits, _ = plan_splits(cfg)
    loader_cfg = LoaderConfig(cfg.batch_size, cfg.block_size, cfg.window, seed=cfg.seed, drop_last=True)
    stream = training_stream(cfg, splits, loader_cfg)
    out, epoch = [], 0
    while len(out) < steps:
        stream.set_epoch(epoch)
        out += [b["store"].numpy() for b in stream][: steps - len(out)]
        epoch += 1
    return out


def test_the_synthetic_share_follows_the_schedule_and_the_seed(real, synth, tmp_path):
    steps = 60
    cfg = tiny_train_config(f"{real}:0.5,{synth}:0.5", "", "", batch_size=32, steps=steps)
    cfg = SegTrainConfig.from_dict(cfg.to_dict() | {"synth_share_schedule": [0.9, 0.1]})
    stores = served_stores(cfg, steps)
    share = np.array([np.mean(s == 1) for s in stores])  # store 1 of the mix is the synthetic one
    expected = 0.9 - 0.8 * np.arange(steps) / (steps - 1)
    slope = np.polyfit(np.arange(steps), share, 1)[0]
    assert slope == pytest.approx(-0.8 / (steps - 1), rel=0.25)
    for part in np.array_split(np.arange(steps), 4):  # each quarter of training, 480 samples
        assert abs(share[part].mean() - expected[part].mean()) < 0.07
    # the same seed draws the same batches; another seed others
    assert all(np.array_equal(a, b) for a, b in zip(stores, served_stores(cfg, steps), strict=True))
    other = served_stores(SegTrainConfig.from_dict(cfg.to_dict() | {"seed": 1}), steps)
    assert not all(np.array_equal(a, b) for a, b in zip(stores, other, strict=True))
    # without the schedule the mix's fixed half and half holds from start to end
    fixed = np.array(
        [np.mean(s == 1) for s in served_stores(tiny_train_config(cfg.train, "", "", batch_size=32), 40)]
    )
    assert abs(fixed[:20].mean() - 0.5) < 0.08 and abs(fixed[20:].mean() - 0.5) < 0.08


def test_schedule_through_the_cli_is_recorded_and_needs_a_real_and_synthetic_mix(real, synth, tmp_path):
    result = train_cli(f"{real}:0.5,{synth}:0.5", tmp_path / "mix", "--synth-share-schedule", "1:0")
    assert result.exit_code == 0, result.output
    _, spec = load_segmenter(tmp_path / "mix" / "best")
    assert spec.train_config["synth_share_schedule"] == [1.0, 0.0]
    refused = train_cli(real, tmp_path / "real", "--synth-share-schedule", "0.5:0.1")
    assert refused.exit_code == 1 and "Expected a mix of real and synthetic" in refused.stderr
    bad = train_cli(f"{real}:0.5,{synth}:0.5", tmp_path / "bad", "--synth-share-schedule", "0.5")
    assert bad.exit_code == 2 and "Expected START:END" in bad.output
    with pytest.raises(ConfigError, match=r"START:END with both in \[0, 1\]"):
        tiny_train_config(real, "", "", synth_share_schedule=(0.5, 1.5))
