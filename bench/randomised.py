"""Randomised generator benchmark: images drawn from 128 x 128 echo label maps, synthgen vs TorchIO.

Measured in one run, one core, alternating repeats (medians and paired ratios):

- ``synthgen``: the randomised generator as a build runs it (``Restyler`` of the echo preset: class
  intensities, speckle widening with depth, blur, resolution loss, bias field, gamma, contrast and the
  anti-aliased sector, parameters returned for ``meta/``), keys included, one batch of ``--batch`` maps;
  the same for the MR (Rician noise, no sector) and CT presets;
- ``synthgen kernel``: the kernel alone on class indices (no label lookup, no key derivation);
- ``synthgen appearance stage echo``: the milder stage that restyles a trained generator's images (here
  uniform noise in [-1, 1] stands for them), as a build runs it after the generator;
- ``torchio RandomLabelsToImage``: TorchIO's label-to-image draw alone (per-class Gaussian intensities),
  one map at a time, as its documentation shows;
- ``torchio pipeline``: RandomLabelsToImage, then RandomBlur, RandomBiasField, RandomNoise and
  RandomGamma: the nearest TorchIO equivalent of what synthgen draws (no speckle, no sector).

Maps are procedural apical echo label maps of the ``echo`` preset. torch runs on one thread, Numba on
one thread (``NUMBA_NUM_THREADS=1`` is set before import). Each repeat is timed twice: by the
process's CPU time (what one core does, the figure the target is judged on) and by the wall clock
(which, on a shared machine, also counts the time spent waiting for a core); both are recorded, with
the load average before and after the run.

    python bench/randomised.py --out bench/results/randomised.json   # pip install torchio first
    python bench/randomised.py --quick
"""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from machine import cpu_model  # bench/machine.py (scripts run as python bench/NAME.py)

from synthgen.inference import Restyler
from synthgen.kernels import appearance, warm_up
from synthgen.schemas import CAMUS, RANDOMISED, label_lut
from synthgen.schemas.build_config import preset_config
from synthgen.seeding import appearance_keys
from synthgen.sources import source_from_config

SIZE = 128


def echo_maps(n: int) -> np.ndarray:
    config = preset_config("echo")
    source = source_from_config(config.source, (SIZE, SIZE))
    rng = np.random.default_rng(0)
    return np.stack([source.draw(rng)[0] for _ in range(n)])


def rates(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """Images per second of CPU time (all the process's threads) and of wall time."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return n / (time.process_time() - cpu), n / (time.perf_counter() - wall)


def synthgen_runs(maps: np.ndarray) -> dict[str, Callable[[], object]]:
    keys = np.arange(len(maps))
    runs: dict[str, Callable[[], object]] = {}
    for preset in ("echo", "sa-mr", "ct"):
        config = preset_config(preset).randomised
        restyle = Restyler(CAMUS, config)
        runs[f"synthgen {preset}"] = lambda r=restyle: r(maps, appearance_keys(0, keys))
    stage = Restyler(CAMUS, preset_config("echo").appearance)
    base = np.random.default_rng(1).uniform(-1, 1, (len(maps), 1, *maps.shape[1:])).astype(np.float32)
    runs["synthgen appearance stage echo"] = lambda: stage(maps, appearance_keys(0, keys), base)
    indices = label_lut(CAMUS)[maps]
    ranges = np.array(RANDOMISED.ranges())
    runs["synthgen kernel echo"] = lambda: appearance(
        indices, appearance_keys(0, keys), ranges, num_classes=4, modality="echo", texture=True, sector=True
    )
    return runs


def torchio_runs(maps: np.ndarray) -> dict[str, Callable[[], object]]:
    import torch
    import torchio as tio

    torch.set_num_threads(1)
    subjects = [tio.Subject(label=tio.LabelMap(tensor=torch.from_numpy(m[None, :, :, None].astype(np.int64))))
                for m in maps]  # fmt: skip
    to_image = tio.RandomLabelsToImage(label_key="label", image_key="image")
    pipeline = tio.Compose(
        [
            to_image,
            tio.RandomBlur(std=(0, 1.5), include=["image"]),
            tio.RandomBiasField(coefficients=0.4, include=["image"]),
            tio.RandomNoise(std=(0, 0.1), include=["image"]),
            tio.RandomGamma(log_gamma=(-0.7, 0.7), include=["image"]),
        ]
    )
    torch.manual_seed(0)  # a benchmark's own process: TorchIO draws from torch's global generator
    return {
        "torchio RandomLabelsToImage": lambda: [to_image(s) for s in subjects],
        "torchio pipeline": lambda: [pipeline(s) for s in subjects],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=256, help="maps per synthgen call")
    p.add_argument("--torchio-n", type=int, default=64, help="maps per TorchIO repeat (it is slow)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default="bench/results/randomised.json")
    p.add_argument("--quick", action="store_true", help="a smoke test: few maps, two repeats")
    args = p.parse_args()
    if args.quick:
        args.batch, args.torchio_n, args.repeats = 32, 4, 2
    warm_up()
    maps = echo_maps(args.batch)
    runs = synthgen_runs(maps)
    for fn in runs.values():
        fn()  # compile or load the kernels
    sizes = dict.fromkeys(runs, len(maps))
    try:
        baselines = torchio_runs(maps[: args.torchio_n])
        for fn in baselines.values():
            fn()
        runs |= baselines
        sizes |= dict.fromkeys(baselines, args.torchio_n)
        skipped = None
    except ImportError as e:
        skipped = f"torchio not installed ({e})"
    load_before = os.getloadavg()
    raw: dict[str, list[float]] = {name: [] for name in runs}
    raw_wall: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):  # alternating, so that every method sees the same machine
        for name, fn in runs.items():
            cpu, wall = rates(fn, sizes[name])
            raw[name].append(cpu)
            raw_wall[name].append(wall)
    medians = {name: statistics.median(r) for name, r in raw.items()}
    medians_wall = {name: statistics.median(r) for name, r in raw_wall.items()}
    ratios, ratios_wall = {}, {}
    for base in ("torchio RandomLabelsToImage", "torchio pipeline"):
        if base in raw:
            for into, series in ((ratios, raw), (ratios_wall, raw_wall)):
                paired = [a / b for a, b in zip(series["synthgen echo"], series[base], strict=True)]
                into[f"synthgen echo / {base}"] = statistics.median(paired)
    result = {
        "benchmark": "randomised generator",
        "cpu": cpu_model(),
        "threads": 1,
        "size": [SIZE, SIZE],
        "batch": args.batch,
        "torchio_maps": args.torchio_n,
        "repeats": args.repeats,
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "clock": "images_per_s: process CPU time; images_per_s_wall: wall clock",
        "images_per_s_median": medians,
        "images_per_s_median_wall": medians_wall,
        "median_of_paired_ratios": ratios,
        "median_of_paired_ratios_wall": ratios_wall,
        "target_met": {"synthgen_echo_ge_10000_per_s": medians["synthgen echo"] >= 10_000},
        "skipped": skipped,
        "raw": raw,
        "raw_wall": raw_wall,
    }
    if not args.quick:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "cpu",
                    "load_average_before_after",
                    "images_per_s_median",
                    "images_per_s_median_wall",
                    "median_of_paired_ratios",
                )
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
