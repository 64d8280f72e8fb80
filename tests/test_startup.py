"""Start-up: a first-run compilation says what it is doing instead of looking like a hang, and a
warm kernel cache is not warmed again."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from synthgen.engine.pipeline import notice_if_slow
from synthgen.kernels import warmup


def test_a_slow_block_is_announced_and_timed(capsys):
    with notice_if_slow("compiling the kernels", after_s=0.05):
        time.sleep(0.3)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "synthgen: compiling the kernels ..." and err[1].startswith("synthgen: ... done in ")


def test_a_quick_block_says_nothing_even_when_it_fails(capsys):
    with notice_if_slow("compiling the kernels", after_s=0.5):
        pass
    try:
        with notice_if_slow("compiling the kernels", after_s=0.5):
            raise KeyError("boom")
    except KeyError:
        pass
    time.sleep(0.7)  # a timer left running would speak now
    assert capsys.readouterr().err == ""


def test_ensure_warm_warms_once_then_trusts_the_marker(tmp_path, monkeypatch):
    calls = []
    marker = tmp_path / "cache" / "synthgen-kernels-warm-abc"
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "synthgen-kernels-warm-old").touch()  # a marker of older kernels
    monkeypatch.setattr(warmup, "warm_marker", lambda: marker)
    monkeypatch.setattr(warmup, "warm_up", lambda: calls.append(1) or 0.0)
    assert warmup.ensure_warm() is True and calls == [1]
    assert sorted(p.name for p in marker.parent.iterdir()) == [marker.name]  # the stale one went
    assert warmup.ensure_warm() is False and calls == [1]


def test_a_failed_warm_up_leaves_no_marker(tmp_path, monkeypatch):
    marker = tmp_path / "synthgen-kernels-warm-abc"
    monkeypatch.setattr(warmup, "warm_marker", lambda: marker)

    def broken() -> float:
        raise RuntimeError("compiler crashed")

    monkeypatch.setattr(warmup, "warm_up", broken)
    try:
        warmup.ensure_warm()
    except RuntimeError:
        pass
    assert not marker.exists()


def test_the_marker_sits_in_numbas_cache_folder_and_changes_with_the_kernels(tmp_path, monkeypatch):
    marker = warmup.warm_marker()
    assert marker is not None and marker.name.startswith("synthgen-kernels-warm-")
    assert marker.parent == Path(warmup.__file__).parent / "__pycache__" or marker.parent.is_dir()
    copy = tmp_path / "kernels"
    shutil.copytree(Path(warmup.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(warmup, "__file__", str(copy / "warmup.py"))
    same = warmup._cache_key()
    assert same == marker.name.removeprefix("synthgen-kernels-warm-")
    with (copy / "warp.py").open("a") as f:
        f.write("\n# an edited kernel\n")
    assert warmup._cache_key() != same


def test_a_build_imports_nothing_it_does_not_use(tmp_path):
    """Start-up is mostly imports: a build with the bundled generator must not pay for torch (ONNX
    Runtime runs the generator), scipy.ndimage (the kernels label components) or the trainers."""
    heavy = ["torch", "scipy.ndimage", "synthgen.trainers", "synthgen.evaluation", "distributed"]
    code = (
        "import json, sys\n"
        "from synthgen.cli import cli\n"
        f"cli(['build-dataset', '--out', {str(tmp_path / 's.zarr')!r}, '--n', '16', '--quiet'],"
        " standalone_mode=False)\n"
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
