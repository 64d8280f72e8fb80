"""The usefulness table over several seeds and synthetic stores, with bootstrap intervals.

Runs ``synthgen evaluate utility`` (the README's protocol: U-Net width 16 at 64 x 64, 1000 steps, test = the
CAMUS patients whose number % 10 == 0) once per seed (``--seed S --seeds 1``: each seed with its own
validation split, as before): the ``real`` arm once, and the ``synthetic`` and ``real+synthetic`` arms for
every synthetic store, two runs at a time on one thread each. Interrupted runs continue where they stopped
(each arm and seed is resumable). Then the library's statistics (``synthgen.evaluation.arm_statistics``,
as ``evaluate utility --seeds`` computes them): per arm and class, the mean Dice over test images and seeds
with a 95% bootstrap interval (seeds and images resampled), and the paired difference from the ``real``
arm of the same seed on the same images, with its interval.

    synthgen ingest ../shared/data/camus camus.zarr
    synthgen build-dataset --out new.zarr --n 2000                       # the default: GAN + appearance
    synthgen build-dataset --out old.zarr --n 2000 --no-appearance       # the GAN alone
    synthgen build-dataset --out rand.zarr --n 2000 --generator randomised
    python bench/utility_seeds.py --real camus.zarr --synth new=new.zarr --synth old=old.zarr \\
        --synth randomised=rand.zarr --seeds 0 1 2 --runs utility_runs \\
        --json bench/results/utility_seeds.json --md bench/results/utility_seeds.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from machine import cpu_model  # bench/machine.py (scripts run as python bench/NAME.py)

from synthgen.evaluation import arm_folder, arm_statistics, read_result, utility_table


def run(job: tuple[str, list[str]]) -> str:
    """Run one ``synthgen evaluate utility`` job; its output goes to the run folder's log."""
    folder, args = job
    Path(folder).mkdir(parents=True, exist_ok=True)
    with open(Path(folder) / "run.log", "a") as log:
        cmd = [sys.executable, "-m", "synthgen.cli", "evaluate", "utility", *args]
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    return folder


def jobs(args) -> list[tuple[str, list[str]]]:
    """The real arm of every seed first, then each synthetic store's arms, seed by seed."""
    common = ["--threads", "1", "--no-progress", "--steps", str(args.steps), "--seeds", "1"]
    out = []
    for seed in args.seeds:
        folder = f"{args.runs}/s{seed}/real"
        out.append((folder, [args.real, folder, "--arms", "real", "--seed", str(seed), *common]))
    for name, url in args.synth:
        for seed in args.seeds:
            folder = f"{args.runs}/s{seed}/{name}"
            arms = ["--arms", "synthetic,real+synthetic", "--synth", url]
            out.append((folder, [args.real, folder, *arms, "--seed", str(seed), *common]))
    return out


def records(args) -> dict[str, list[dict]]:
    """Every arm's result.json per seed (in seed order): real from its own runs, the synthetic arms of each
    store from that store's runs."""
    runs = Path(args.runs)
    out = {"real": [read_result(arm_folder(runs / f"s{s}" / "real", "real", s)) for s in args.seeds]}
    for name, _ in args.synth:
        for arm in ("synthetic", "real+synthetic"):
            out[f"{name}: {arm}"] = [
                read_result(arm_folder(runs / f"s{s}" / name, arm, s)) for s in args.seeds
            ]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real", required=True)
    p.add_argument("--synth", action="append", default=[], help="NAME=STORE, repeatable")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--runs", default="utility_runs")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--json", default=None)
    p.add_argument("--md", default=None)
    args = p.parse_args()
    args.synth = [tuple(s.split("=", 1)) for s in args.synth]
    if any(len(s) != 2 for s in args.synth):
        sys.exit("Expected --synth NAME=STORE.")
    for _, url in [("real", args.real), *args.synth]:
        if not Path(url).exists():
            sys.exit(f"Expected a store at {url}. There is none.")
    with ThreadPoolExecutor(args.parallel) as pool:
        for folder in pool.map(run, jobs(args)):
            print("done", folder, flush=True)
    found = records(args)
    classes = list(found["real"][0]["summary"])
    stats = arm_statistics(found, classes)
    meta = {arm: {k: rs[0][k] for k in ("augment", "real_train_samples")} for arm, rs in found.items()}
    table = utility_table(stats, meta, args.seeds)
    summary = stats.to_dict() | {
        "cpu": cpu_model(),
        "real": args.real,
        "synth": dict(args.synth),
        "steps": args.steps,
        "seeds_used": args.seeds,
    }
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    if args.md:
        command = "python bench/utility_seeds.py " + " ".join(sys.argv[1:])
        Path(args.md).write_text(f"Command: `{command}`\n\nCPU: {summary['cpu']}\n\n{table}\n")


if __name__ == "__main__":
    main()
