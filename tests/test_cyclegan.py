"""The unpaired route: pseudo-image renderer (NumPy and torch agree), CycleGAN training, resume, export,
and the anatomy guard. Tiny CPU runs at 16 x 16."""

from __future__ import annotations

import json

import helpers.gan as gan_fixtures
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers.data import disc_labels
from helpers.gan import TINY, make_store

from synthgen.cli import cli
from synthgen.errors import ConfigError
from synthgen.inference.backends import open_generator
from synthgen.kernels import sector_mask
from synthgen.models.cyclegan import anatomy_dice
from synthgen.models.layers import init_weights, onehot
from synthgen.models.pseudo_render import (
    PseudoRenderer,
    RenderConfig,
    RenderParams,
    intensity_ranges_for,
    noise_bank,
    params_from_style,
    render,
    sample_render_params,
)
from synthgen.models.registry import build_gan, default_model_config
from synthgen.models.segmenters import SegmenterSpec, SegModelConfig, build_segmenter, save_segmenter
from synthgen.models.weights import load_generator
from synthgen.schemas import CAMUS
from synthgen.storage.store import StoreReader
from synthgen.trainers.config import TrainConfig
from synthgen.trainers.data import TrainingStream
from synthgen.trainers.gan import train_gan
from synthgen.trainers.runs import seeded
from synthgen.trainers.train_state import STATE_WEIGHTS

CYCLE_LEVELS = (0.3, 0.05, 0.8, 0.1)  # blood pools dark, the wall bright, as in echo

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture
def store(tmp_path) -> str:
    return make_store(tmp_path / "tiny.zarr", levels=CYCLE_LEVELS)


def tiny_config(store: str, out, **changes) -> TrainConfig:
    return gan_fixtures.tiny_config(store, out, "cyclegan", **changes)


# -- renderer -----------------------------------------------------------------------------------
@pytest.mark.parametrize("modality", ["echo", "mr", "ct"])
def test_torch_renderer_matches_numpy_reference(modality):
    config = RenderConfig(modality=modality, noise_fields=3, intensity_slots=5)
    labels = disc_labels(3, 24, 24, seed=2)
    z = np.random.default_rng(1).standard_normal((3, config.style_dim))
    module = PseudoRenderer(config, 4, 24)
    with torch.no_grad():
        got = module(onehot(torch.from_numpy(labels), 4), torch.from_numpy(z).float()).numpy()
    for i in range(3):
        expected = render(labels[i], params_from_style(z[i], 4, config)) * 2 - 1
        np.testing.assert_allclose(got[i, 0], expected, atol=2e-5)
    assert got.std() > 0.1


def test_render_params_are_drawn_in_range_and_replay():
    config = RenderConfig(intensity_ranges=intensity_ranges_for(CAMUS, "echo"))
    a = sample_render_params(np.random.default_rng(5), CAMUS, config)
    assert a == sample_render_params(np.random.default_rng(5), CAMUS, config)
    assert a != sample_render_params(np.random.default_rng(6), CAMUS, config)
    for value, (lo, hi) in zip(a.intensities, config.intensity_ranges, strict=True):
        assert lo <= value <= hi
    assert config.noise_min <= a.strength <= config.noise_max
    assert np.linalg.norm(a.weights_a) == pytest.approx(1.0)
    again = RenderParams.from_dict(json.loads(json.dumps(a.to_dict())))
    labels = disc_labels(1, 32, 32)[0]
    np.testing.assert_array_equal(render(labels, again), render(labels, a))


def test_echo_render_looks_like_echo():
    config = RenderConfig(intensity_ranges=intensity_ranges_for(CAMUS, "echo"), noise_min=0.5, noise_max=0.5)
    labels = disc_labels(1, 64, 64)[0]
    image = render(labels, sample_render_params(np.random.default_rng(0), CAMUS, config))
    inside = sector_mask((64, 64))
    assert image.dtype == np.float32 and 0 <= image.min() and image.max() <= 1
    assert np.all(image[~inside] == 0)
    cavity, wall = (labels == 1) & inside, (labels == 2) & inside
    assert image[wall].mean() > image[cavity].mean() + 0.3  # dark blood, bright muscle
    assert image[wall].std() > 0.05  # speckled, not flat
    bank = noise_bank(0, 8, (64, 64), 0.7)
    np.testing.assert_allclose(bank.std(axis=(1, 2)), 1.0, atol=1e-5)
    assert not bank.flags.writeable


def test_mr_ranges_and_render_errors():
    from synthgen.schemas import ACDC

    mr = dict(zip(("background", *ACDC.names), intensity_ranges_for(ACDC, "mr"), strict=True))
    assert mr["lv_cavity"][0] > mr["lv_myocardium"][1]  # bright blood in bSSFP
    params = sample_render_params(np.random.default_rng(0), CAMUS)
    with pytest.raises(ConfigError, match="Expected an \\(H, W\\) map of class indices below 4"):
        render(np.full((8, 8), 4, np.uint8), params)
    with pytest.raises(ConfigError, match="Expected 4 intensity ranges"):
        RenderConfig(intensity_ranges=((0, 1),) * 3).ranges(4)
    with pytest.raises(ConfigError, match="Expected at most intensity_slots = 2 classes"):
        RenderConfig(intensity_slots=2).ranges(4)
    with pytest.raises(ConfigError, match="Expected a modality in"):
        RenderConfig(modality="xray")


# -- configs ------------------------------------------------------------------------------------
def test_config_round_trip_and_style_dim(tmp_path):
    cfg = tiny_config("s.zarr", tmp_path, model={"intensity_ranges": [[0.1, 0.2]] * 4, "modality": "mr"})
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.model.intensity_ranges == ((0.1, 0.2),) * 4
    assert cfg.model.style_dim == 4 + 1 + 2 * 2


@pytest.mark.parametrize(
    ("model", "match"),
    [
        ({"widht": 4}, r"Unknown key\(s\) \['widht'\]"),
        ({"lambda_cycle": -1.0}, "Expected CycleGAN lambda_cycle >= 0.0"),
        ({"modality": "pet"}, "Expected a modality in"),
        ({"intensity_ranges": "0-1"}, "Expected intensity_ranges as"),
        ({"intensity_ranges": [[0.5, 0.2]]}, "Expected intensity ranges with 0 <= lo <= hi <= 1"),
        ({"noise_min": 0.9, "noise_max": 0.1}, "Expected 0 <= noise_min <= noise_max <= 1"),
    ],
)
def test_bad_configs_are_clear_errors(model, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig.from_dict({"store": "s", "out_dir": "o", "model": {"arch": "cyclegan"} | model})


def test_size_must_divide(store):
    from synthgen.schemas.generator_spec import DataShape

    with pytest.raises(ConfigError, match="divisible by 2\\*\\*downsamples = 4"):
        build_gan(default_model_config("cyclegan"), DataShape(4, 1, 18))


# -- training -----------------------------------------------------------------------------------
def test_cycle_loss_goes_down_and_pairing_is_ignored(store):
    data = TrainingStream(StoreReader(store), 16, "all", 6, seed=0)
    model = build_gan(default_model_config("cyclegan", **TINY["cyclegan"]), data.shape)
    init_weights(model, seeded(0, 0))
    batch = next(data.batches())
    # unpaired: which real image comes with which label map does not change any loss
    shuffled = type(batch)(batch.labels, batch.images.flip(0))
    a, b = model.generator_step(batch, seeded(0, 2)), model.generator_step(shuffled, seeded(0, 2))
    assert a.logs == pytest.approx(b.logs, rel=1e-5)
    opt = torch.optim.Adam(model.g_parameters(), lr=3e-3, betas=(0.5, 0.999))
    noise, seen = seeded(0, 2), []
    for _ in range(20):
        out = model.generator_step(batch, noise)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        seen.append(out.logs["g_cycle"])
    assert np.mean(seen[-4:]) < 0.6 * np.mean(seen[:4]), seen


def test_train_resume_exact_and_styles_differ(store, tmp_path):
    from safetensors.torch import load_file

    straight = train_gan(tiny_config(store, tmp_path / "a"), progress=False)
    train_gan(tiny_config(store, tmp_path / "b", steps=2), progress=False)
    resumed = train_gan(tiny_config(store, tmp_path / "b"), resume=True, progress=False)
    a, b = (
        load_file(str(straight.checkpoint / STATE_WEIGHTS)),
        load_file(str(resumed.checkpoint / STATE_WEIGHTS)),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(x) for x in (tmp_path / "a" / "losses.jsonl").read_text().splitlines()]
    assert {"g_gan", "g_cycle", "g_identity", "d_real", "d_pseudo"} <= rows[-1].keys()

    model, spec = load_generator(straight.checkpoint)
    assert spec.arch == "cyclegan" and spec.style_dim == 9
    assert not any("bank" in k for k in model.state_dict())  # renderer constants are not weights
    labels = onehot(torch.from_numpy(disc_labels(2, 16, 16)), 4)
    z1, z2 = torch.randn(2, 9, generator=seeded(1, 0)), torch.randn(2, 9, generator=seeded(1, 1))
    with torch.no_grad():
        x1, x1b, x2 = model(labels, z1), model(labels, z1), model(labels, z2)
    assert torch.equal(x1, x1b) and (x1 - x2).abs().mean() > 1e-3


@pytest.mark.slow  # an ONNX export takes about 10 s here
def test_export_cli_and_onnx_backend(store, tmp_path):
    result = train_gan(tiny_config(store, tmp_path / "run", steps=1), progress=False)
    run = CliRunner().invoke(cli, ["export", str(result.checkpoint), "--format", "onnx"])
    assert run.exit_code == 0, run.output
    assert "Exported cyclegan" in run.output
    gen = open_generator(result.checkpoint, backend="onnxruntime")
    assert gen.style_dim == 9
    labels = disc_labels(3, 16, 16)
    z = np.random.default_rng(0).standard_normal((3, 9)).astype(np.float32)
    model, _ = load_generator(result.checkpoint)
    with torch.no_grad():
        expected = model(onehot(torch.from_numpy(labels), 4), torch.from_numpy(z)).numpy()
    np.testing.assert_allclose(gen(labels, z), expected, atol=1e-4)


# -- anatomy guard ------------------------------------------------------------------------------
class IntensitySegmenter(torch.nn.Module):
    """Classifies each pixel by the nearest of fixed grey levels (a perfect segmenter for flat renders)."""

    def __init__(self, levels):
        super().__init__()
        self.levels = torch.nn.Parameter(torch.tensor(levels).view(1, -1, 1, 1), requires_grad=False)

    def forward(self, x):
        return -((x - self.levels) ** 2) * 100


def test_anatomy_dice_scores_kept_and_lost_anatomy():
    levels = [0.1, 0.4, 0.7, 0.95]
    config = RenderConfig(
        modality="mr",
        blur_sigma=0,
        noise_min=0,
        noise_max=0,
        intensity_slots=4,
        noise_fields=2,
        intensity_ranges=tuple((v, v) for v in levels),
    )
    renderer, segmenter = PseudoRenderer(config, 4, 16), IntensitySegmenter(levels)
    labels = onehot(torch.from_numpy(disc_labels(3, 16, 16)), 4)
    z = torch.randn(3, config.style_dim, generator=seeded(0, 0))
    np.testing.assert_allclose(anatomy_dice(renderer, segmenter, labels, z), 1.0)
    resized = anatomy_dice(renderer, segmenter, labels, z, size=(32, 32))  # bilinear blurs the borders
    assert 0.6 < resized.min() and resized.max() < 1.0
    flat = anatomy_dice(lambda x, s: torch.full((3, 1, 16, 16), -1.0), segmenter, labels, z)
    assert flat.shape == (3,) and flat.max() == 0.0


def _tiny_segmenter(path, num_classes_schema=CAMUS):
    model = build_segmenter(SegModelConfig("lite", 4, 2), 1, num_classes_schema.num_classes)
    spec = SegmenterSpec(SegModelConfig("lite", 4, 2), (16, 16), 1, num_classes_schema)
    return str(save_segmenter(path, model.eval(), spec))


def test_training_logs_anatomy_dice_with_a_frozen_segmenter(store, tmp_path):
    seg = _tiny_segmenter(tmp_path / "seg")
    cfg = tiny_config(store, tmp_path / "run", steps=2, model={"anatomy_segmenter": seg})
    train_gan(cfg, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "losses.jsonl").read_text().splitlines()]
    assert all(0.0 <= r["anatomy_dice"] <= 1.0 for r in rows)

    from synthgen.schemas import MMWHS

    bad = tiny_config(
        store, tmp_path / "bad", model={"anatomy_segmenter": _tiny_segmenter(tmp_path / "s8", MMWHS)}
    )
    with pytest.raises(ConfigError, match="Expected an anatomy segmenter for 4 classes"):
        train_gan(bad, progress=False)
