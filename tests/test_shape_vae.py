"""Shape VAE: configs, loss going down, exact resume, gated samples with counted reasons, checkpoints,
the train-shape command and the ``vae`` label source. Tiny CPU runs at 16 x 16."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers.data import disc_labels

from synthgen.cli import cli
from synthgen.errors import CheckpointError, ConfigError
from synthgen.models.layers import onehot
from synthgen.models.shape_vae import (
    SHAPE_VAE_JSON,
    ShapeVae,
    ShapeVaeConfig,
    fit_prior,
    init_vae,
    load_vae,
    sample_labels,
    vae_loss,
)
from synthgen.schemas import CAMUS
from synthgen.schemas.store_layout import Intensity, MetaField, StoreAttrs, StoreLayout
from synthgen.sources.gate import decode_flags
from synthgen.sources.label_sources import (
    VaeSource,
    VaeSourceConfig,
    gate_samples,
    source_config_from_dict,
    source_from_config,
)
from synthgen.storage.store import StoreReader, StoreWriter
from synthgen.trainers.data import TrainingStream
from synthgen.trainers.runs import seeded
from synthgen.trainers.shape import ShapeTrainConfig, kl_at, train_shape
from synthgen.trainers.train_state import STATE_WEIGHTS

TINY = ShapeVaeConfig(image_size=16, latent_dim=4, width=4, max_width=8, depth=2)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def make_store(path, n: int = 12, size: int = 32) -> str:
    """Disc label maps (CAMUS schema) and flat images, patients 1..n; the last map is empty."""
    labels = disc_labels(n, size, size, seed=3)
    labels[-1] = 0
    layout = StoreLayout(n, (size, size), "uint8", 8, meta=(MetaField("patient", "int32"),))
    writer = StoreWriter.create(str(path), StoreAttrs(layout, CAMUS, Intensity.for_dtype("uint8")))
    for k in range(layout.num_shards):
        a, b = layout.shard_bounds(k)
        patients = {"patient": np.arange(a + 1, b + 1, dtype=np.int32)}
        writer.write_shard(k, labels[a:b] * 60, labels[a:b], patients)
    writer.mark_complete(range(layout.num_shards))
    return str(path)


@pytest.fixture
def store(tmp_path) -> str:
    return make_store(tmp_path / "tiny.zarr")


def tiny_config(store: str, out, **changes) -> ShapeTrainConfig:
    base = {
        "batch_size": 4,
        "steps": 3,
        "log_every": 1,
        "sample_every": 2,
        "checkpoint_every": 2,
        "gate_samples": 10,
    }
    return ShapeTrainConfig(store, str(out), TINY, **base | changes)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny VAE trained for 25 steps."""
    root = tmp_path_factory.mktemp("vae")
    store = make_store(root / "s.zarr")
    cfg = tiny_config(store, root / "run", steps=25, lr=3e-3, kl_anneal_steps=10, checkpoint_every=25)
    return train_shape(cfg, progress=False), store


# -- configs ------------------------------------------------------------------------------------
def test_config_round_trip_and_kl_schedule(tmp_path):
    cfg = tiny_config("s.zarr", tmp_path, kl_weight=0.5, split="train")
    assert ShapeTrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert [kl_at(s, 2.0, 4) for s in (0, 1, 3, 9)] == [0.5, 1.0, 2.0, 2.0]
    assert kl_at(0, 2.0, 0) == 2.0


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"model": {"image_size": 24, "depth": 4}}, "Expected an image size divisible by 2\\*\\*depth = 16"),
        ({"model": {"latnet_dim": 4}}, r"Unknown key\(s\) \['latnet_dim'\]"),
        ({"kl_weight": -1.0}, "Expected the KL weight >= 0.0"),
        ({"split": "val"}, "Expected a split in"),
        ({"gate_samples": 0}, "gate samples"),
    ],
)
def test_bad_configs_are_clear_errors(data, match):
    with pytest.raises(ConfigError, match=match):
        ShapeTrainConfig.from_dict({"store": "s", "out_dir": "o"} | data)


# -- model and training -------------------------------------------------------------------------
def test_labels_are_read_resized_and_empty_maps_dropped(store):
    data = TrainingStream(StoreReader(store), 16, "all", 4, seed=0, foreground_only=True)
    maps = torch.cat(list(data.class_maps(batch_size=4)))
    assert maps.shape == (11, 16, 16) and maps.dtype == torch.uint8
    assert set(torch.unique(maps).tolist()) == {0, 1, 2, 3}
    assert (maps.flatten(1) > 0).any(1).all()
    batch = next(data.batches())
    assert batch.labels.shape == (4, 4, 16, 16) and (batch.labels[:, 1:].flatten(1) > 0).any(1).all()
    train = TrainingStream(StoreReader(store), 16, "train", 4, seed=0, foreground_only=True)
    assert len(train) == 10  # patient 10 held out


def test_loss_goes_down_on_a_fixed_batch():
    model = ShapeVae(TINY, 4)
    init_vae(model, seeded(0, 0))
    x = onehot(torch.from_numpy(disc_labels(8, 16, 16)), 4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    eps, seen = torch.zeros(8, TINY.latent_dim), []
    for _ in range(30):
        loss, logs = vae_loss(model, x, eps, kl_weight=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen.append(logs["recon_ce"])
    assert np.mean(seen[-5:]) < 0.5 * np.mean(seen[:5]), seen


def test_decoding_alone_equals_decoding_in_a_batch():
    model = ShapeVae(TINY, 4).eval()
    init_vae(model, seeded(0, 0))
    z = torch.randn(5, TINY.latent_dim, generator=seeded(0, 1))
    with torch.no_grad():
        batch = model.decode(z)
        torch.testing.assert_close(model.decode(z[2:3]), batch[2:3])


def test_fit_prior_matches_the_aggregate_posterior():
    model = ShapeVae(TINY, 4).eval()
    init_vae(model, seeded(0, 0))
    maps = torch.from_numpy(disc_labels(9, 16, 16, seed=4))
    eps = torch.randn(3, TINY.latent_dim, generator=seeded(0, 1))
    torch.testing.assert_close(model.latent(eps), eps)  # N(0, I) before fitting
    fit_prior(model, maps.split(4))
    with torch.no_grad():
        mu, logvar = model.encode(onehot(maps, 4))
    cov = np.cov(mu.double().numpy().T) + np.diag(logvar.double().exp().numpy().mean(0))
    np.testing.assert_allclose(model.prior_mean.numpy(), mu.numpy().mean(0), atol=1e-5)
    chol = model.prior_chol.double().numpy()
    np.testing.assert_allclose(chol @ chol.T, cov, atol=1e-4)
    torch.testing.assert_close(model.latent(eps), model.prior_mean + eps @ model.prior_chol.T)


def test_resume_is_exact_and_run_leaves_logs(store, tmp_path):
    from safetensors.torch import load_file

    straight = train_shape(tiny_config(store, tmp_path / "a"), progress=False)
    train_shape(tiny_config(store, tmp_path / "b", steps=2), progress=False)
    resumed = train_shape(tiny_config(store, tmp_path / "b"), resume=True, progress=False)
    a, b = (
        load_file(str(straight.checkpoint / STATE_WEIGHTS)),
        load_file(str(resumed.checkpoint / STATE_WEIGHTS)),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(x) for x in (tmp_path / "b" / "losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert {"recon_ce", "kl", "kl_weight", "pixel_accuracy"} <= rows[0].keys() and "gate_pass_rate" in rows[1]
    assert sorted(p.name for p in (tmp_path / "a" / "samples").iterdir()) == [
        "step_0000002.png",
        "step_0000003.png",
    ]
    assert (tmp_path / "a" / "losses.png").is_file()
    spec = json.loads((straight.checkpoint / SHAPE_VAE_JSON).read_text())
    assert spec["step"] == 3 and spec["gate"]["checked"] == 10 and spec["label_schema"]["name"] == "camus"


def test_resume_guards(store, tmp_path):
    cfg = tiny_config(store, tmp_path / "run", steps=1)
    with pytest.raises(CheckpointError, match="Expected a checkpoint to resume"):
        train_shape(cfg, resume=True, progress=False)
    train_shape(cfg, progress=False)
    with pytest.raises(ConfigError, match="already holds a checkpoint"):
        train_shape(cfg, progress=False)
    with pytest.raises(ConfigError, match=r"Got different \['lr'\]"):
        train_shape(cfg.replace(lr=0.5, steps=2), resume=True, progress=False)
    other = make_store(tmp_path / "other.zarr", n=10)
    with pytest.raises(CheckpointError, match="Expected the training store the checkpoint was trained on"):
        train_shape(cfg.replace(store=other, steps=2), resume=True, progress=False)


# -- sampling and the gate ----------------------------------------------------------------------
def test_samples_go_through_the_gate_with_counted_reasons(trained):
    result, _ = trained
    model, spec = load_vae(result.checkpoint)
    labels, passed, report = gate_samples(model, spec.schema, 64, seeded(1, 0))
    assert labels.shape == (64, 16, 16) and labels.dtype == np.uint8
    assert set(np.unique(labels).tolist()) <= {0, *CAMUS.values}
    assert report.checked == 64 and report.passed == int(passed.sum())
    assert np.isin(labels, CAMUS.values).mean() > 0.1  # maps with anatomy, not background only
    np.testing.assert_array_equal(labels, sample_labels(model, spec.schema, 64, seeded(1, 0)))
    from synthgen.sources.gate import check_batch

    _, flags = check_batch(labels, CAMUS)
    counted = {}
    for f in flags:
        for code in decode_flags(int(f), CAMUS):
            counted[code] = counted.get(code, 0) + 1
    assert report.counts() == counted
    assert result.gate.checked == 10 and spec.gate == result.gate.to_dict()


def test_checkpoint_errors_are_clear(trained, tmp_path):
    result, _ = trained
    with pytest.raises(CheckpointError, match="Expected a shape VAE checkpoint folder"):
        load_vae(tmp_path / "nothing")
    bad = tmp_path / "bad"
    bad.mkdir()
    spec = json.loads((result.checkpoint / SHAPE_VAE_JSON).read_text())
    (bad / SHAPE_VAE_JSON).write_text(json.dumps(spec | {"model": spec["model"] | {"width": 8}}))
    (bad / "shape_vae.safetensors").write_bytes((result.checkpoint / "shape_vae.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="do not fit the architecture"):
        load_vae(bad)
    (bad / SHAPE_VAE_JSON).write_text(json.dumps(spec | {"format_version": 9}))
    with pytest.raises(CheckpointError, match="Expected shape VAE format version 1"):
        load_vae(bad)


# -- the label source ---------------------------------------------------------------------------
def test_vae_label_source_draws_replayable_maps(trained):
    result, _ = trained
    config = source_config_from_dict({"kind": "vae", "url": str(result.checkpoint)})
    assert config == VaeSourceConfig(str(result.checkpoint)) and config.to_dict()["kind"] == "vae"
    assert source_config_from_dict(config.to_dict()) == config
    source = source_from_config(config, (24, 24))
    assert isinstance(source, VaeSource) and source.schema == CAMUS and source.params_size == 4
    labels, index, z = source.draw(np.random.default_rng(7))
    again, _, z2 = source.draw(np.random.default_rng(7))
    assert labels.shape == (24, 24) and labels.dtype == np.uint8 and index == -1
    np.testing.assert_array_equal(labels, again)
    np.testing.assert_array_equal(z, z2)
    assert "_cache" not in pickle.loads(pickle.dumps(source)).__dict__
    batch = source.draw_batch(0, [3, 4, 3])
    np.testing.assert_array_equal(batch.labels[0], batch.labels[2])
    assert batch.params.shape == (3, 4)
    with pytest.raises(ConfigError, match="Got both"):
        source_config_from_dict({"kind": "vae", "url": "a", "checkpoint": "b"})


# -- CLI ----------------------------------------------------------------------------------------
def test_train_shape_cli(store, tmp_path):
    args = [
        "train-shape",
        store,
        str(tmp_path / "run"),
        "--steps",
        "2",
        "--image-size",
        "16",
        "--latent-dim",
        "4",
    ]
    args += ["--width", "4", "--depth", "2", "--batch-size", "4", "--gate-samples", "8", "--no-progress"]
    run = CliRunner().invoke(cli, args)
    assert run.exit_code == 0, run.output
    assert (
        "Trained the shape VAE to step 2" in run.output and "of 8 sampled maps passed the gate" in run.output
    )
    resumed = CliRunner().invoke(
        cli, ["train-shape", store, str(tmp_path / "run"), "--resume", "--steps", "3", "--no-progress"]
    )
    assert resumed.exit_code == 0, resumed.output
    assert "to step 3" in resumed.output
    bad = CliRunner().invoke(cli, ["train-shape", store, str(tmp_path / "bad"), "--image-size", "20"])
    assert bad.exit_code == 1
    assert bad.output.strip().splitlines()[-1].startswith("synthgen: error: Expected an image size divisible")
