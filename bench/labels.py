"""Labels-stage benchmark: label maps per second of one build worker (source, deformation and gate, on
one thread), for each preset, against the same stage of an earlier revision in the same run.

The earlier revision (``--baseline``, a git revision; default the one before the labels-stage work of
issue 20) is checked out into a temporary worktree and measured by the same worker code with that
tree first on ``sys.path``; rounds alternate between the two trees, so that the machine's load (a
shared VM's varies from minute to minute) falls on both alike. Each round is a fresh process: warm-up
(kernel cache loads; the baseline tree's first round compiles its kernels, outside the timing), then
``--n`` samples timed in CPU time and wall time. Reported: the median over rounds of each tree, their
ratio, and whether the maps are the same bytes (a digest of every map and its metadata).

    python bench/labels.py --out bench/results/labels.json
    python bench/labels.py --quick            # one small round per tree, a smoke test
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model

REPO = Path(__file__).resolve().parent.parent
BASELINE = "2b1b573"  # main before the labels-stage work of issue 20
PRESETS = ("echo", "sa-mr", "ct")


def _worker(preset: str, n: int) -> dict:
    """One round in this process (the tree first on sys.path): warm-up, then n samples timed."""
    import numpy as np

    import synthgen
    from synthgen.engine import pipeline
    from synthgen.schemas.build_config import load_build_config

    config = load_build_config(None, {"n": n, "seed": 0, "preset": preset})
    pipeline.label_source(config)
    pipeline.draw_labels(config, np.arange(n, n + 32))  # every kernel of the stage loaded or compiled
    cpu, wall = time.process_time(), time.perf_counter()
    drawn = pipeline.draw_labels(config, np.arange(n))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    digest = hashlib.sha256(drawn.labels.tobytes())
    for name, values in sorted(drawn.meta().items()):
        digest.update(name.encode() + np.ascontiguousarray(values).tobytes())
    return {
        "cpu_maps_per_s": n / cpu,
        "wall_maps_per_s": n / wall,
        "digest": digest.hexdigest()[:16],
        "tree": str(Path(synthgen.__file__).resolve().parent.parent),
    }


def _round(tree: Path, preset: str, n: int) -> dict:
    env = os.environ | {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tree)}
    code = (
        f"import sys; sys.path.insert(0, {str(tree)!r}); sys.path.insert(1, {str(Path(__file__).parent)!r});"
        f"import json, labels; print(json.dumps(labels._worker({preset!r}, {n})))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tree)
    if out.returncode:
        raise SystemExit(f"a round in {tree} failed:\n{out.stderr[-2000:]}")
    run = json.loads(out.stdout.strip().splitlines()[-1])
    if Path(run.pop("tree")) != tree.resolve():
        raise SystemExit(f"the round meant for {tree} imported synthgen from elsewhere")
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1024, help="samples per round")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per tree and preset")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--baseline", default=BASELINE, help="git revision to compare with")
    ap.add_argument("--quick", action="store_true", help="one round of 64 samples per tree")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    n, rounds = (64, 1) if args.quick else (args.n, args.rounds)
    presets = [p for p in args.presets.split(",") if p]
    result: dict = {
        "benchmark": "labels",
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "n": n,
        "rounds": rounds,
        "baseline": args.baseline,
        "current": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip(),
        "presets": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(base), args.baseline], cwd=REPO, check=True
        )
        try:
            for preset in presets:
                runs: dict[str, list[dict]] = {"current": [], "baseline": []}
                for r in range(rounds):
                    order = [("current", REPO), ("baseline", base)]
                    for name, tree in order if r % 2 == 0 else order[::-1]:
                        runs[name].append(_round(tree, preset, n))
                        print(
                            f"{preset} {name} round {r}: {runs[name][-1]['cpu_maps_per_s']:.0f} maps/s",
                            flush=True,
                        )
                median = {
                    name: {
                        key: statistics.median(run[key] for run in rs)
                        for key in ("cpu_maps_per_s", "wall_maps_per_s")
                    }
                    for name, rs in runs.items()
                }
                result["presets"][preset] = {
                    "median": median,
                    "speed_up_cpu": median["current"]["cpu_maps_per_s"]
                    / median["baseline"]["cpu_maps_per_s"],
                    "speed_up_wall": median["current"]["wall_maps_per_s"]
                    / median["baseline"]["wall_maps_per_s"],
                    "same_maps": len({run["digest"] for rs in runs.values() for run in rs}) == 1,
                    "raw": runs,
                }
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=REPO, check=False)
    result["load_average_at_end"] = os.getloadavg()
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
