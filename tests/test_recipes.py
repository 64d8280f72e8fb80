"""The four published recipes (examples/recipes/*.sh) run end to end through the CLI at toy size, on a
stand-in for ../shared/data in the official CAMUS and ACDC layouts; a rerun resumes instead of redoing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.data import REPO, official_layouts

RECIPES = REPO / "examples" / "recipes"
# recipe -> the arms its table must hold
ARMS = {
    "habijan_pix2pix": ("real", "synthetic", "real+synthetic"),
    "gilbert_cyclegan": ("real", "synthetic"),
    "rancon_cardigan": ("real", "real+synthetic"),
    "amirrajab_spade_mr": (
        "real",
        "real+synthetic",
        "real10",
        "real10+synthetic",
        "real25",
        "real25+synthetic",
    ),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return official_layouts(tmp_path_factory.mktemp("shared") / "data")


def run_recipe(name: str, data: Path, out: Path) -> subprocess.CompletedProcess:
    env = os.environ | {
        "SCALE": "toy",
        "DATA": str(data),
        "OUT": str(out),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # this venv's synthgen
    }
    return subprocess.run(
        ["bash", str(RECIPES / f"{name}.sh")], env=env, capture_output=True, text=True, timeout=900
    )


def table_arms(results: Path) -> list[str]:
    rows = [line for line in results.read_text().splitlines() if line.startswith("| ")]
    return [row.split("|")[1].strip() for row in rows[2:]]  # after the header and its rule


@pytest.mark.parametrize("name", sorted(ARMS))
def test_recipe_runs_end_to_end_at_toy_size(name, data, tmp_path):
    done = run_recipe(name, data, tmp_path / name)
    assert done.returncode == 0, done.stderr[-3000:]
    results = tmp_path / name / "results.md"
    assert set(ARMS[name]) <= set(table_arms(results)), results.read_text()
    assert "+ synthgen " in done.stderr  # every command is said before it runs: the log is the recipe
    if name == "amirrajab_spade_mr":
        assert "fid" in results.read_text().lower()
    if name == "habijan_pix2pix":  # a rerun reuses every finished step: nothing is trained again
        before = results.read_text()
        again = run_recipe(name, data, tmp_path / name)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "trained in" not in again.stderr and results.read_text() == before


def test_recipe_refuses_an_unknown_scale(data, tmp_path):
    env = os.environ | {"SCALE": "huge", "DATA": str(data), "OUT": str(tmp_path / "x")}
    done = subprocess.run(
        ["bash", str(RECIPES / "habijan_pix2pix.sh")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2 and "SCALE must be full or toy" in done.stderr
    assert not (tmp_path / "x").exists()
