"""Generator benchmark: images per second for each available inference backend and batch size, same run.

Default checkpoint: the bundled generator (synthgen/assets/generators/...) if present, else a randomly
initialised default SPADE (width 16, 128 x 128, CAMUS schema). Medians over repeated calls after a
warm-up call per batch size (which also triggers torch.compile's compilations, not timed); the backends
take turns within each repeat so that they share whatever load other processes put on the cores. Ratios are
against torch eager and against ONNX Runtime FP32 at the same batch size and thread count; ``--threads``
takes a list, each thread count measured in its own block of the same run.

Every backend's images are compared with ONNX Runtime FP32's on the same seeded label maps (PSNR on the
0..255 scale; maps of the preset's procedural source where it draws the checkpoint's schema). INT8 is
calibrated and gated on maps of that source too.

    python bench/generator.py --threads 2 --out bench/results/generator.json
    python bench/generator.py --ort-variants     # also lower ONNX Runtime optimisation levels
    python bench/generator.py --threads 1,2 --batch-sizes 32 --backends onnxruntime,onnxruntime-int8 \
        --out bench/results/generator_int8.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from synthgen.inference.backends import OnnxRuntimeGenerator, open_generator
from synthgen.inference.quantize import BF16_FLAGS, VNNI_FLAGS, CalibrationSet, blob_maps, cpu_flags
from synthgen.inference.tensorrt import tensorrt_status
from synthgen.kernels import psnr
from synthgen.schemas import CAMUS
from synthgen.schemas.generator_spec import default_generator_path
from synthgen.schemas.sources import ProceduralSourceConfig
from synthgen.sources import source_from_config

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1] / "tests")
)  # the random-checkpoint helper of the tests
from helpers.checkpoints import random_checkpoint
from machine import cpu_model


def label_maps(values: tuple[int, ...], n: int, size: int, seed: int = 0) -> np.ndarray:
    """Blocky maps of the schema's values (8 x 8 cells): every class present, like real maps."""
    rng = np.random.default_rng(seed)
    cells = rng.choice(np.array((0, *values), np.uint8), size=(n, -(-size // 8), -(-size // 8)))
    return cells.repeat(8, axis=1).repeat(8, axis=2)[:, :size, :size]


ROUNDS = 3


def interleaved_times(generators, labels: np.ndarray, styles: np.ndarray | None, repeats: int) -> dict:
    """Seconds per call of each generator, in back-to-back calls as a pipeline makes them. The
    generators take turns in ``ROUNDS`` rounds, so all of them see the same drift of the load from
    other processes on these shared cores; each turn starts with an untimed call, which absorbs what
    the previous backend left behind (torch's OpenMP threads spin for a while after each call and
    would otherwise take a core from the next backend) and, the first time, torch.compile's
    compilation for a new batch size."""
    times: dict[str, list[float]] = {label: [] for label, _ in generators}
    per_round = max(1, -(-repeats // ROUNDS))
    for _ in range(ROUNDS):
        for label, gen in generators:
            gen(labels, styles)
            for _ in range(per_round):
                t = time.perf_counter()
                gen(labels, styles)
                times[label].append(time.perf_counter() - t)
    return times


def ort_variant(onnx_path: Path, level: str, threads: int, max_batch: int):
    """An ONNX Runtime generator with a lower graph optimisation level (investigation). Spinning is not
    offered: a spinning session would slow the torch backends measured in turn with it (onnxruntime #13808)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return OnnxRuntimeGenerator(
        onnx_path, threads=threads, max_batch=max_batch, cuda=False, reason="variant", options=options
    )


def source_maps(spec) -> CalibrationSet:
    """Label maps of the preset's procedural source where it draws the checkpoint's schema (what a
    build draws), else the seeded ellipses of :func:`blob_maps`."""
    source = source_from_config(ProceduralSourceConfig(), (spec.image_size, spec.image_size))
    if source.schema != spec.schema:
        return blob_maps(spec)
    return CalibrationSet(
        f"procedural-apical-{spec.image_size}", lambda n, seed: source.draw_batch(seed, range(n)).labels
    )


def open_all(runs, checkpoint, threads: int, max_b: int, calibration, ort_variants: bool) -> list:
    generators = []
    for name, kwargs in runs:
        t = time.perf_counter()
        extra = {"calibration": calibration} if kwargs["backend"] == "onnxruntime-int8" else {}
        gen = open_generator(checkpoint, threads=threads, max_batch=max_b, **kwargs, **extra)
        print(
            f"{name} ({threads} threads): opened in {time.perf_counter() - t:.1f} s on {gen.device} ({gen.reason})"
        )
        generators.append((name, gen))
        if name == "onnxruntime" and ort_variants:
            for level in ("ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED"):
                label = f"onnxruntime[{level.removeprefix('ORT_ENABLE_').lower()}]"
                generators.append((label, ort_variant(gen.path, level, threads, max_b)))
    return generators


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="Generator checkpoint folder. Default: bundled, else random SPADE.")
    p.add_argument("--size", type=int, default=128, help="Image size of the random SPADE.")
    p.add_argument("--threads", default="2", help="Thread counts, comma-separated (each its own block).")
    p.add_argument("--batch-sizes", default="1,8,32,64")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--backends", default="torch,torch-compile,onnxruntime,onnxruntime-int8,tensorrt")
    p.add_argument("--psnr-maps", type=int, default=64, help="Seeded label maps the PSNR is measured on.")
    p.add_argument("--ort-variants", action="store_true", help="Also lower ORT graph optimisation levels.")
    p.add_argument("--out", default="bench/results/generator.json")
    args = p.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    thread_counts = [int(t) for t in args.threads.split(",")]
    os.environ.setdefault("SYNTHGEN_CACHE_DIR", tempfile.mkdtemp(prefix="synthgen-bench-cache-"))

    checkpoint = Path(args.checkpoint) if args.checkpoint else default_generator_path()
    source = "given" if args.checkpoint else "bundled"
    if not (checkpoint / "generator.json").is_file():
        checkpoint = random_checkpoint(
            tempfile.mkdtemp(prefix="synthgen-bench-"), "spade", CAMUS, image_size=args.size, seed=0
        )
        source = "random default SPADE"

    wanted = args.backends.split(",")
    trt_ok, trt_why = tensorrt_status()
    if "tensorrt" in wanted and not trt_ok:
        print(f"skipping tensorrt: {trt_why}")
        wanted.remove("tensorrt")
    flags = cpu_flags()
    bf16 = sorted(BF16_FLAGS & flags)
    bf16_note = (
        f"CPU has {bf16} but synthgen has no BF16 backend yet"
        if bf16
        else "no BF16 path: this CPU has neither avx512_bf16 nor AMX (amx_bf16)"
    )
    print(bf16_note)
    runs: list[tuple[str, dict]] = [(b, {"backend": b}) for b in wanted]
    if trt_ok and "tensorrt" in wanted:
        runs.append(("tensorrt-fp16", {"backend": "tensorrt", "fp16": True}))

    load_before = os.getloadavg()
    results = []
    max_b = max(batch_sizes)
    spec = open_generator(checkpoint, backend="onnxruntime").spec
    calibration = source_maps(spec)
    quality_maps = calibration.draw(args.psnr_maps, 1000)  # seeds the calibration and gate never use
    quality_z = (
        np.random.default_rng(1000).standard_normal((args.psnr_maps, spec.style_dim), dtype=np.float32)
        if spec.style_dim
        else None
    )
    quality: dict[str, float | None] = {}
    for threads in thread_counts:
        generators = open_all(runs, checkpoint, threads, max_b, calibration, args.ort_variants)
        if not quality:
            by_name = dict(generators)
            reference = by_name["onnxruntime"](quality_maps, quality_z) if "onnxruntime" in by_name else None
            for label, g in generators:
                if reference is not None:
                    measured = psnr(
                        g(quality_maps, quality_z), reference, data_range=2.0
                    )  # images in [-1, 1]
                    quality[label] = None if math.isinf(measured) else measured  # None: identical
                    print(f"  {label:34s} PSNR vs ONNX Runtime FP32: {measured:.2f} dB")
        for b in batch_sizes:
            labels = label_maps(spec.schema.values, b, spec.image_size, seed=b)
            z = (
                np.random.default_rng(b).standard_normal((b, spec.style_dim), dtype=np.float32)
                if spec.style_dim
                else None
            )
            times = interleaved_times(generators, labels, z, args.repeats)
            for label, g in generators:
                median = statistics.median(times[label])
                results.append(
                    {
                        "backend": label,
                        "device": g.device,
                        "threads": threads,
                        "batch": b,
                        "median_s": median,
                        "images_per_s": b / median,
                        "times_s": times[label],
                        "psnr_vs_onnxruntime_fp32_db": quality.get(label),
                    }
                )
                print(
                    f"  {label:34s} {threads} thr batch {b:3d}: {b / median:8.2f} images/s "
                    f"(median of {len(times[label])})"
                )
        del generators

    ratios: dict[str, dict[str, dict[str, float]]] = {}  # images/s over the reference's, by backend
    for base in ("torch", "onnxruntime"):
        ref = {(r["threads"], r["batch"]): r["images_per_s"] for r in results if r["backend"] == base}
        for r in results:
            key = (r["threads"], r["batch"])
            if key in ref:
                ratios.setdefault(f"vs_{base}", {}).setdefault(r["backend"], {})[f"t{key[0]}_b{key[1]}"] = (
                    r["images_per_s"] / ref[key]
                )
    # paired: call i of each backend ran in the same turn of the same round, so the median of the per-call
    # ratios cancels most of the load that other processes put on these shared cores
    paired: dict[str, dict[str, float]] = {}
    fp32_times = {(r["threads"], r["batch"]): r["times_s"] for r in results if r["backend"] == "onnxruntime"}
    for r in results:
        key = (r["threads"], r["batch"])
        if key in fp32_times:
            per_call = [f / t for f, t in zip(fp32_times[key], r["times_s"], strict=True)]
            paired.setdefault(r["backend"], {})[f"t{key[0]}_b{key[1]}"] = statistics.median(per_call)
    ratios["paired_vs_onnxruntime"] = paired
    for base, by_backend in ratios.items():
        for backend, by_key in by_backend.items():
            print(f"{backend:36s} {base}: " + "  ".join(f"{k}={v:.2f}" for k, v in by_key.items()))

    report = {
        "benchmark": "generator images per second by backend, thread count and batch size",
        "checkpoint": str(checkpoint),
        "checkpoint_source": source,
        "arch": spec.arch,
        "model": dict(spec.model),
        "image_size": spec.image_size,
        "threads": thread_counts,
        "repeats": args.repeats,
        "machine": {
            "cpu_model": cpu_model(),
            "vnni": sorted(VNNI_FLAGS & flags),
            "bf16": bf16,
            "avx512f": "avx512f" in flags,
            "avx2": "avx2" in flags,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_before_after": [load_before, os.getloadavg()],  # others' work on shared cores
        },
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__},
        "tensorrt": trt_why,
        "bf16": bf16_note,
        "quality": {
            "reference": "onnxruntime (FP32)",
            "maps": args.psnr_maps,
            "label_maps": calibration.name,
            "psnr_db": quality,
        },
        "results": results,
        "ratios": ratios,
        "targets": {
            "onnxruntime_cpu_vs_torch_eager": 1.5,
            "tensorrt_fp16_vs_torch_eager_fp32_gpu": 4.0,
            "int8_vs_onnxruntime_fp32_on_vnni_or_amx": 2.0,
            "int8_min_psnr_db": 35.0,
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
