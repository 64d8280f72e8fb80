"""The usefulness table over several seeds and synthetic stores, with bootstrap intervals.

Runs ``synthgen evaluate utility`` (the README's protocol: U-Net width 16 at 64 x 64, 1000 steps, test = the
CAMUS patients whose number % 10 == 0) for every seed: the ``real`` arm once, and the ``synthetic`` and
``real+synthetic`` arms for every synthetic store, two runs at a time on one thread each. Interrupted runs
continue where they stopped (each arm is resumable). Then, per arm and class: the mean Dice over test
images and seeds with a 95% bootstrap interval (test images resampled, the same resample for every seed),
and the paired difference from the ``real`` arm of the same seed on the same images, with its interval.

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
import csv
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from machine import cpu_model  # bench/machine.py (scripts run as python bench/NAME.py)

BOOTSTRAP = 2000


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
    common = ["--threads", "1", "--no-progress", "--steps", str(args.steps)]
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


def per_image_dice(folder: Path, arm: str) -> dict[str, np.ndarray]:
    """Per class: the Dice of every test image (in test-store order) of one arm's run."""
    path = folder / "arms" / arm.replace("+", "_plus_") / "eval" / "per_sample.csv"
    with path.open() as f:
        rows = list(csv.DictReader(f))
    classes = [k[: -len("_dice")] for k in rows[0] if k.endswith("_dice")]
    return {c: np.array([float(r[f"{c}_dice"]) for r in rows]) for c in classes}


def interval(values: np.ndarray, resamples: np.ndarray) -> tuple[float, float, float]:
    """(mean, 2.5%, 97.5%) of ``values`` (seeds, images): images resampled, seeds kept."""
    means = values[:, resamples].mean(axis=(0, 2))
    return float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def aggregate(args) -> dict:
    runs = Path(args.runs)
    arms = {"real": [(runs / f"s{s}" / "real", "real") for s in args.seeds]}
    for name, _ in args.synth:
        for arm in ("synthetic", "real+synthetic"):
            arms[f"{name}: {arm}"] = [(runs / f"s{s}" / name, arm) for s in args.seeds]
    dice = {a: [per_image_dice(folder, arm) for folder, arm in runs_] for a, runs_ in arms.items()}
    classes = list(dice["real"][0])
    n = len(dice["real"][0][classes[0]])
    resamples = np.random.default_rng(0).integers(0, n, size=(BOOTSTRAP, n))
    result = {}
    for arm, per_seed in dice.items():
        entry = {}
        for c in [*classes, "mean"]:
            pick = (
                (lambda d: np.mean([d[k] for k in classes], axis=0)) if c == "mean" else (lambda d, c=c: d[c])
            )
            values = np.stack([pick(d) for d in per_seed])
            real = np.stack([pick(d) for d in dice["real"]])
            mean, lo, hi = interval(values, resamples)
            d_mean, d_lo, d_hi = interval(values - real, resamples)
            entry[c] = {"mean": mean, "ci": [lo, hi], "diff_vs_real": d_mean, "diff_ci": [d_lo, d_hi]}
        result[arm] = entry
    return {"classes": classes, "test_images": n, "seeds": args.seeds, "arms": result}


def markdown(summary: dict) -> str:
    classes = [*summary["classes"], "mean"]
    head = ["arm", *(f"{c} Dice [95% CI]" for c in classes), "mean - real [95% CI]"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for arm, entry in summary["arms"].items():
        cells = [arm] + [
            f"{entry[c]['mean']:.3f} [{entry[c]['ci'][0]:.3f}, {entry[c]['ci'][1]:.3f}]" for c in classes
        ]
        m = entry["mean"]
        cells.append(
            ""
            if arm == "real"
            else f"{m['diff_vs_real']:+.4f} [{m['diff_ci'][0]:+.4f}, {m['diff_ci'][1]:+.4f}]"
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
    summary = aggregate(args) | {
        "cpu": cpu_model(),
        "real": args.real,
        "synth": dict(args.synth),
        "steps": args.steps,
    }
    table = markdown(summary)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    if args.md:
        command = "python bench/utility_seeds.py " + " ".join(sys.argv[1:])
        Path(args.md).write_text(f"Command: `{command}`\n\nCPU: {summary['cpu']}\n\n{table}\n")


if __name__ == "__main__":
    main()
