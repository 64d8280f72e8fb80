"""GAN trainers: configs, data, losses going down, exact resume, styles, generate(). Tiny CPU runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.data import disc_labels
from helpers.gan import TINY, make_store, tiny_config

from synthgen.errors import CheckpointError, ConfigError, LabelValueError, StoreError, StoreFormatError
from synthgen.inference.backends import open_generator
from synthgen.kernels import from_unit, to_unit
from synthgen.models.layers import init_weights
from synthgen.models.registry import build_gan, default_model_config
from synthgen.models.weights import load_weights, read_tensors
from synthgen.schemas import CAMUS
from synthgen.schemas.generator_spec import DataShape
from synthgen.schemas.store_layout import Intensity, StoreAttrs, StoreLayout
from synthgen.seeding import style_vectors
from synthgen.storage.splits import camus_test_patients, is_test_patient, patient_number, split_indices
from synthgen.storage.store import StoreWriter
from synthgen.trainers.augment import GanAugment
from synthgen.trainers.config import TrainConfig, lr_at, merge_config
from synthgen.trainers.data import TrainingStream, augment_batch, load_training_pairs
from synthgen.trainers.gan import train_gan
from synthgen.trainers.runs import seeded
from synthgen.trainers.train_state import STATE_WEIGHTS

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture
def store(tmp_path) -> str:
    return make_store(tmp_path / "tiny.zarr")


# -- configs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["spade", "pix2pix"])
def test_config_json_round_trip(arch, tmp_path):
    cfg = tiny_config("s.zarr", tmp_path, arch, split="train", augment=True, lr_g=1e-4)
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert again.model.arch == arch


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"model": {"arch": "spade", "widht": 8}}, r"Unknown key\(s\) \['widht'\]"),
        ({"model": {"arch": "spade", "width": 0}}, "Expected SPADE width >= 1. Got 0"),
        ({"model": {"arch": "spade", "width": 8.5}}, "Expected 'width' in the SPADE config to be an integer"),
        (
            {"model": {"arch": "pix2pix", "style_encoder": True}},
            r"Unknown key\(s\) \['style_encoder'\] in the pix2pix",
        ),
        ({"model": {"arch": "pix2pix", "style_dim": -1}}, "Expected pix2pix style_dim >= 0. Got -1"),
        ({"model": {"arch": "stylegan"}}, "Expected an architecture in"),
        ({"model": {"arch": "spade"}, "batch_size": 0}, "Expected the batch size >= 1. Got 0"),
        ({"model": {"arch": "spade"}, "split": "val"}, "Expected a split in"),
        (
            {"model": {"arch": "spade"}, "amp": "yes"},
            "Expected 'amp' in the training config to be true or false",
        ),
        ({"model": {"arch": "spade"}, "num_classes": 5}, r"Unknown key\(s\) \['num_classes'\]"),
    ],
)
def test_bad_configs_are_clear_errors(data, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig.from_dict({"store": "s.zarr", "out_dir": "o"} | data)


def test_depth_must_divide_image_size():
    with pytest.raises(ConfigError, match="Expected an image size divisible by 2\\*\\*depth = 16"):
        build_gan(default_model_config("spade", depth=4), DataShape(4, 1, 24))


def test_merge_config_layers_values():
    base = tiny_config("a.zarr", "o").to_dict()
    cfg = merge_config(base, {"steps": 9, "seed": None}, {"width": 6})
    assert (cfg.steps, cfg.model.width, cfg.model.depth, cfg.seed) == (9, 6, 2, 0)
    assert merge_config(base, {}, {}, arch="pix2pix").model == default_model_config("pix2pix")


def test_lr_schedule():
    assert lr_at(0, 1.0, 10, 0) == lr_at(9, 1.0, 10, 0) == 1.0
    assert [lr_at(s, 1.0, 10, 4) for s in (5, 6, 8, 9)] == [1.0, 1.0, 0.5, 0.25]


# -- data ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_intensity_round_trip(dtype):
    intensity = Intensity.for_dtype(dtype)
    values = np.linspace(intensity.low, intensity.high, 11).astype(dtype)
    x = to_unit(values, intensity)
    assert x.min() == -1 and x.max() == 1
    back = from_unit(x, intensity, dtype)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_allclose(back, values, rtol=0, atol=1e-6 if dtype == "float32" else 0)


def test_load_training_pairs_resizes_and_splits(tmp_path):
    store = make_store(tmp_path / "s.zarr", n=24, size=32, dtype="uint16")
    from synthgen.storage.store import StoreReader

    reader = StoreReader(store)
    data = load_training_pairs(reader, 16, "train")
    assert data.images.shape == (22, 1, 16, 16) and data.labels.shape == (22, 16, 16)
    assert -1 <= data.images.min() and data.images.max() <= 1
    assert set(torch.unique(data.labels).tolist()) == {0, 1, 2, 3}
    assert data.shape == DataShape(4, 1, 16)
    assert split_indices(reader, "test").tolist() == [9, 19]  # patients 10 and 20


def test_training_stream_epochs_split_and_resume_at_any_step(tmp_path):
    from synthgen.storage.store import StoreReader

    reader = StoreReader(make_store(tmp_path / "s.zarr", n=24, size=32, dtype="uint16"))
    data = TrainingStream(reader, 16, "train", batch_size=5, seed=3)
    assert len(data) == 22 and data.batches_per_epoch == 4
    stream = data.batches()
    run = [next(stream) for _ in range(10)]  # two and a half epochs
    seen = torch.cat([b.labels.argmax(1).flatten(1) for b in run[:4]])
    assert len(seen) == 20 and len({tuple(r.tolist()) for r in seen}) == 20  # one epoch: no pair twice
    assert all(b.labels.shape == (5, 4, 16, 16) and b.images.shape == (5, 1, 16, 16) for b in run)
    assert all(-1 <= b.images.min() and b.images.max() <= 1 for b in run)
    held_out = load_training_pairs(reader, 16, "test")
    for b in run:  # the held-out patients' maps never come
        for lab in b.labels.argmax(1):
            assert not any(torch.equal(lab, other) for other in held_out.labels.long())
    for start in (3, 4, 9):
        resumed = next(data.batches(start_step=start))
        torch.testing.assert_close(resumed.images, run[start].images, rtol=0, atol=0)
        torch.testing.assert_close(resumed.labels, run[start].labels, rtol=0, atol=0)
    with pytest.raises(StoreError, match="at least one batch"):
        TrainingStream(reader, 16, "test", batch_size=5, seed=0)


def test_split_needs_patients(tmp_path):
    from synthgen.storage.store import StoreReader

    layout = StoreLayout(4, (8, 8))
    writer = StoreWriter.create(str(tmp_path / "s.zarr"), StoreAttrs(layout, CAMUS))
    writer.write_shard(0, np.zeros((4, 8, 8), np.uint8), np.zeros((4, 8, 8), np.uint8))
    writer.mark_complete([0])
    with pytest.raises(StoreFormatError, match="to split by patient"):
        split_indices(StoreReader(str(tmp_path / "s.zarr")), "train")


def test_patient_split_rule():
    assert patient_number("camus/patient0042/patient0042_2CH_ED.nii.gz") == 42
    assert [p for p in range(1, 31) if is_test_patient(p)] == [10, 20, 30]
    assert camus_test_patients([3, 10, 20, 20, 450]) == [10, 20, 450]
    with pytest.raises(StoreFormatError, match="patientNNNN"):
        patient_number("subject7.nii.gz")


def test_augment_keeps_labels_one_hot(store):
    from synthgen.storage.store import StoreReader

    data = TrainingStream(StoreReader(store), 16, "all", 6, seed=0)
    batch = augment_batch(next(data.batches()), GanAugment(rotation=15, scale=0.15, shift=0.09), seeded(0, 2))
    assert torch.all(batch.labels.sum(1) == 1) and set(torch.unique(batch.labels).tolist()) == {0.0, 1.0}
    assert batch.images.min() >= -1.0001 and batch.images.max() <= 1.0001


# -- training -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("arch", "key", "extra"),
    [
        ("pix2pix", "g_l1", {}),
        ("pix2pix", "g_l1", {"style_dim": 4}),
        ("pix2pix", "g_fm", {"disc_scales": 2, "lambda_fm": 10.0}),
        ("spade", "g_l1", {}),
    ],
)
def test_losses_go_down_on_a_fixed_batch(arch, key, extra, store):
    from synthgen.storage.store import StoreReader

    data = TrainingStream(StoreReader(store), 16, "all", 8, seed=0)
    model = build_gan(default_model_config(arch, **TINY[arch] | {"lambda_l1": 10.0} | extra), data.shape)
    init_weights(model, seeded(0, 0))
    batch = next(data.batches())
    opt = torch.optim.Adam(model.g_parameters(), lr=2e-3, betas=(0.5, 0.999))
    noise = seeded(0, 2)
    seen = []
    for _ in range(25):
        out = model.generator_step(batch, noise)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        seen.append(out.logs[key])
    assert np.mean(seen[-5:]) < 0.6 * np.mean(seen[:5]), seen


def test_pix2pix_judges_at_several_scales_with_feature_matching(store):
    """pix2pixHD's options: one PatchGAN per scale, the k-th on the image pooled k times, and a feature
    matching term that only the generator's side pays; one scale keeps the plain PatchGAN's names."""
    from synthgen.storage.store import StoreReader

    data = TrainingStream(StoreReader(store), 16, "all", 8, seed=0)
    batch = next(data.batches())
    plain = build_gan(default_model_config("pix2pix", **TINY["pix2pix"]), data.shape)
    assert all(k.startswith("blocks.") for k in plain.discriminator.state_dict())
    assert "g_fm" not in plain.generator_step(batch, seeded(0, 2)).logs
    model = build_gan(
        default_model_config("pix2pix", **TINY["pix2pix"] | {"disc_scales": 3, "lambda_fm": 10.0}), data.shape
    )
    init_weights(model, seeded(0, 0))
    scales = model.judge(batch.labels, batch.images)
    assert len(scales) == 3
    sides = [s[-1].shape[-1] for s in scales]
    assert sides[0] > sides[1] > sides[2]  # coarser patch maps at the pooled scales
    out = model.generator_step(batch, seeded(0, 2))
    assert out.logs["g_fm"] > 0
    fm_free = build_gan(
        default_model_config("pix2pix", **TINY["pix2pix"] | {"disc_scales": 3, "lambda_fm": 0.0}), data.shape
    )
    fm_free.load_state_dict(model.state_dict())
    again = fm_free.generator_step(batch, seeded(0, 2))
    torch.testing.assert_close(out.loss - 10.0 * out.logs["g_fm"], again.loss, rtol=1e-4, atol=1e-4)
    d_loss, _ = model.discriminator_step(batch, out.fakes)
    d_loss.backward()
    assert all(p.grad is not None for p in model.d_parameters())


@pytest.mark.parametrize(
    ("arch", "augment", "model"),
    [
        ("spade", False, {}),
        ("pix2pix", False, {}),
        ("pix2pix", False, {"style_dim": 4}),
        ("pix2pix", False, {"disc_scales": 2, "lambda_fm": 10.0}),
        ("spade", True, {}),
    ],
)
def test_resume_is_exact(arch, augment, model, store, tmp_path):
    from safetensors.torch import load_file

    def config(out: str, steps: int) -> TrainConfig:
        return tiny_config(store, tmp_path / out, arch, steps=steps, augment=augment, model=model)

    straight = train_gan(config("a", 3), progress=False)
    train_gan(config("b", 2), progress=False)
    resumed = train_gan(config("b", 3), resume=True, progress=False)
    assert straight.step == resumed.step == 3
    a = load_file(str(straight.checkpoint / STATE_WEIGHTS))
    b = load_file(str(resumed.checkpoint / STATE_WEIGHTS))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the step-2 run does differ from the step-3 run: the comparison above can fail
    lines = (tmp_path / "b" / "losses.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]


def test_run_writes_grids_log_and_plot(store, tmp_path):
    result = train_gan(tiny_config(store, tmp_path / "run", "spade"), progress=False)
    out = tmp_path / "run"
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_0000002.png", "step_0000003.png"]
    assert (out / "losses.png").stat().st_size > 1000
    rows = [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and {"g_gan", "g_fm", "g_kld", "d_hinge"} <= rows[0].keys()
    assert sorted(p.name for p in result.checkpoint.iterdir()) == [
        "generator.json",
        "generator.safetensors",
        "train_state.json",
        "train_state.safetensors",
    ]


def test_resume_guards(store, tmp_path):
    cfg = tiny_config(store, tmp_path / "run", "pix2pix", steps=1)
    with pytest.raises(CheckpointError, match="Expected a checkpoint to resume"):
        train_gan(cfg, resume=True, progress=False)
    train_gan(cfg, progress=False)
    with pytest.raises(ConfigError, match="already holds a checkpoint"):
        train_gan(cfg, progress=False)
    with pytest.raises(ConfigError, match=r"Got different \['batch_size'\]"):
        train_gan(cfg.replace(batch_size=2, steps=2), resume=True, progress=False)
    other = make_store(tmp_path / "other.zarr", n=10)
    with pytest.raises(CheckpointError, match="Expected the training store the checkpoint was trained on"):
        train_gan(cfg.replace(store=other, steps=2), resume=True, progress=False)


# -- generation ---------------------------------------------------------------------------------
def test_generate_styles_and_dtype(tmp_path):
    store = make_store(tmp_path / "s.zarr", dtype="uint16")
    result = train_gan(tiny_config(store, tmp_path / "run", "spade", steps=2), progress=False)
    gen = open_generator(result.checkpoint, backend="torch", threads=None)
    dim = gen.style_dim
    labels = disc_labels(3, 16, 16)
    a = gen.images(labels, style_vectors(0, [1, 2, 3], dim))
    assert a.shape == (3, 16, 16) and a.dtype == np.uint16
    np.testing.assert_array_equal(a, gen.images(labels, style_vectors(0, [1, 2, 3], dim)))
    np.testing.assert_array_equal(a[1:], gen.images(labels[1:], style_vectors(0, [2, 3], dim)))  # per sample
    b = gen.images(labels, style_vectors(0, [4, 5, 6], dim))
    assert np.abs(a.astype(float) - b).mean() > 10  # different styles, different images
    z = style_vectors(0, [1, 2, 3], dim)
    np.testing.assert_array_equal(a, gen.images(labels, z))
    with pytest.raises(ConfigError, match="Expected styles"):
        gen.images(labels)
    with pytest.raises(CheckpointError, match="Expected label maps of 16 x 16"):
        gen.images(disc_labels(1, 32, 32), style_vectors(0, [1], dim))
    bad = labels.copy()
    bad[0, 0, 0] = 7
    with pytest.raises(LabelValueError, match="Label value 7"):
        gen.images(bad, style_vectors(0, [1, 2, 3], dim))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("arch", ["spade", "pix2pix"])
def test_mixed_precision_on_gpu(arch, store, tmp_path):
    result = train_gan(tiny_config(store, tmp_path / "run", arch, steps=3, device="cuda"), progress=False)
    assert all(np.isfinite(v) for v in result.losses.values())
    scaler = json.loads((result.checkpoint / "train_state.json").read_text())["scaler"]
    assert scaler["scale"] > 0  # the grad scaler was in use
    gen = open_generator(result.checkpoint, backend="torch", threads=None)  # on the GPU where there is one
    images = gen.images(
        disc_labels(2, 16, 16), style_vectors(0, [1, 2], gen.style_dim) if gen.style_dim else None
    )
    assert images.shape == (2, 16, 16)


_STYLED = {
    "spade": {
        "width": 8,
        "max_width": 16,
        "hidden": 8,
        "disc_width": 8,
        "lambda_l1": 10.0,
        "style_encoder": True,
    },
    "pix2pix": {"width": 8, "max_width": 16, "disc_width": 8, "lambda_l1": 10.0, "style_dim": 4},
}


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["spade", "pix2pix"])
def test_style_encoder_carries_the_image_style(arch, tmp_path):
    """Images whose only style is a random global gain. The encoder's style of each image makes the
    generator give that image's brightness, and styles drawn from the prior vary the brightness of one
    label map by a good part of the data's spread (an encoder blind to brightness gave 4%)."""
    n, size = 64, 16
    labels = disc_labels(n, size, size, seed=3)
    gain = np.random.default_rng(1).uniform(0.2, 1.0, n)
    images = (np.array([0.1, 0.5, 1.0, 0.7])[labels] * gain[:, None, None] * 255).astype(np.uint8)
    writer = StoreWriter.create(
        str(tmp_path / "s.zarr"), StoreAttrs(StoreLayout(n, (size, size), shard_size=n), CAMUS)
    )
    writer.write_shard(0, images, labels)
    writer.mark_complete([0])
    cfg = tiny_config(str(tmp_path / "s.zarr"), tmp_path / "run", arch, model=_STYLED[arch])
    # 400 steps: at 200 the brightness was learnt for some seeds only (r 0.52 to 0.97)
    cfg = cfg.replace(steps=400, batch_size=8, lr_g=1e-3, lr_d=1e-3, sample_every=1000, checkpoint_every=1000)
    ckpt = train_gan(cfg, progress=False).checkpoint
    gan = build_gan(cfg.model, DataShape(CAMUS.num_classes, 1, size))
    nets = {
        k.removeprefix("nets."): v
        for k, v in read_tensors(ckpt / STATE_WEIGHTS).items()
        if k.startswith("nets.")
    }
    load_weights(gan, nets, "the training state")
    x = torch.from_numpy(to_unit(images, Intensity.for_dtype("uint8"))[:, None])
    with torch.no_grad():
        encoded, _ = gan.encoder(x)
    brightness = images.mean(axis=(1, 2))
    gen = open_generator(ckpt, backend="torch", threads=None)
    rebuilt = gen.images(labels, encoded.numpy()).mean(axis=(1, 2))
    assert np.corrcoef(rebuilt, brightness)[0, 1] > 0.9
    sampled = gen.images(np.repeat(labels[:1], 16, axis=0), style_vectors(0, np.arange(16), gen.style_dim))
    sampled = sampled.mean(axis=(1, 2))
    assert sampled.std() > 0.15 * brightness.std(), (sampled.std(), brightness.std())


def test_realism_measures(store, tmp_path):
    from synthgen.evaluation.realism import compare_with_real, ssim, wasserstein_1d
    from synthgen.kernels import psnr

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 32)).astype(np.uint8)
    noisy = np.clip(a + rng.normal(0, 30, a.shape), 0, 255)
    assert ssim(a, a, 255) == pytest.approx(1.0)
    assert ssim(a, noisy, 255) == pytest.approx(ssim(noisy, a, 255))
    noisier = np.clip(a + rng.normal(0, 90, a.shape), 0, 255)
    assert ssim(a, noisier, 255) < ssim(a, noisy, 255) < 0.95
    assert psnr(a, a.astype(float) + 5, 255) == pytest.approx(20 * np.log10(255 / 5))
    assert wasserstein_1d(a, a.astype(float) + 5) == pytest.approx(5.0)
    result = train_gan(tiny_config(store, tmp_path / "run", "pix2pix", steps=2), progress=False)
    report = compare_with_real(result.checkpoint, store, split="all", grid=tmp_path / "grid.png", grid_rows=3)
    assert report.n == 12 and -1 <= report.ssim_mean <= 1 and report.psnr_mean > 0
    from PIL import Image

    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == (3 * 16, 3 * 16)  # labels | real | generated, 3 rows
