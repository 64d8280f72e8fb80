"""train-seg on tiny stores: the loss falls, the best checkpoint is saved and reloads, logs, errors."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers.seg import TINY_MODEL, make_seg_store, tiny_train_config

from synthgen.cli import cli
from synthgen.errors import CheckpointError, ConfigError, SchemaError
from synthgen.models.segmenters import (
    SegmenterSpec,
    SegModelConfig,
    build_segmenter,
    load_segmenter,
)
from synthgen.schemas import ACDC, CAMUS
from synthgen.trainers.augment import AugmentParams, SegAugment, apply, sample_params
from synthgen.trainers.segmenter import (
    SegTrainConfig,
    load_eval_set,
    lr_at,
    seg_loss,
    train_seg,
    validate,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture
def stores(tmp_path):
    return (
        make_seg_store(str(tmp_path / "train.zarr"), n=32, seed=0),
        make_seg_store(str(tmp_path / "val.zarr"), n=12, seed=1),
    )


def test_training_reduces_the_loss_and_keeps_the_best_checkpoint(stores, tmp_path):
    cfg = tiny_train_config(*stores, str(tmp_path / "run"))
    result = train_seg(cfg, progress=False)
    rows = json.loads((tmp_path / "run" / "log.json").read_text())
    assert [r["step"] for r in rows] == [8, 16, 24]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]
    best_row = max(rows, key=lambda r: r["val_dice_mean"])
    assert result.best_step == best_row["step"]
    for name in ("log.csv", "curves.png", "best/segmenter.safetensors", "last/segmenter.json"):
        assert (tmp_path / "run" / name).is_file()
    assert (tmp_path / "run" / "log.csv").read_text().splitlines()[0].startswith("step,epoch,lr,train_loss")

    # the reloaded best checkpoint scores exactly what was recorded for it
    model, spec = load_segmenter(result.best)
    assert spec.step == result.best_step and spec.model == TINY_MODEL
    assert SegTrainConfig.from_dict(spec.train_config) == cfg
    images, labels = load_eval_set(stores[1], spec.schema, spec.image_size, spec.channels)
    again = validate(model, images, labels, cfg, spec.schema.names)
    assert again["val_dice_mean"] == pytest.approx(spec.metrics["val_dice_mean"], abs=1e-9)
    assert again["val_dice_mean"] >= rows[0]["val_dice_mean"]


def test_training_is_reproducible(stores, tmp_path):
    a = train_seg(tiny_train_config(*stores, str(tmp_path / "a"), steps=8), progress=False)
    b = train_seg(tiny_train_config(*stores, str(tmp_path / "b"), steps=8), progress=False)
    assert a.best_metrics == b.best_metrics


def test_mixing_stores_of_different_sizes(tmp_path, monkeypatch):
    big = make_seg_store(str(tmp_path / "big.zarr"), n=16, size=32)
    small = make_seg_store(str(tmp_path / "small.zarr"), n=16, size=16, seed=2)
    val = make_seg_store(str(tmp_path / "val.zarr"), n=8, size=24, seed=3)
    cfg = tiny_train_config(
        f"{big}:0.5,{small}:0.5",
        val,
        str(tmp_path / "run"),
        image_size=(16, 16),
        steps=4,
        val_every=4,
        augment=SegAugment(),
    )
    import synthgen.trainers.segmenter as segmenter_module

    seen = []

    class RecordingStream(segmenter_module.StoreStream):
        def _collate(self, parts, rng):
            batch = super()._collate(parts, rng)
            seen.append((batch["store"].numpy(), tuple(batch["image"].shape), tuple(batch["label"].shape)))
            return batch

    monkeypatch.setattr(segmenter_module, "StoreStream", RecordingStream)
    result = train_seg(cfg, progress=False)
    assert result.steps == 4 and (result.best / "segmenter.json").is_file()
    # every batch the model trained on was resized to 16 x 16, and both stores fed it at about 1:1
    stores = np.concatenate([s for s, _, _ in seen])
    assert {image[-2:] for _, image, _ in seen} == {(16, 16)} and {label[-2:] for *_, label in seen} == {
        (16, 16)
    }
    assert set(stores.tolist()) == {0, 1} and 0.25 < stores.mean() < 0.75


def test_lite_architecture_and_shapes():
    for arch in ("unet", "lite"):
        model = build_segmenter(SegModelConfig(arch, 4, 3), 1, 4)
        x = torch.rand(2, 1, 16, 24)
        assert model(x).shape == (2, 4, 16, 24)
        assert model.features(x).shape == (2, 16)
    unet = sum(p.numel() for p in build_segmenter(SegModelConfig("unet", 16, 4), 1, 4).parameters())
    lite = sum(p.numel() for p in build_segmenter(SegModelConfig("lite", 16, 4), 1, 4).parameters())
    assert lite * 5 < unet


def test_config_round_trip_and_checks(tmp_path):
    cfg = tiny_train_config("a.zarr:0.3,b.zarr:0.7", "v.zarr", "out", augment=SegAugment(rotation=5))
    assert SegTrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="multiples of 4"):
        tiny_train_config("a", "b", "c", model=SegModelConfig("unet", 4, 3), image_size=(30, 32))
    with pytest.raises(ConfigError, match="unknown keys"):
        SegTrainConfig.from_dict({"train": "a", "val": "b", "out_dir": "c", "epochs": 3})
    with pytest.raises(ConfigError, match="architecture"):
        SegModelConfig("resnet")


def test_augment_keeps_labels_and_is_replayable():
    rng = np.random.default_rng(0)
    images = rng.random((4, 16, 16), dtype=np.float32)
    labels = rng.integers(0, 4, (4, 16, 16)).astype(np.uint8)
    aug = SegAugment()
    params = sample_params(np.random.default_rng(5), 4, aug)
    x1, y1 = apply(images, labels, params)
    x2, y2 = aug(images, labels, np.random.default_rng(5))
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert x1.shape == images.shape and y1.dtype == np.uint8 and set(np.unique(y1)) <= {0, 1, 2, 3}
    assert 0 <= x1.min() and x1.max() <= 1
    x0, y0 = apply(images, labels, AugmentParams.identity(4))
    np.testing.assert_allclose(x0, images, atol=1e-5)
    np.testing.assert_array_equal(y0, labels)


def test_loss_and_schedule():
    target = torch.randint(0, 3, (2, 8, 8))
    perfect = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 20
    assert float(seg_loss(perfect, target, 1.0)) < 0.01
    assert float(seg_loss(-perfect, target, 1.0)) > 1.0
    assert lr_at(0, 1.0, 100) == 1.0 and lr_at(100, 1.0, 100) == 0.0 and 0 < lr_at(50, 1.0, 100) < 1


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="Expected a segmenter checkpoint folder"):
        load_segmenter(tmp_path)
    (tmp_path / "segmenter.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match="Expected a synthgen segmenter spec"):
        load_segmenter(tmp_path)
    spec = SegmenterSpec(TINY_MODEL, (32, 32), 1, ACDC)
    assert SegmenterSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def run_cli(args):
    return CliRunner().invoke(cli, args)


def test_cli_trains_and_reports(stores, tmp_path):
    out = tmp_path / "cli"
    args = [
        "train-seg",
        stores[0],
        str(out),
        "--val",
        stores[1],
        "--arch",
        "lite",
        "--width",
        "4",
        "--depth",
        "2",
        "--image-size",
        "32",
        "32",
        "--steps",
        "4",
        "--val-every",
        "2",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--no-progress",
        "--no-augment",
    ]
    result = run_cli(args)
    assert result.exit_code == 0, result.output
    assert "best validation mean Dice" in result.output and (out / "best" / "segmenter.json").is_file()
    again = run_cli(args)
    assert again.exit_code == 1 and "already holds a segmenter" in again.output


def test_cli_errors_are_one_clear_line(stores, tmp_path):
    acdc_val = make_seg_store(str(tmp_path / "acdc.zarr"), n=8, schema=ACDC)
    cases = [
        ([str(tmp_path / "missing.zarr"), str(tmp_path / "o1"), "--val", stores[1]], "No Zarr store at"),
        (
            [stores[0], str(tmp_path / "o2"), "--val", str(tmp_path / "nothing.zarr")],
            "No validation store at",
        ),
        ([stores[0], str(tmp_path / "o3"), "--val", acdc_val], "Expected the validation store"),
        ([stores[0], str(tmp_path / "o4"), "--val", stores[1], "--image-size", "30", "30"], "multiples of 8"),
    ]
    for args, message in cases:
        result = run_cli(["train-seg", *args, "--steps", "2", "--no-progress", "--device", "cpu"])
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("synthgen: error: ") and message in lines[0], lines
    with pytest.raises(SchemaError, match="acdc"):
        load_eval_set(acdc_val, CAMUS, (32, 32), 1)
