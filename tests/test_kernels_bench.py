"""bench/kernels.py --quick runs end to end and writes its JSON report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "kernels.py"


@pytest.mark.slow
def test_kernel_benchmark_quick(tmp_path):
    out = tmp_path / "kernels.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--source", "phantom", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    synthgen = report["deform"]["synthgen"]
    assert synthgen["one_core"] > 0 and synthgen["all_cores"] > 0
    # --quick: 2 repeats, each a paired one-core / all-cores timing of the deformation and of the copy ceiling
    assert len(synthgen["scaling_per_repeat"]) == len(synthgen["copy_scaling_per_repeat"]) == 2
    assert synthgen["copy_scaling"] > 0 and synthgen["copy_maps_per_s"]["one_core"] > 0
    scipy = report["deform"]["baselines"]["scipy"]
    assert scipy["status"] == "ok" and scipy["ratio_one_core"] > 1
    assert {"monai", "torchio", "opencv"} <= set(report["deform"]["baselines"])
    assert all(b["status"] in ("ok", "skipped") for b in report["deform"]["baselines"].values())
    assert report["dilation"]["synthgen_one_core"] > 0 and report["dilation"]["scipy_per_class"] > 0
