"""Generator benchmark: images per second for each available inference backend and batch size, same run.

Default checkpoint: the bundled generator (synthgen/assets/generators/...) if present, else a randomly
initialised default SPADE (width 16, 128 x 128, CAMUS schema). Medians over repeated calls after a
warm-up call per batch size (which also triggers torch.compile's compilations, not timed); the backends
take turns within each repeat so that they share whatever load other processes put on the cores. Ratios are
against torch eager at the same batch size.

    python bench/generator.py --threads 2 --out bench/results/generator.json
    python bench/generator.py --ort-variants     # also lower ONNX Runtime optimisation levels
"""

from __future__ import annotations

import argparse
import json
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
from synthgen.inference.tensorrt import tensorrt_status
from synthgen.schemas import CAMUS
from synthgen.schemas.generator_spec import default_generator_path

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1] / "tests")
)  # the random-checkpoint helper of the tests
from helpers.checkpoints import random_checkpoint


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="Generator checkpoint folder. Default: bundled, else random SPADE.")
    p.add_argument("--size", type=int, default=128, help="Image size of the random SPADE.")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-sizes", default="1,8,32,64")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--backends", default="torch,torch-compile,onnxruntime,tensorrt")
    p.add_argument("--ort-variants", action="store_true", help="Also lower ORT graph optimisation levels.")
    p.add_argument("--out", default="bench/results/generator.json")
    args = p.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
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
    runs: list[tuple[str, dict]] = [(b, {"backend": b}) for b in wanted]
    if trt_ok and "tensorrt" in wanted:
        runs.append(("tensorrt-fp16", {"backend": "tensorrt", "fp16": True}))

    load_before = os.getloadavg()
    results, generators = [], []
    max_b = max(batch_sizes)
    for name, kwargs in runs:
        t = time.perf_counter()
        gen = open_generator(checkpoint, threads=args.threads, max_batch=max_b, **kwargs)
        print(f"{name}: opened in {time.perf_counter() - t:.1f} s on {gen.device} ({gen.reason})")
        generators.append((name, gen))
        if name == "onnxruntime" and args.ort_variants:
            for level in ("ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED"):
                label = f"onnxruntime[{level.removeprefix('ORT_ENABLE_').lower()}]"
                generators.append((label, ort_variant(gen.path, level, args.threads, max_b)))
    spec = generators[0][1].spec
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
                    "batch": b,
                    "median_s": median,
                    "images_per_s": b / median,
                    "times_s": times[label],
                }
            )
            print(f"  {label:34s} batch {b:3d}: {b / median:8.2f} images/s (median of {args.repeats})")

    eager = {r["batch"]: r["images_per_s"] for r in results if r["backend"] == "torch"}
    ratios: dict[str, dict[str, float]] = {}
    for r in results:
        if r["batch"] in eager:
            ratios.setdefault(r["backend"], {})[str(r["batch"])] = r["images_per_s"] / eager[r["batch"]]
    for backend, by_batch in ratios.items():
        print(f"{backend:36s} x torch eager: " + "  ".join(f"b{b}={v:.2f}" for b, v in by_batch.items()))

    report = {
        "benchmark": "generator images per second by backend and batch size",
        "checkpoint": str(checkpoint),
        "checkpoint_source": source,
        "arch": spec.arch,
        "model": dict(spec.model),
        "image_size": spec.image_size,
        "threads": args.threads,
        "repeats": args.repeats,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "processor": platform.processor(),
            "load_average_before_after": [load_before, os.getloadavg()],  # others' work on shared cores
        },
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__},
        "tensorrt": trt_why,
        "results": results,
        "ratio_vs_torch_eager": ratios,
        "targets": {"onnxruntime_cpu_vs_torch_eager": 1.5, "tensorrt_fp16_vs_torch_eager_fp32_gpu": 4.0},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
