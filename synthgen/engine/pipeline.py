"""One shard of a dataset build: draw label maps, deform, gate, generate, post-process, write.

:func:`build_shard` is the Dask task. Everything it produces is a function of the build config and the
shard index: sample ``i`` draws its label map, deformation and style from
``SeedSequence([seed, i, attempt])`` (a new ``attempt`` each time the gate rejects a draw) and
``SeedSequence([seed, i, STYLE])``, and generator batches always hold the same samples, so any scheduler
and any number of workers give the same bytes. Each worker process keeps its label source and its
compiled generator in :data:`WORKER` and reuses them for every shard it builds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from synthgen.engine.postprocess import postprocess
from synthgen.errors import CheckpointError, ConfigError, ExportError
from synthgen.schemas import BUNDLED, BuildConfig, Intensity, MetaField, StoreAttrs, StoreLayout
from synthgen.seeding import appearance_keys, sample_rng, style_vectors
from synthgen.sources import GateReport, check_batch
from synthgen.storage import StoreWriter, set_storage_options, use_fast_codecs

AFFINE_FIELDS = ("rotation", "scale_y", "scale_x", "shear", "translate_y", "translate_x")


class WorkerCache:
    """What a worker process keeps across shards: its label sources and compiled generators.

    Each entry is built once per process; threads of one worker never build the same kind of entry
    at once. Label sources and generators have a lock each, so that a worker's first label maps are
    drawn while its generator opens.
    """

    def __init__(self) -> None:
        self._entries: dict[Any, Any] = {}
        self._locks = {"source": threading.RLock(), "generator": threading.RLock()}

    def get(self, kind: str, key: Any, build: Callable[[], Any]) -> Any:
        """The entry ``(kind, key)``, built by ``build()`` on first use."""
        with self._locks[kind]:
            if (kind, key) not in self._entries:
                self._entries[(kind, key)] = build()
            return self._entries[(kind, key)]

    def clear(self) -> None:
        with self._locks["source"], self._locks["generator"]:
            self._entries.clear()


WORKER = WorkerCache()  # this process's cache


_WATCHING: list[int] = []


def watch_coordinator(pid: int, started: float) -> None:
    """In a local worker process: exit as soon as the coordinating process ``pid`` is gone (killed
    with -9 included), so that no worker outlives its build. Started once per process."""
    if pid == os.getpid() or _WATCHING:
        return
    _WATCHING.append(pid)

    def watch() -> None:
        import psutil

        while True:
            try:
                alive = abs(psutil.Process(pid).create_time() - started) < 1.0
            except psutil.Error:
                alive = False
            if not alive:
                os._exit(3)
            time.sleep(1.0)

    threading.Thread(target=watch, name="synthgen-watch-coordinator", daemon=True).start()


def bundled_generator(preset: str = "echo") -> Path:
    """The generator shipped with synthgen for build preset ``preset`` (pix2pix, 128 x 128: CAMUS for
    'echo', ACDC for 'sa-mr'); a preset without one raises a ConfigError that says to pass --generator."""
    from synthgen.schemas import default_generator_path

    path = default_generator_path(preset)
    if not (path / "generator.json").is_file():
        raise CheckpointError(f"The bundled generator is missing from this installation (expected {path}).")
    return path


def generator_path(config: BuildConfig) -> Path:
    """The checkpoint folder of the build: --generator, or the preset's bundled generator."""
    return bundled_generator(config.preset) if config.generator == BUNDLED else Path(config.generator)


def generator_spec(config: BuildConfig):
    """The checkpoint's spec (schema, size, channels, intensity), read without loading weights."""
    from synthgen.schemas import read_spec

    return read_spec(generator_path(config))


def prepare_workers(config: BuildConfig) -> None:
    """Preflight, in the coordinator, before the store is created: open the label source and the
    generator (a broken checkpoint or a missing backend fails here, with nothing written), and build
    what workers share on disk once, so that they never race to build it: the Numba kernel cache
    (concurrent cache builds have crashed Numba, numba #4807) and the ONNX export."""
    # the label source (Numba's start-up and cache loads, much of it outside the GIL) in a thread while
    # the generator opens (ONNX Runtime's session set-up likewise): start-up overlaps; the source's
    # error, if any, is still the one reported first. A daemon thread: Ctrl-C does not wait for it.
    failed: list[BaseException] = []

    def warm_source() -> None:
        try:
            label_source(config)  # warms the kernels and the source's renderer
        except BaseException as e:  # re-raised in this thread below
            failed.append(e)

    thread = threading.Thread(target=warm_source, name="synthgen-warm-source", daemon=True)
    thread.start()
    try:
        _prepare_generator(config)
    except Exception:
        thread.join()
        if failed:
            raise failed[0] from None
        raise
    thread.join()
    if failed:
        raise failed[0]


def _prepare_generator(config: BuildConfig) -> None:
    if config.randomised_generator:
        generator(config)
        return
    generator_spec(config)  # a malformed generator.json is named first
    if config.backend in ("auto", "onnxruntime") and generator_path(config).is_dir():
        from synthgen.inference import cached_onnx

        with contextlib.suppress(
            ExportError
        ):  # auto falls back to torch; onnxruntime reports it in the worker
            cached_onnx(generator_path(config))
    generator(config)  # opened once here; the sync and threads schedulers reuse it


def label_source(config: BuildConfig):
    """The build's label source, warm: every Numba kernel and the source's own code compiled or loaded."""
    return WORKER.get("source", (config.source, config.image_size), lambda: _new_source(config))


def _new_source(config: BuildConfig):
    from synthgen.kernels import ensure_warm
    from synthgen.sources import source_from_config

    with notice_if_slow(
        "compiling the Numba kernels for this CPU (first run after an install; cached after)"
    ):
        WORKER.get("source", "kernels warm", ensure_warm)  # compile every Numba kernel, once per install
        source = source_from_config(config.source, config.image_size)
        source.draw(np.random.default_rng(0))  # compiles (or loads) the source's own Numba code once
    return source


@contextlib.contextmanager
def notice_if_slow(message: str, after_s: float = 3.0):
    """Say ``message`` on stderr when the block still runs after ``after_s`` seconds (a first-run
    compilation that would otherwise look like a hang), and how long it took when it ends."""
    start = time.perf_counter()
    said = threading.Event()

    def say() -> None:
        said.set()
        print(f"synthgen: {message} ...", file=sys.stderr, flush=True)

    timer = threading.Timer(after_s, say)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        if said.is_set():
            print(f"synthgen: ... done in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)


def generator(config: BuildConfig):
    """The build's generator, opened once per process: a trained one, or the randomised generator."""
    from synthgen.inference import RandomisedGenerator, open_generator

    if config.randomised_generator:
        schema = label_source(config).schema
        return WORKER.get(
            "generator",
            ("randomised", config.randomised),
            lambda: RandomisedGenerator(schema, config.randomised),
        )
    path = generator_path(config)
    extra = {"calibration": build_calibration(config)} if config.backend == "onnxruntime-int8" else {}
    return WORKER.get(
        "generator",
        (str(path), config.backend, config.batch_size),
        lambda: open_generator(path, backend=config.backend, threads=1, max_batch=config.batch_size, **extra),
    )


# the build config's fields that decide its label maps (with the seed)
LABEL_FIELDS = ("image_size", "source", "deform", "gate", "max_attempts")


def build_calibration(config: BuildConfig):
    """The label maps an INT8 generator is calibrated and gated on: the build's own, drawn, deformed
    and gated as the build draws them (seed ``seed``, samples 0..n-1), named by what defines them."""
    from synthgen.inference import CalibrationSet

    defining = {k: v for k, v in config.to_dict().items() if k in LABEL_FIELDS}
    return CalibrationSet(
        f"build-labels-{token(defining)}",
        lambda n, seed: draw_labels(replace(config, seed=seed), np.arange(n)).labels,
    )


def token(data: Mapping[str, Any]) -> str:
    """A short hash of JSON-able ``data`` (its keys sorted): equal data, equal token."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def restyler(config: BuildConfig):
    """The appearance stage of the build (None where it has none): the randomised generator's own, or
    the one after a trained generator."""
    from synthgen.inference import Restyler

    if config.randomised_generator:
        return generator(config).restyler
    if not config.appearance.enabled:
        return None
    schema = label_source(config).schema
    return WORKER.get(
        "generator", ("appearance", config.appearance), lambda: Restyler(schema, config.appearance)
    )


def store_layout(
    config: BuildConfig, params_size: int | None = None, style_dim: int = 0, appearance_size: int = 0
) -> StoreLayout:
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
    if appearance_size:
        meta.append(
            MetaField(
                "appearance",
                "float32",
                (appearance_size,),
                description="appearance draw (synthgen.kernels.randomise parameter vector)",
            )
        )
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

    source = label_source(config)
    stage = restyler(config)
    appearance_size = stage.params_size if stage is not None else 0
    if config.randomised_generator:
        layout = store_layout(config, source.params_size, 0, appearance_size)
        provenance = {
            "build_config": config.to_dict(),
            "generator": {"path": config.generator, "hash": None},
            "generator_spec": None,
            "label_source": source.describe(),
        }
        return StoreAttrs(layout, source.schema, Intensity.for_dtype(config.image_dtype), None, provenance)
    spec = generator_spec(config)
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
    layout = store_layout(config, source.params_size, spec.style_dim, appearance_size)
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


@dataclass
class LabelDraw:
    """The label maps of samples ``indices`` and what each was drawn from (stored under ``meta/``)."""

    labels: np.ndarray  # (n, H, W) uint8
    seed: np.ndarray  # (n,) uint64: the accepted draw's elastic-field seed
    attempt: np.ndarray  # (n,) uint16: gate attempts before the accepted draw
    plausibility: np.ndarray  # (n,) uint32: gate flags of the kept map (0: passed)
    source_index: np.ndarray  # (n,) int64
    affine: np.ndarray  # (n, len(AFFINE_FIELDS)) float64
    source_params: np.ndarray  # (n, params_size) float32
    flags_seen: np.ndarray  # gate flags of every checked draw (for the gate report)

    def meta(self) -> dict[str, np.ndarray]:
        """The per-sample metadata arrays, by field name."""
        return {name: getattr(self, name) for name in META_FIELDS}

    @staticmethod
    def concatenate(parts: list[LabelDraw]) -> LabelDraw:
        return LabelDraw(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(LabelDraw)))


META_FIELDS = ("seed", "attempt", "plausibility", "source_index", "affine", "source_params")


def _draw_one(config: BuildConfig, source, ranges, index: int, attempt: int):
    """Sample ``index``'s draw number ``attempt`` before deformation: (map, source index, source params,
    elastic seed, affine parameters), all from ``seeding.sample_rng(seed, index, attempt)``."""
    from synthgen.kernels import AffineParams, sample_affine_params

    rng = sample_rng(config.seed, index, attempt)
    labels, source_index, params = source.draw(rng)
    seed = rng.integers(0, 2**63, dtype=np.uint64)
    affine = sample_affine_params(rng, ranges) if config.deform.enabled else AffineParams()
    return labels, source_index, params, seed, affine


def _deform(config: BuildConfig, labels: np.ndarray, seeds: np.ndarray, affines: list) -> np.ndarray:
    from synthgen.kernels import deform_labels

    if not config.deform.enabled:
        return labels
    d = config.deform
    return deform_labels(labels, seeds, d.spacing, d.max_displacement, affine=affines)


def draw_labels(config: BuildConfig, indices: np.ndarray) -> LabelDraw:
    """Label maps for samples ``indices``: drawn, deformed and gated, redrawn until they pass."""
    source = label_source(config)
    n = len(indices)
    h, w = config.image_size
    out = LabelDraw(
        labels=np.zeros((n, h, w), np.uint8),
        seed=np.zeros(n, np.uint64),
        attempt=np.zeros(n, np.uint16),
        plausibility=np.zeros(n, np.uint32),
        source_index=np.zeros(n, np.int64),
        affine=np.zeros((n, len(AFFINE_FIELDS)), np.float64),
        source_params=np.zeros((n, source.params_size), np.float32),
        flags_seen=np.zeros(0, np.uint32),
    )
    ranges = _affine_ranges(config)
    flags_seen: list[np.ndarray] = []
    pending = np.arange(n)
    for attempt in range(config.max_attempts):
        drawn = np.zeros((len(pending), h, w), np.uint8)
        affines = []
        for row, j in enumerate(pending):
            drawn[row], out.source_index[j], out.source_params[j], out.seed[j], affine = _draw_one(
                config, source, ranges, int(indices[j]), attempt
            )
            affines.append(affine)
            out.affine[j] = [getattr(affine, f) for f in AFFINE_FIELDS]
        drawn = _deform(config, drawn, out.seed[pending], affines)
        out.labels[pending] = drawn
        out.attempt[pending] = attempt
        if not config.gate:
            break
        _, flags = check_batch(drawn, source.schema)
        flags_seen.append(flags)
        out.plausibility[pending] = flags
        pending = pending[flags != 0]
        if not len(pending):
            break
    if flags_seen:
        out.flags_seen = np.concatenate(flags_seen)
    return out


def replay(store: str, index: int) -> np.ndarray:
    """Sample ``index``'s label map rebuilt from the build config and the attempt stored with it (its
    seed, deformation and source draw derive from them alone); equal to the stored map."""
    from synthgen.storage import StoreReader

    reader = StoreReader(store)
    provenance = reader.attrs.provenance or {}
    if "build_config" not in provenance:
        raise ConfigError(f"Expected a store written by build-dataset (with a build config). Got {store}.")
    config = BuildConfig.from_dict(provenance["build_config"])
    attempt = int(reader.read_meta("attempt", index, index + 1)[0])
    source = label_source(config)
    labels, _, _, seed, affine = _draw_one(config, source, _affine_ranges(config), index, attempt)
    return _deform(config, labels[None], np.array([seed], np.uint64), [affine])[0]


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
    indices: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Images for ``labels`` (samples ``indices``, default 0..N-1) in generator batches of
    ``config.batch_size``, through the appearance stage if any, post-processed to the store dtype; and
    the appearance parameters of each sample (None without the stage).

    Batches always start at multiples of the batch size within the shard, so the same samples share a
    batch whatever runs them; the appearance draw of a sample depends on its key alone.
    """
    times = Counter() if times is None else times
    indices = np.arange(len(labels)) if indices is None else indices
    stage = restyler(config)
    keys = appearance_keys(config.seed, indices) if stage is not None else None
    parts, params = [], []
    for b in range(0, len(labels), config.batch_size):
        batch_labels = labels[b : b + config.batch_size]
        t = time.perf_counter()
        if config.randomised_generator:
            batch, drawn = stage(batch_labels, keys[b : b + config.batch_size])
            params.append(drawn)
        else:
            batch = gen(batch_labels, None if styles is None else styles[b : b + config.batch_size])
        times["generate"] += time.perf_counter() - t
        t = time.perf_counter()
        if stage is not None and not config.randomised_generator:
            batch, drawn = stage(batch_labels, keys[b : b + config.batch_size], batch)
            params.append(drawn)
            times["appearance"] += time.perf_counter() - t
            t = time.perf_counter()
        parts.append(postprocess(batch, intensity, config.image_dtype, config.fixed_sector))
        times["postprocess"] += time.perf_counter() - t
    return np.concatenate(parts), (np.concatenate(params) if params else None)


def warm_generator(config: BuildConfig, gen, intensity: Intensity) -> None:
    """One sample through the generator, so that timings after it exclude first-call costs."""
    labels = np.zeros((1, *config.image_size), np.uint8)
    generate_images(config, gen, labels, draw_styles(config, np.arange(1), gen.style_dim), intensity)


def _timed_draw(config: BuildConfig, indices: np.ndarray) -> tuple[LabelDraw, float]:
    t = time.perf_counter()
    return draw_labels(config, indices), time.perf_counter() - t


def _labels_and_images(config, indices, intensity, times) -> tuple[Any, LabelDraw, Any, np.ndarray, Any]:
    """The generator, then the label maps and images of ``indices``, one generator batch at a time.

    The label maps of the next batch are drawn in a thread while the current batch is generated (ONNX
    Runtime and the Numba kernels release the GIL), and the first batch's while the generator opens (the
    first shard of a worker pays for loading it). Every sample depends on its own seeds only, and batches
    start at the same offsets, so the bytes are the same as drawing everything first."""
    size = config.batch_size
    chunks = [indices[b : b + size] for b in range(0, len(indices), size)]
    parts, images, params = [], [], []
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
            batch, drawn = generate_images(
                config,
                gen,
                part.labels,
                style,
                intensity,
                times,
                indices[j * size : j * size + len(chunks[j])],
            )
            images.append(batch)
            params.append(drawn)
            parts.append(part)
    appearance = np.concatenate(params) if params[0] is not None else None
    return gen, LabelDraw.concatenate(parts), styles, np.concatenate(images), appearance


@dataclass(frozen=True)
class ShardStats:
    """What building one shard reports to the coordinator."""

    gate_checked: int
    gate_rejected: int
    reasons: dict[str, int]
    stage_seconds: dict[str, float]
    backend: str
    digest: str  # of the shard's files, recorded when it is marked complete
    gave_up: int = 0  # samples whose gate attempts ran out (kept, flagged in meta/plausibility)


def build_shard(payload: Mapping[str, Any], k: int) -> ShardStats:
    """Build shard ``k`` of the store ``payload["out"]`` and write it whole. Returns its statistics."""
    config = BuildConfig.from_dict(payload["config"])
    if "coordinator" in payload:
        watch_coordinator(*payload["coordinator"])
    use_fast_codecs()  # this task may run in a worker process of its own
    if payload.get("storage_options"):  # the coordinator's, also on a worker of another host
        set_storage_options(payload["storage_options"])
    writer = StoreWriter.for_shards(payload["out"], payload["attrs"])  # no read of the root attributes
    layout = writer.attrs.layout
    start, stop = layout.shard_bounds(k)
    indices = np.arange(start, stop)
    times: Counter[str] = Counter()

    gen, drawn, styles, images, appearance = _labels_and_images(
        config, indices, writer.attrs.intensity, times
    )

    t = time.perf_counter()
    available = drawn.meta() | ({"style": styles} if styles is not None else {})
    if appearance is not None:
        available["appearance"] = appearance
    meta = {m.name: available[m.name] for m in layout.meta if m.name in available}
    try:
        digest = writer.write_shard(k, images, drawn.labels, meta)
    finally:
        writer.close()
    times["write"] += time.perf_counter() - t

    report = GateReport.from_flags(drawn.flags_seen, writer.attrs.schema) if config.gate else GateReport()
    return ShardStats(
        gate_checked=report.checked,
        gate_rejected=report.checked - report.passed,
        reasons=dict(report.reasons),
        stage_seconds=dict(times),
        backend=gen.backend,
        digest=digest,
        gave_up=int(np.count_nonzero(drawn.plausibility)) if config.gate else 0,
    )
