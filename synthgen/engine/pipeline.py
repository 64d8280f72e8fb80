"""One shard of a dataset build: draw label maps, deform, gate, generate, post-process, write.

:func:`build_shard` is the Dask task. Everything it produces is a function of the build config and the
shard index: sample ``i`` draws its label map, deformation and style from
``SeedSequence([seed, i, attempt])`` (a new ``attempt`` each time the gate rejects a draw) and
``SeedSequence([seed, i, STYLE])``, and generator batches always hold the same samples, so any scheduler
and any number of workers give the same bytes. Each worker process keeps its label source and its
compiled generator in :data:`_WORKER` and reuses them for every shard it builds.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from synthgen.engine.postprocess import postprocess
from synthgen.errors import CheckpointError, ConfigError, ExportError
from synthgen.schemas import BUNDLED, BuildConfig, Intensity, MetaField, StoreAttrs, StoreLayout
from synthgen.seeding import sample_rng, style_vectors
from synthgen.sources import GateReport, check_batch
from synthgen.storage import StoreWriter

AFFINE_FIELDS = ("rotation", "scale_y", "scale_x", "shear", "translate_y", "translate_x")

_WORKER: dict[Any, Any] = {}  # per-process cache: label sources and compiled generators
# threads of one worker build each cache entry once, never concurrently; label sources and generators
# have a lock each, so that a worker's first label maps are drawn while its generator opens
_SOURCE_LOCK, _GENERATOR_LOCK = threading.Lock(), threading.Lock()


def bundled_generator() -> Path:
    """The generator shipped with synthgen (pix2pix trained on CAMUS, 128 x 128)."""
    from synthgen.schemas import default_generator_path

    path = default_generator_path()
    if not (path / "generator.json").is_file():
        raise CheckpointError(f"The bundled generator is missing from this installation (expected {path}).")
    return path


def generator_path(config: BuildConfig) -> Path:
    return bundled_generator() if config.generator == BUNDLED else Path(config.generator)


def generator_spec(config: BuildConfig):
    """The checkpoint's spec (schema, size, channels, intensity), read without loading weights."""
    from synthgen.schemas import read_spec

    return read_spec(generator_path(config))


def prepare_workers(config: BuildConfig) -> None:
    """Build what workers share on disk once, in the coordinator, so that they never race to build it:
    the Numba kernel cache (concurrent cache builds have crashed Numba, numba #4807) and the ONNX export."""
    label_source(config)  # warms the kernels and the source's renderer
    if config.backend in ("auto", "onnxruntime") and generator_path(config).is_dir():
        from synthgen.inference import cached_onnx

        with contextlib.suppress(
            ExportError
        ):  # auto falls back to torch; onnxruntime reports it in the worker
            cached_onnx(generator_path(config))


def label_source(config: BuildConfig):
    key = ("source", repr(sorted(config.source.items())), config.image_size)
    with _SOURCE_LOCK:
        return _cached_source(key, config)


def _cached_source(key, config: BuildConfig):
    from synthgen.sources import source_from_config

    if key not in _WORKER:
        if "kernels_warm" not in _WORKER:  # compile or load every Numba kernel once per process
            from synthgen.kernels import warm_up

            _WORKER["kernels_warm"] = warm_up()
        source = source_from_config(config.source, config.image_size)
        source.draw(np.random.default_rng(0))  # compiles (or loads) the source's own Numba code once
        _WORKER[key] = source
    return _WORKER[key]


def generator(config: BuildConfig):
    from synthgen.inference import open_generator

    key = ("generator", str(generator_path(config)), config.backend, config.batch_size)
    with _GENERATOR_LOCK:
        if key not in _WORKER:
            _WORKER[key] = open_generator(
                generator_path(config), backend=config.backend, threads=1, max_batch=config.batch_size
            )
        return _WORKER[key]


def store_layout(config: BuildConfig, params_size: int | None = None, style_dim: int = 0) -> StoreLayout:
    meta = [
        MetaField("seed", "uint64", description="seed of the accepted draw's elastic field"),
        MetaField("attempt", "uint16", description="gate attempts before the accepted draw (0: first)"),
        MetaField("plausibility", "uint32", description="gate reason flags of the kept map (0: passed)"),
        MetaField("source_index", "int64", description="index of the source label map (-1: procedural)"),
        MetaField("affine", "float64", (len(AFFINE_FIELDS),), description=", ".join(AFFINE_FIELDS)),
    ]
    if params_size:
        meta.append(MetaField("source_params", "float32", (params_size,), description="label source draw"))
    if style_dim:
        meta.append(MetaField("style", "float32", (style_dim,), description="generator style vector"))
    return StoreLayout(
        n=config.n,
        image_shape=config.image_size,
        image_dtype=config.image_dtype,
        shard_size=config.shard_size,
        meta=tuple(meta),
    )


def store_attrs(config: BuildConfig) -> StoreAttrs:
    """The attributes of a new build store; checks the generator against the label source first."""
    from synthgen.inference import checkpoint_hash

    spec = generator_spec(config)
    source = label_source(config)
    if spec.schema.to_dict()["classes"] != source.schema.to_dict()["classes"]:
        raise CheckpointError(
            f"Expected a generator trained on label schema {source.schema.name!r} (the label source's). "
            f"Got a checkpoint for schema {spec.schema.name!r} instead: train one on this schema or change --source."
        )
    if (spec.image_size, spec.image_size) != config.image_size:
        raise ConfigError(
            f"Expected --image-size to match the generator's {spec.image_size} {spec.image_size}. "
            f"Got {config.image_size[0]} {config.image_size[1]} instead."
        )
    layout = store_layout(config, source.params_size, spec.style_dim)
    provenance = {
        "build_config": config.to_dict(),
        "generator": {"path": str(generator_path(config)), "hash": checkpoint_hash(generator_path(config))},
        "generator_spec": spec.to_dict(),
        "label_source": source.describe(),
    }
    return StoreAttrs(layout, source.schema, Intensity.for_dtype(config.image_dtype), None, provenance)


def _affine_ranges(config: BuildConfig):
    from synthgen.kernels import AffineRanges

    d = config.deform
    return AffineRanges(
        max_rotation=d.rotation,
        min_scale=1.0 - d.scale,
        max_scale=1.0 + d.scale,
        max_anisotropy=d.anisotropy,
        max_shear=d.shear,
        max_translation=d.translate * min(config.image_size),
    )


def draw_labels(config: BuildConfig, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Label maps for samples ``indices``: drawn, deformed and gated, redrawn until they pass."""
    from synthgen.kernels import AffineParams, deform_labels, sample_affine_params

    source = label_source(config)
    n = len(indices)
    h, w = config.image_size
    out = {
        "labels": np.zeros((n, h, w), np.uint8),
        "seed": np.zeros(n, np.uint64),
        "attempt": np.zeros(n, np.uint16),
        "plausibility": np.zeros(n, np.uint32),
        "source_index": np.zeros(n, np.int64),
        "affine": np.zeros((n, len(AFFINE_FIELDS)), np.float64),
        "source_params": np.zeros((n, source.params_size), np.float32),
    }
    ranges = _affine_ranges(config)
    flags_seen: list[np.ndarray] = []
    pending = np.arange(n)
    for attempt in range(config.max_attempts):
        drawn = np.zeros((len(pending), h, w), np.uint8)
        affines: list[AffineParams] = []
        for row, j in enumerate(pending):
            rng = sample_rng(config.seed, int(indices[j]), attempt)
            drawn[row], out["source_index"][j], out["source_params"][j] = source.draw(rng)
            out["seed"][j] = rng.integers(0, 2**63, dtype=np.uint64)
            affines.append(sample_affine_params(rng, ranges) if config.deform.enabled else AffineParams())
            out["affine"][j] = [getattr(affines[-1], f) for f in AFFINE_FIELDS]
        if config.deform.enabled:
            drawn = deform_labels(
                drawn,
                out["seed"][pending],
                config.deform.spacing,
                config.deform.max_displacement,
                affine=affines,
            )
        out["labels"][pending] = drawn
        out["attempt"][pending] = attempt
        if not config.gate:
            break
        _, flags = check_batch(drawn, source.schema)
        flags_seen.append(flags)
        out["plausibility"][pending] = flags
        pending = pending[flags != 0]
        if not len(pending):
            break
    out["flags_seen"] = np.concatenate(flags_seen) if flags_seen else np.zeros(0, np.uint32)
    return out


def draw_styles(config: BuildConfig, indices: np.ndarray, style_dim: int) -> np.ndarray | None:
    """(N, style_dim) float32 standard normal style vectors, one stream per sample; None without styles."""
    if not style_dim:
        return None
    return style_vectors(config.seed, indices, style_dim)


def generate_images(
    config: BuildConfig,
    gen,
    labels: np.ndarray,
    styles: np.ndarray | None,
    intensity: Intensity,
    times: Counter[str] | None = None,
) -> np.ndarray:
    """Images for ``labels`` in generator batches of ``config.batch_size``, post-processed to the store dtype.

    Batches always start at multiples of the batch size within the shard, so the same samples share a
    batch whatever runs them.
    """
    times = Counter() if times is None else times
    parts = []
    for b in range(0, len(labels), config.batch_size):
        t = time.perf_counter()
        batch = gen(
            labels[b : b + config.batch_size], None if styles is None else styles[b : b + config.batch_size]
        )
        times["generate"] += time.perf_counter() - t
        t = time.perf_counter()
        parts.append(postprocess(batch, intensity, config.image_dtype, config.sector_mask))
        times["postprocess"] += time.perf_counter() - t
    return np.concatenate(parts)


def warm_generator(config: BuildConfig, gen, intensity: Intensity) -> None:
    """One sample through the generator, so that timings after it exclude first-call costs."""
    labels = np.zeros((1, *config.image_size), np.uint8)
    generate_images(config, gen, labels, draw_styles(config, np.arange(1), gen.style_dim), intensity)


def _timed_draw(config: BuildConfig, indices: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
    t = time.perf_counter()
    return draw_labels(config, indices), time.perf_counter() - t


def _labels_and_images(config, indices, intensity, times) -> tuple[Any, dict[str, np.ndarray], np.ndarray]:
    """The generator, then the label maps and images of ``indices``, one generator batch at a time.

    The label maps of the next batch are drawn in a thread while the current batch is generated (ONNX
    Runtime and the Numba kernels release the GIL), and the first batch's while the generator opens (the
    first shard of a worker pays for loading it). Every sample depends on its own seeds only, and batches
    start at the same offsets, so the bytes are the same as drawing everything first."""
    size = config.batch_size
    chunks = [indices[b : b + size] for b in range(0, len(indices), size)]
    parts, images = [], []
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_timed_draw, config, chunks[0])
        t = time.perf_counter()
        gen = generator(config)
        times["generator_load"] += time.perf_counter() - t
        styles = draw_styles(config, indices, gen.style_dim)
        for j in range(len(chunks)):
            part, seconds = pending.result()
            times["labels"] += seconds
            if j + 1 < len(chunks):
                pending = pool.submit(_timed_draw, config, chunks[j + 1])
            style = None if styles is None else styles[j * size : j * size + len(chunks[j])]
            images.append(generate_images(config, gen, part["labels"], style, intensity, times))
            parts.append(part)
    drawn = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    if styles is not None:
        drawn["style"] = styles
    return gen, drawn, np.concatenate(images)


def build_shard(payload: Mapping[str, Any], k: int) -> dict[str, Any]:
    """Build shard ``k`` of the store ``payload["out"]`` and write it whole. Returns statistics."""
    config = BuildConfig.from_dict(payload["config"])
    writer = StoreWriter.open(payload["out"])
    layout = writer.attrs.layout
    start, stop = layout.shard_bounds(k)
    indices = np.arange(start, stop)
    times: Counter[str] = Counter()

    gen, drawn, images = _labels_and_images(config, indices, writer.attrs.intensity, times)

    t = time.perf_counter()
    meta = {m.name: drawn[m.name] for m in layout.meta if m.name in drawn}
    writer.write_shard(k, images, drawn["labels"], meta)
    times["write"] += time.perf_counter() - t

    report = GateReport.from_flags(drawn["flags_seen"], writer.attrs.schema) if config.gate else GateReport()
    return {
        "gate_checked": report.checked,
        "gate_rejected": report.checked - report.passed,
        "reasons": dict(report.reasons),
        "stage_seconds": dict(times),
        "backend": gen.backend,
    }
