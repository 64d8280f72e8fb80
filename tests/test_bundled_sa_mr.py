"""The sa-mr preset works out of the box: its bundled generator (pix2pix trained on ACDC) builds a store
through the CLI, and "bundled" resolves per preset (echo CAMUS, sa-mr ACDC, ct none)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from synthgen.cli import cli
from synthgen.inference import checkpoint_hash, open_generator
from synthgen.schemas import ACDC, read_spec
from synthgen.schemas.build_config import preset_config
from synthgen.schemas.generator_spec import default_generator_path
from synthgen.sources import source_from_config
from synthgen.storage.store import StoreReader

N = 64


@pytest.fixture(scope="module")
def sa_mr_store(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("sa_mr") / "sa.zarr")
    args = ["build-dataset", "--preset", "sa-mr", "--out", out, "--n", str(N), "--shard-size", "32"]
    result = CliRunner().invoke(cli, [*args, "--scheduler", "sync", "--quiet"])
    assert result.exit_code == 0, result.output
    return out


def test_bundled_resolves_per_preset():
    assert default_generator_path() == default_generator_path("echo")
    assert default_generator_path("echo").name == "camus_pix2pix_128"
    assert default_generator_path("sa-mr").name == "acdc_pix2pix_128"


def test_bundled_sa_mr_generator_fits_the_sa_mr_source():
    path = default_generator_path("sa-mr")
    assert sum(f.stat().st_size for f in path.iterdir()) <= 20 * 2**20
    assert "synthgen train-gan" in (path / "README.md").read_text()
    spec = read_spec(path)
    config = preset_config("sa-mr")
    source = source_from_config(config.source, config.image_size)
    assert spec.schema.to_dict()["classes"] == source.schema.to_dict()["classes"] == ACDC.to_dict()["classes"]
    assert (spec.image_size, spec.image_size) == config.image_size
    assert (spec.channels, spec.image_dtype, spec.style_dim, spec.split) == (1, "uint8", 0, "train")


def test_sa_mr_build_uses_the_bundled_acdc_generator(sa_mr_store):
    reader = StoreReader(sa_mr_store)
    assert reader.attrs.is_complete and reader.num_available == N
    assert reader.attrs.schema.name == "acdc"
    path = default_generator_path("sa-mr")
    generator = reader.attrs.provenance["generator"]
    assert generator["hash"] == checkpoint_hash(path)
    assert reader.attrs.provenance["build_config"]["generator"] == "bundled"

    images, labels = reader.read_block(0, N)
    assert images.shape == (N, 128, 128) and images.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    assert (images.reshape(N, -1).std(axis=1) > 10).all()  # no constant image
    assert np.abs(images[0].astype(float) - images[1]).mean() > 1.0  # another map, another image
    # the images are the bundled generator's on the stored label maps, through the build's appearance
    # stage (mild gamma, contrast, blur, bias, noise): each matches its own map's generated image best
    generated = open_generator(path, backend="onnxruntime", threads=1).images(labels)
    flat = np.concatenate([images.reshape(N, -1), generated.reshape(N, -1)]).astype(np.float64)
    corr = np.corrcoef(flat)[:N, N:]
    np.testing.assert_array_equal(corr.argmax(axis=1), np.arange(N))
    assert np.median(np.diag(corr)) > 0.8, np.diag(corr)
    # and they follow the label maps: cine MR shows bright blood in the LV cavity (3), a dark wall (2)
    cavity, wall = images[labels == 3].mean(), images[labels == 2].mean()
    assert cavity > wall + 20, (cavity, wall)


def test_ct_without_generator_is_one_clear_line(tmp_path):
    out = tmp_path / "ct.zarr"
    result = CliRunner().invoke(cli, ["build-dataset", "--preset", "ct", "--out", str(out), "--n", "4"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("synthgen: error:"), lines
    assert "'ct'" in lines[0] and "--generator" in lines[0]
    assert not out.exists()
