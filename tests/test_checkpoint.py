"""GAN checkpoints: safetensors + JSON round trips, validation with clear errors, the bundled generator."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from helpers.data import disc_labels
from helpers.gan import make_store, tiny_config
from safetensors.torch import load_file, save_file

from synthgen.errors import CheckpointError
from synthgen.inference.backends import open_generator
from synthgen.models.layers import init_weights, onehot
from synthgen.models.registry import build_gan, default_model_config
from synthgen.models.weights import load_generator, save_generator
from synthgen.schemas import ACDC, CAMUS
from synthgen.schemas.generator_spec import DataShape, GeneratorSpec, default_generator_path, store_hash
from synthgen.seeding import style_vectors
from synthgen.trainers.gan import train_gan
from synthgen.trainers.runs import seeded
from synthgen.trainers.train_state import flatten_optimizer, unflatten_optimizer

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A SPADE run of 2 steps (spectral norm, BatchNorm, style encoder) on a tiny store."""
    tmp = tmp_path_factory.mktemp("ckpt")
    store = make_store(tmp / "s.zarr")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_gan(tiny_config(store, tmp / "run", "spade", steps=2), progress=False).checkpoint
    finally:
        torch.set_num_threads(threads)


def _copy(ckpt, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(ckpt, out)
    return out


def test_saved_generator_matches_the_trained_one(tmp_path):
    shape = DataShape(4, 1, 16)
    cfg = default_model_config("spade", width=4, max_width=8, depth=2, hidden=4, style_dim=4)
    model = build_gan(cfg, shape)
    init_weights(model, seeded(0, 0))
    labels = onehot(torch.from_numpy(disc_labels(2, 16, 16)), 4)
    z = torch.randn(2, 4, generator=seeded(0, 1))
    model.train()
    model.generator(labels, z)  # one power iteration and BatchNorm update, as in training
    model.eval()
    with torch.no_grad():
        expected = model.generator(labels, z)
    spec = GeneratorSpec("spade", cfg.to_dict(), 16, 1, "uint8", _intensity(), CAMUS, 4, "x")
    save_generator(tmp_path / "g", model.inference_generator(), spec)
    loaded, spec2 = load_generator(tmp_path / "g")
    assert spec2 == spec and not loaded.training
    assert not any("parametrizations" in k for k in loaded.state_dict())  # spectral norm folded in
    with torch.no_grad():
        torch.testing.assert_close(loaded(labels, z), expected, rtol=1e-5, atol=1e-5)


def _intensity():
    from synthgen.schemas.store_layout import Intensity

    return Intensity.for_dtype("uint8")


def test_spec_json_round_trip_and_contents(trained):
    data = json.loads((trained / "generator.json").read_text())
    assert data["label_schema"] == CAMUS.to_dict() and data["image_size"] == 16 and data["channels"] == 1
    assert data["intensity"] == {"low": 0.0, "high": 255.0, "description": _intensity().description}
    assert data["store_hash"].startswith("sha256:") and data["step"] == 2 and data["style_dim"] == 4
    assert GeneratorSpec.from_dict(data).to_dict() == data


def test_files_are_tensors_only(trained):
    for name in ("generator.safetensors", "train_state.safetensors"):
        tensors = load_file(str(trained / name))
        assert tensors and all(isinstance(t, torch.Tensor) for t in tensors.values())
    state = load_file(str(trained / "train_state.safetensors"))
    assert {"rng.data", "rng.noise"} <= state.keys() and any(k.startswith("optim.g.") for k in state)


def test_check_compatible_is_explicit(trained):
    _, spec = load_generator(trained)
    spec.check_compatible(schema=CAMUS, image_size=16, channels=1, image_dtype="uint8")
    with pytest.raises(CheckpointError, match=r"Expected label schema 'camus'.*Got schema 'acdc'"):
        spec.check_compatible(schema=ACDC)
    with pytest.raises(CheckpointError, match=r"Expected image size 16 .*Got 128 instead"):
        spec.check_compatible(image_size=128)
    with pytest.raises(CheckpointError, match=r"Expected channels 1 .*Got 3 instead"):
        spec.check_compatible(channels=3)


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda p: (p / "generator.json").unlink(), "Expected generator.json in checkpoint"),
        (lambda p: (p / "generator.safetensors").unlink(), "Expected generator.safetensors in checkpoint"),
        (lambda p: (p / "generator.json").write_text("{not json"), "Cannot read"),
        (lambda p: (p / "generator.safetensors").write_bytes(b"\x80\x04pickle"), "Cannot read safetensors"),
        (lambda p: _edit(p, format="torch"), "Expected a synthgen generator spec"),
        (lambda p: _edit(p, format_version=99), "Expected generator format version 1"),
        (lambda p: _edit(p, model={"arch": "spade", "width": 16}), "do not fit the architecture"),
        (lambda p: _edit(p, model={"arch": "spade", "depth": -1}), "Malformed generator spec"),
        (lambda p: _edit(p, arch="pix2pix"), "Expected arch 'pix2pix' in the model config"),
        (lambda p: _drop(p, "label_schema"), "Expected key 'label_schema'"),
    ],
)
def test_damaged_checkpoints_are_clear_errors(trained, tmp_path, damage, match):
    path = _copy(trained, tmp_path)
    damage(path)
    with pytest.raises(CheckpointError, match=match):
        load_generator(path)


def _edit(path, **changes):
    data = json.loads((path / "generator.json").read_text())
    if "model" in changes:
        changes["model"] = data["model"] | changes["model"]
    (path / "generator.json").write_text(json.dumps(data | changes))


def _drop(path, key):
    data = json.loads((path / "generator.json").read_text())
    del data[key]
    (path / "generator.json").write_text(json.dumps(data))


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="Expected a generator checkpoint folder"):
        load_generator(tmp_path / "nope")


def test_extra_weights_are_rejected(trained, tmp_path):
    path = _copy(trained, tmp_path)
    tensors = load_file(str(path / "generator.safetensors")) | {"extra.weight": torch.zeros(1)}
    save_file(tensors, str(path / "generator.safetensors"))
    with pytest.raises(CheckpointError, match="Unexpected key"):
        load_generator(path)


def test_optimizer_flatten_round_trip():
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.9))
    net(torch.ones(4, 3)).sum().backward()
    opt.step()
    tensors, meta = flatten_optimizer("g", opt)
    meta = json.loads(json.dumps(meta))
    fresh = torch.optim.Adam(net.parameters(), lr=1.0)
    unflatten_optimizer("g", fresh, tensors, meta)
    a, b = opt.state_dict(), fresh.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for pid in a["state"]:
        for key, value in a["state"][pid].items():
            assert torch.equal(value, b["state"][pid][key])


def test_store_hash_tracks_the_store(tmp_path):
    from synthgen.storage.store import StoreReader

    a = StoreReader(make_store(tmp_path / "a.zarr", n=8)).attrs
    b = StoreReader(make_store(tmp_path / "b.zarr", n=9)).attrs
    assert store_hash(a) == store_hash(a) != store_hash(b)


# -- the bundled generator ----------------------------------------------------------------------
def test_bundled_generator():
    path = default_generator_path()
    if not (path / "generator.json").is_file():
        pytest.fail(f"the bundled generator is missing at {path}")
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size <= 20 * 2**20
    assert "synthgen train-gan" in (path / "README.md").read_text()
    _, spec = load_generator(path)
    assert (spec.schema.name, spec.image_size, spec.channels, spec.image_dtype) == ("camus", 128, 1, "uint8")
    assert spec.split == "train"
    labels = np.stack([_camus_like_labels(128, 0.0), _camus_like_labels(128, 0.06)])
    gen = open_generator(path, backend="torch", threads=None)
    styles = style_vectors(0, [0, 1], spec.style_dim) if spec.style_dim else None
    images = gen.images(labels, styles)
    assert images.shape == (2, 128, 128) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[:1], gen.images(labels[:1], None if styles is None else styles[:1]))
    # the image follows the label map: the cavity (1) is darker than its wall (2), the sector is lit
    cavity, wall = images[0][labels[0] == 1].mean(), images[0][labels[0] == 2].mean()
    assert cavity + 15 < wall, (cavity, wall)
    assert images[0][10:40, 50:78].mean() > images[0][5:25, :12].mean() + 15  # near the apex vs outside
    assert np.abs(images[0].astype(float) - images[1]).mean() > 1.0  # another map, another image


def _camus_like_labels(size: int, shift: float) -> np.ndarray:
    """An apical-view-like map: a myocardium (2) wall around an LV cavity (1), an atrium (3) below."""
    yy, xx = np.mgrid[:size, :size] / size
    lab = np.zeros((size, size), np.uint8)
    lv = ((xx - 0.5 - shift) / 0.16) ** 2 + ((yy - 0.42) / 0.3) ** 2
    lab[lv < 1.3] = 2
    lab[lv < 1] = 1
    lab[(((xx - 0.5 - shift) / 0.12) ** 2 + ((yy - 0.8) / 0.1) ** 2 < 1) & (lab == 0)] = 3
    return lab
