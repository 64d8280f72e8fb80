"""A store's own patient split rule (ingest --test-remainder): recorded at ingest, followed by every
split of the store and of the stores cut from it, refused where it is malformed."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from test_ingest import make_camus

from synthgen.cli import cli
from synthgen.errors import ConfigError, StoreFormatError
from synthgen.evaluation.utility import patient_splits
from synthgen.storage.splits import SplitRule, select_split, split_indices, store_patients, store_rule
from synthgen.storage.store import StoreReader

PATIENTS = (1, 2, 10, 11, 15, 21)


def ingest(tmp_path, *extra: str):
    make_camus(tmp_path / "camus", patients=PATIENTS)
    out = tmp_path / "s.zarr"
    result = CliRunner().invoke(
        cli, ["ingest", str(tmp_path / "camus"), str(out), "--shard-size", "8", *extra]
    )
    return result, str(out)


def split_patients(url: str, split: str) -> set[int]:
    reader = StoreReader(url)
    return set(
        store_patients(reader)[np.isin(reader.available_indices(), split_indices(reader, split))].tolist()
    )


def test_default_rule_is_recorded_and_holds_out_the_tenth(tmp_path):
    result, url = ingest(tmp_path)
    assert result.exit_code == 0, result.output
    reader = StoreReader(url)
    assert reader.attrs.provenance["split_rule"] == {"modulus": 10, "test": 0, "val": 5}
    assert store_rule(reader) == SplitRule()
    assert split_patients(url, "test") == {10}
    assert split_patients(url, "val") == {15}
    assert split_patients(url, "train") == set(PATIENTS) - {10}


def test_test_remainder_moves_the_held_out_patients(tmp_path):
    result, url = ingest(tmp_path, "--test-remainder", "1")
    assert result.exit_code == 0, result.output
    reader = StoreReader(url)
    assert reader.attrs.provenance["split_rule"] == {"modulus": 10, "test": 1, "val": 5}
    assert split_patients(url, "test") == {1, 11, 21}
    assert split_patients(url, "train") == {2, 10, 15}
    chosen = select_split(reader, "test")
    assert set(chosen.patients.tolist()) == {1, 11, 21} and chosen.by == "patient"
    # the usefulness evaluation's own splits (and the stores it cuts) follow the store's rule
    splits = patient_splits(reader, _utility_config(url, tmp_path))
    test_patients = set(store_patients(reader)[np.isin(reader.available_indices(), splits["test"])].tolist())
    assert test_patients == {1, 11, 21}
    pooled = np.concatenate([splits["train"], splits["val"]])
    assert not np.isin(pooled, splits["test"]).any()


def _utility_config(url, tmp_path):
    from synthgen.evaluation.utility import UtilityConfig

    return UtilityConfig(real=url, out_dir=str(tmp_path / "u"))


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("5", "Expected test and validation patients to differ"),
        ("10", "Expected --test-remainder in [0, 9]. Got 10"),
    ],
)
def test_bad_remainders_are_one_line_errors(tmp_path, value, match):
    result, _ = ingest(tmp_path, "--test-remainder", value)
    assert result.exit_code != 0
    assert match in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "s.zarr").exists()


def test_a_malformed_recorded_rule_is_refused(tmp_path):
    result, url = ingest(tmp_path)
    assert result.exit_code == 0, result.output
    meta = tmp_path / "s.zarr" / "zarr.json"
    doc = json.loads(meta.read_text())
    found = []

    def patch(node):
        if isinstance(node, dict):
            if "split_rule" in node:
                node["split_rule"] = {"modulus": 7, "test": 1, "val": 5}
                found.append(True)
            for v in node.values():
                patch(v)

    patch(doc)
    assert found
    meta.write_text(json.dumps(doc))
    with pytest.raises(StoreFormatError, match="Expected provenance 'split_rule'"):
        store_rule(StoreReader(url))


def test_rule_values_are_checked():
    with pytest.raises(ConfigError, match=r"0\.\.9"):
        SplitRule(test=-1)
    with pytest.raises(ConfigError, match="to differ"):
        SplitRule(test=3, val=3)
