"""Paired comparisons between any arms of ``synthgen evaluate utility`` runs, across run folders.

``evaluate utility`` pairs every arm with ``real`` of its own run. The usefulness questions ask for other
pairs too: 10% real + synthetic against 10% real alone, fine-tuning against real trained as many steps,
``light`` against ``strong`` augmentation (two runs, since the augmentation is per run). This script reads
the arms' ``result.json`` (one per seed), checks that they were scored on the same test images (and under
the same shifts), and gives each arm's mean Dice and the difference from a reference arm paired by seed and
image, with 95% bootstrap intervals from the same resamples as the table (the library's statistics).

    python bench/utility_compare.py --arm real=uc/arms/real --arm light=ucl/arms/real \\
        --arm real10=uc/arms/real10 --arm real10+synthetic=uc/arms/real10_plus_synthetic \\
        --pair light:real --pair real10+synthetic:real10 --seeds 0 1 2 --json compare.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from synthgen.evaluation import read_result
from synthgen.evaluation.utility import dice_array
from synthgen.evaluation.utility_stats import bootstrap_mean, draw_resamples


def load(folder: str, seeds: list[int]) -> list[dict]:
    """The result.json of every seed of one arm folder (``OUT/arms/<arm>``)."""
    records = [read_result(Path(folder) / f"seed{s}") for s in seeds]
    missing = [s for s, r in zip(seeds, records, strict=True) if not r]
    if missing:
        sys.exit(f"Expected a finished result.json for seeds {missing} under {folder}. There is none.")
    return records


def compare(arms: dict[str, list[dict]], pairs: list[tuple[str, str]], resamples: int) -> dict:
    """Each arm's mean Dice and each pair's paired difference (unshifted, and of the mean drop under shift)."""
    first = next(iter(arms.values()))[0]
    classes = list(first["summary"])
    indices = {tuple(r["test"]["indices"]) for rs in arms.values() for r in rs}
    if len(indices) != 1:
        sys.exit("Expected every arm scored on the same test images. Got several sets.")
    dice = {a: dice_array(rs, classes).mean(axis=-1) for a, rs in arms.items()}
    shifts = [set(r.get("shift", {})) for rs in arms.values() for r in rs]
    names = sorted(shifts[0]) if shifts[0] and all(s == shifts[0] for s in shifts) else []
    drop = {
        a: dice[a] - np.mean([dice_array(rs, classes, s).mean(axis=-1) for s in names], axis=0)
        for a, rs in arms.items()
    }
    boot = draw_resamples(*dice[next(iter(dice))].shape, resamples)
    out = {"classes": classes, "shifts": names, "arms": {}, "pairs": {}}
    for a in arms:
        out["arms"][a] = {"dice": bootstrap_mean(dice[a], boot).to_dict()}
        if names:
            out["arms"][a]["mean_drop"] = bootstrap_mean(drop[a], boot).to_dict()
    for a, b in pairs:
        entry = {"dice_diff": bootstrap_mean(dice[a] - dice[b], boot).to_dict()}
        if names:
            entry["mean_drop_diff"] = bootstrap_mean(drop[a] - drop[b], boot).to_dict()
        out["pairs"][f"{a} - {b}"] = entry
    return out


def table(result: dict) -> str:
    def ci(e: dict) -> str:
        return f"{e['mean']:+.4f} [{e['ci'][0]:+.4f}, {e['ci'][1]:+.4f}]"

    lines = ["| comparison | mean Dice difference [95% CI] | mean drop under shift, difference [95% CI] |"]
    lines.append("| --- | --- | --- |")
    for name, e in result["pairs"].items():
        lines.append(
            f"| {name} | {ci(e['dice_diff'])} | {ci(e['mean_drop_diff']) if 'mean_drop_diff' in e else ''} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arm", action="append", default=[], help="NAME=FOLDER (OUT/arms/<arm>), repeatable")
    p.add_argument("--pair", action="append", default=[], help="A:B, the difference A - B; repeatable")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    arms = dict(a.split("=", 1) for a in args.arm if "=" in a)
    pairs = [tuple(x.split(":", 1)) for x in args.pair]
    if len(arms) != len(args.arm) or any(len(x) != 2 or not set(x) <= set(arms) for x in pairs):
        sys.exit("Expected --arm NAME=FOLDER and --pair A:B naming two of those arms.")
    result = compare({a: load(f, args.seeds) for a, f in arms.items()}, pairs, args.resamples)
    result |= {"seeds": args.seeds, "folders": arms}
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
