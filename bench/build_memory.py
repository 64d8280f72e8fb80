"""Peak memory of `synthgen build-dataset` (coordinator and worker processes) at 10,000 and 100,000 samples.

Each build runs as a child process on the defaults (bundled generator, 128 x 128, 2 local processes); the figure is the
largest resident set of any process the build started (``RUSAGE_CHILDREN``, cumulative, so the second figure is the
maximum over both builds). Memory that stays flat from 10x fewer samples shows nothing grows with the sample count.

    python bench/build_memory.py --out bench/results/build_memory.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000")
    p.add_argument("--out", default="bench/results/build_memory.json")
    args = p.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as d:
        for n in map(int, args.sizes.split(",")):
            out = str(Path(d) / f"mem{n}.zarr")
            t = time.perf_counter()
            cmd = [
                sys.executable,
                "-m",
                "synthgen.cli",
                "build-dataset",
                "--out",
                out,
                "--n",
                str(n),
                "--quiet",
            ]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            results[n] = {
                "seconds": time.perf_counter() - t,
                "samples_per_s": n / (time.perf_counter() - t),
                "peak_rss_mb_any_process": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            }
            print(n, results[n], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
