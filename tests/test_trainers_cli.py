"""`synthgen train-gan` on a tiny store: trains, resumes, and turns bad input into one-line errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from helpers.gan import make_store

from synthgen.cli import cli

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = ["--image-size", "16", "--batch-size", "2", "--width", "4", "--max-width", "8", "--depth", "2"]


def _run(*args):
    return CliRunner().invoke(cli, ["train-gan", *map(str, args)])


def test_train_gan_runs_and_resumes(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    out = tmp_path / "run"
    result = _run(store, out, "--arch", "pix2pix", "--steps", "2", *TINY, "--no-progress", "--split", "train")
    assert result.exit_code == 0, result.output
    assert "Trained pix2pix to step 2" in result.output
    spec = json.loads((out / "checkpoint" / "generator.json").read_text())
    assert spec["label_schema"]["name"] == "camus" and spec["image_size"] == 16 and spec["split"] == "train"
    assert spec["model"]["width"] == 4
    result = _run(store, out, "--resume", "--steps", "3", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "to step 3" in result.output
    assert json.loads((out / "checkpoint" / "generator.json").read_text())["step"] == 3


def test_train_gan_config_file(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    config = {
        "steps": 1,
        "image_size": 16,
        "model": {"arch": "spade", "width": 4, "max_width": 8, "depth": 2},
    }
    (tmp_path / "cfg.json").write_text(json.dumps(config))
    result = _run(
        store, tmp_path / "run", "--config", tmp_path / "cfg.json", "--style-dim", "3", "--no-progress"
    )
    assert result.exit_code == 0, result.output
    spec = json.loads((tmp_path / "run" / "checkpoint" / "generator.json").read_text())
    assert (spec["arch"], spec["style_dim"], spec["model"]["depth"]) == ("spade", 3, 2)


def test_train_gan_errors_are_one_line(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    result = _run(store, tmp_path / "a", "--arch", "pix2pix", "--style-encoder", *TINY)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "synthgen: error: Unknown key(s) ['style_encoder'] in the pix2pix config. Expected only "
        "['arch', 'depth', 'disc_layers', 'disc_scales', 'disc_width', 'lambda_fm', 'lambda_kld', 'lambda_l1', "
        "'lambda_latent', 'max_width', 'norm', 'spectral_norm', 'style_dim', 'width']."
    ]
    result = _run(store, tmp_path / "a2", "--arch", "pix2pix", "--style-dim", "-2", *TINY)
    assert result.exit_code == 1 and "Expected pix2pix style_dim >= 0. Got -2" in result.output
    result = _run(store, tmp_path / "a3", "--arch", "pix2pix", "--disc-scales", "0", *TINY)
    assert result.exit_code == 1 and "Expected pix2pix disc_scales >= 1. Got 0" in result.output
    result = _run(store, tmp_path / "a4", "--arch", "cyclegan", "--lambda-fm", "1", *TINY)
    assert result.exit_code == 1 and "'lambda_fm', 'max_width'] in the CycleGAN config" in result.output
    result = _run(store, tmp_path / "b", "--resume")
    assert result.exit_code == 1 and "Expected a checkpoint to resume" in result.output
    result = _run(tmp_path / "missing.zarr", tmp_path / "c", *TINY)
    assert result.exit_code == 1 and "No Zarr store" in result.output
    result = _run(store, tmp_path / "d", "--image-size", "20", "--depth", "4")
    assert result.exit_code == 1 and "divisible by 2**depth = 16" in result.output
