import json

import pytest

from synthgen.errors import ConfigError
from synthgen.schemas import ProceduralSourceConfig, StoreSourceConfig
from synthgen.schemas.build_config import PRESETS, BuildConfig, DeformConfig, load_build_config, preset_config


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_json(name):
    config = preset_config(name)
    assert BuildConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_toml_then_flags_override_the_preset(tmp_path):
    path = tmp_path / "build.toml"
    path.write_text(
        'n = 500\nseed = 7\nimage_size = [64, 64]\n[deform]\nspacing = 16.0\n[source]\nview = "a2c"\n'
    )
    config = load_build_config(path, {"seed": 9, "deform": {"max_displacement": 2.0}, "shard_size": None})
    assert (config.n, config.seed, config.image_size) == (500, 9, (64, 64))
    assert config.deform == DeformConfig(spacing=16.0, max_displacement=2.0)
    assert config.source == ProceduralSourceConfig(view="a2c")
    assert config.shard_size == BuildConfig().shard_size


def test_changing_the_source_kind_replaces_the_source():
    config = preset_config("echo").with_overrides({"source": {"kind": "store", "url": "camus.zarr"}})
    assert config.source == StoreSourceConfig(url="camus.zarr")  # nothing of the procedural source is left


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"preset": "xray"}, "build preset"),
        ({"n": 0}, "n .*>= 1"),
        ({"image_size": [4, 4]}, "image_size"),
        ({"backend": "cuda"}, "backend"),
        ({"image_dtype": "int16"}, "image_dtype"),
        ({"deform": {"spacing": 1.0}}, "deform.spacing"),
        ({"gate": "yes"}, "gate"),
        ({"source": {"kind": "procedual"}}, "source.kind"),
        ({"source": {"view": "apikal"}}, "source.view"),
        ({"source": {"kind": "store"}}, "source.url"),
        ({"source": {"kind": "procedural", "colour": 1}}, "Unknown key"),
    ],
)
def test_bad_values_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_build_config(None, overrides)


def test_unknown_keys_and_bad_files(tmp_path):
    path = tmp_path / "b.toml"
    path.write_text("colour = 1\n")
    with pytest.raises(ConfigError, match="Unknown key"):
        load_build_config(path, {})
    path.write_text("n = [\n")
    with pytest.raises(ConfigError, match="Cannot parse"):
        load_build_config(path, {})
    with pytest.raises(ConfigError, match="Cannot read"):
        load_build_config(tmp_path / "missing.toml", {})
