"""``synthgen build-dataset``: plan the shards, run one task per shard, record each, resume after a crash.

The coordinating process takes the store's lease (one writer at a time), creates the store (or reopens
it to resume), runs :func:`pipeline.build_shard` for every shard not yet complete on the chosen
scheduler, and records each shard and its digest in the store's attributes as its task returns. A
store whose attributes hold a different build config is refused (unless it holds no complete shard:
then nothing is lost by replacing it), so a resumed build can only ever finish the build it started.
``--overwrite`` builds the new store aside (``OUT.synthgen-new``, resumable in turn) and swaps it in
when it is complete: until then the old store stays as it was.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from synthgen.engine import pipeline
from synthgen.engine.schedule import check_scheduler, parse_scheduler, run_shards
from synthgen.errors import ConfigError, GateError, StoreError, StoreFormatError
from synthgen.schemas import BuildConfig
from synthgen.storage import (
    StoreReader,
    StoreWriter,
    aside_url,
    clear_scratch,
    is_local,
    recover,
    renew_lease,
    store_exists,
    store_lease,
    store_state,
    swap_in,
    use_fast_codecs,
)

RENEW_EVERY_S = 60.0  # how often a running build renews its lease


@dataclass(frozen=True)
class RunOptions:
    """Where and how a build runs; not part of what it produces."""

    scheduler: str = "processes"
    workers: int = 2
    overwrite: bool = False
    progress: bool = True
    max_give_up: float = 0.01  # the build stops when more samples than this gave up the gate

    def __post_init__(self) -> None:
        parse_scheduler(self.scheduler)
        if self.workers < 1:
            raise ConfigError(f"Expected --workers >= 1. Got {self.workers} instead.")
        if not 0.0 <= self.max_give_up <= 1.0:
            raise ConfigError(f"Expected --max-give-up in [0, 1]. Got {self.max_give_up} instead.")


@dataclass
class BuildSummary:
    out: str
    samples: int
    shards_total: int
    shards_built: int
    shards_skipped: int
    seconds: float
    gate_checked: int = 0
    gate_rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    backend: str = ""
    gave_up: int = 0  # samples kept although the gate rejected every draw (flagged in meta/plausibility)

    @property
    def samples_per_second(self) -> float:
        built = self.samples * self.shards_built / max(self.shards_total, 1)
        return built / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        out = [
            f"built {self.shards_built} shard(s), skipped {self.shards_skipped} already complete: "
            f"{self.out} holds {self.samples} samples in {self.shards_total} shards",
            f"time {self.seconds:.1f} s, {self.samples_per_second:.1f} samples/s, generator backend {self.backend}",
        ]
        if self.gate_checked:
            rate = self.gate_rejected / self.gate_checked
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items(), key=lambda kv: -kv[1]))
            out.append(
                f"gate: {self.gate_checked} label maps drawn, {self.gate_rejected} rejected ({rate:.1%})"
                + (f": {reasons}" if reasons else "")
            )
        if self.gave_up:
            out.append(
                f"gate gave up on {self.gave_up} sample(s) (kept, flagged in meta/plausibility; readers skip them)"
            )
        if self.stage_seconds:
            total = sum(self.stage_seconds.values())
            parts = ", ".join(f"{k} {v / total:.0%}" for k, v in self.stage_seconds.items())
            out.append(f"task time by stage: {parts}")
        return out


def _this_process() -> tuple[int, float]:
    import os

    import psutil

    return os.getpid(), psutil.Process().create_time()


def config_token(config: BuildConfig) -> str:
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _refuse_other(url: str) -> str:
    """The state of ``url`` (:func:`~synthgen.storage.store_state`), refusing what is not synthgen's."""
    state = store_state(url)
    if state == "other":
        raise StoreError(
            f"Output {url} exists and is not a synthgen dataset build (nor any synthgen store): refusing to "
            "touch it. Choose another --out."
        )
    return state


def _resumable(url: str, config: BuildConfig, *, replace: bool) -> list[int] | None:
    """The shards still to build where ``url`` holds this build; None where a new store is to be
    created there. Refuses a store that holds another build with complete shards, unless ``replace``
    (the aside store of ``--overwrite``, which is ours). Writes nothing."""
    state = _refuse_other(url)
    if state != "synthgen":
        return None
    try:
        reader = StoreReader(url)
    except StoreFormatError as e:
        raise StoreError(f"Output {url} is not a readable synthgen store ({e}). Choose another --out.") from e
    held = reader.attrs.provenance.get("build_config")
    if held == json.loads(json.dumps(config.to_dict())):
        done = set(reader.complete_shards)
        return [k for k in range(reader.layout.num_shards) if k not in done]
    if held is None and not replace:
        raise StoreError(
            f"Output {url} holds a store that build-dataset did not write (ingested data?). Choose another "
            "--out, or --overwrite to replace it."
        )
    if reader.complete_shards and not replace:
        diff = sorted(k for k in config.to_dict() if (held or {}).get(k) != config.to_dict()[k])
        raise StoreError(
            f"Output {url} holds a different build (differs in {diff or 'its origin'}). "
            "Use another --out, the same config to resume, or --overwrite to replace it."
        )
    return None  # another build without a complete shard: nothing is lost by replacing it


def _open_or_create(url: str, config: BuildConfig, todo: list[int] | None) -> tuple[StoreWriter, list[int]]:
    """The writer and the shards still to build (``todo`` from :func:`_resumable`; None: create)."""
    if todo is not None:
        return StoreWriter.open(url), todo
    _check_space(url, config)
    attrs = pipeline.store_attrs(config)
    writer = StoreWriter.create(url, attrs, overwrite=True)  # absent, ours and empty, or being replaced
    return writer, list(range(attrs.layout.num_shards))


def _check_space(out: str, config: BuildConfig) -> None:
    """Refuse to start a local build that cannot fit (a rough upper bound: uncompressed size)."""
    if not is_local(out):
        return
    from pathlib import Path

    parent = Path(out.removeprefix("file://")).resolve().parent
    if not parent.exists():
        raise ConfigError(f"Expected the parent folder of --out to exist. {parent} does not.")
    need = pipeline.store_layout(config).bytes_per_sample() * config.n // 2  # zstd halves images at least
    free = shutil.disk_usage(parent).free
    if need > free:
        raise StoreError(
            f"Not enough disk space for {out}: about {need / 1e9:.1f} GB needed, {free / 1e9:.1f} GB free."
        )


def build_dataset(out: str, config: BuildConfig, options: RunOptions) -> BuildSummary:
    """Build (or finish building) the dataset ``config`` describes into the store at ``out``."""
    use_fast_codecs()
    check_scheduler(options.scheduler, progress=options.progress)  # before anything is written
    with store_lease(out, "build-dataset") as lease:
        recover(out)  # a swap that a killed --overwrite left half done
        if options.overwrite:
            _refuse_other(out)
        target = aside_url(out) if options.overwrite and store_exists(out) else out
        summary = _build(target, config, options, lease, lease_url=out)
        if target != out:
            swap_in(target, out)
            summary.out = out
    return summary


def _build(out: str, config: BuildConfig, options: RunOptions, lease, *, lease_url: str) -> BuildSummary:
    """Build into ``out`` (the output, or the aside store of ``--overwrite``) under ``lease``."""
    from tqdm import tqdm

    todo = _resumable(out, config, replace=out != lease_url)
    if todo != []:  # work to do: preflight before anything is written
        pipeline.prepare_workers(config)
    writer, todo = _open_or_create(out, config, todo)
    clear_scratch(out)  # what killed writers left; this process holds the lease
    layout = writer.attrs.layout
    total_shards = layout.num_shards
    summary = BuildSummary(out, config.n, total_shards, 0, total_shards - len(todo), 0.0)
    reasons: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    bar = tqdm(
        total=total_shards,
        initial=summary.shards_skipped,
        unit="shard",
        desc="build-dataset",
        disable=not options.progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    start = time.perf_counter()
    built_samples = 0

    renewed = time.monotonic()

    def on_done(k: int, stats: pipeline.ShardStats) -> None:
        nonlocal built_samples, renewed, lease
        writer.mark_complete([k], digests={k: stats.digest})
        if time.monotonic() - renewed > RENEW_EVERY_S:
            lease, renewed = renew_lease(lease_url, lease), time.monotonic()
        summary.shards_built += 1
        summary.gate_checked += stats.gate_checked
        summary.gate_rejected += stats.gate_rejected
        summary.backend = stats.backend
        summary.gave_up += stats.gave_up
        reasons.update(stats.reasons)
        stages.update(stats.stage_seconds)
        a, b = layout.shard_bounds(k)
        built_samples += b - a
        bar.set_postfix_str(f"{built_samples / (time.perf_counter() - start):.1f} samples/s")
        bar.update(1)
        if summary.gave_up > options.max_give_up * built_samples:
            raise GateError(
                f"Expected at most {options.max_give_up:.1%} of samples to give up the plausibility gate. Got "
                f"{summary.gave_up} of {built_samples} after shard {k} (rejections: "
                f"{', '.join(f'{r} {c}' for r, c in reasons.most_common(3))}): the label source draws implausible "
                "maps. Fix the source, raise --max-attempts, or allow more with --max-give-up; rerunning resumes."
            )

    payload = {"out": out, "config": config.to_dict()}
    if options.scheduler == "processes":  # local worker processes end with their coordinator
        payload["coordinator"] = _this_process()
    try:
        run_shards(
            pipeline.build_shard,
            payload,
            todo,
            scheduler=options.scheduler,
            workers=options.workers,
            token=config_token(config),
            on_done=on_done,
        )
    finally:
        bar.close()
    summary.seconds = time.perf_counter() - start
    summary.reasons = dict(reasons)
    summary.stage_seconds = dict(stages)
    return summary


@dataclass
class BuildPlan:
    out: str
    config: BuildConfig
    options: RunOptions
    shards_total: int
    shards_todo: int
    samples_todo: int
    bytes_per_sample: float
    seconds_per_sample: float  # one worker, measured on a calibration batch
    backend: str

    def lines(self) -> list[str]:
        size = self.bytes_per_sample * self.config.n
        eta = self.seconds_per_sample * self.samples_todo / self.options.workers
        return [
            f"plan: {self.config.n} samples of {self.config.image_size[0]} x {self.config.image_size[1]} "
            f"{self.config.image_dtype} into {self.out}",
            f"shards: {self.shards_total} of {self.config.shard_size} samples, {self.shards_todo} to build "
            f"({self.shards_total - self.shards_todo} already complete)",
            f"size on disk: about {size / 1e6:.1f} MB ({self.bytes_per_sample / 1e3:.1f} kB per sample, zstd)",
            f"calibration: {1 / self.seconds_per_sample:.1f} samples/s on one worker (generator backend "
            f"{self.backend})",
            f"estimated time: {_duration(eta)} on {self.options.workers} {self.options.scheduler} worker(s) "
            "(assumes the workers scale linearly)",
        ]


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def plan_build(out: str, config: BuildConfig, options: RunOptions, calibration: int = 32) -> BuildPlan:
    """What a build would do, with a timing and size estimate from ``calibration`` samples built in memory."""
    from numcodecs import Zstd

    todo_shards = None if options.overwrite else _resumable(out, config, replace=False)
    attrs = pipeline.store_attrs(config)
    layout = attrs.layout
    n = min(calibration, config.n)
    indices = np.arange(n)
    gen = pipeline.generator(config)
    pipeline.warm_generator(config, gen, attrs.intensity)
    t = time.perf_counter()
    drawn = pipeline.draw_labels(config, indices)
    styles = pipeline.draw_styles(config, indices, gen.style_dim)
    images, _ = pipeline.generate_images(config, gen, drawn.labels, styles, attrs.intensity)
    seconds = (time.perf_counter() - t) / n
    codec = Zstd(level=1)
    compressed = sum(len(codec.encode(np.ascontiguousarray(a))) for a in (*images, *drawn.labels))
    if todo_shards is None:  # a new store: every shard (counted, not listed: n may be huge)
        shards_todo, todo_samples = layout.num_shards, config.n
    else:
        shards_todo = len(todo_shards)
        todo_samples = sum(b - a for a, b in map(layout.shard_bounds, todo_shards))
    return BuildPlan(
        out=out,
        config=config,
        options=options,
        shards_total=layout.num_shards,
        shards_todo=shards_todo,
        samples_todo=todo_samples,
        bytes_per_sample=compressed / n
        + layout.bytes_per_sample()
        - images[0].nbytes
        - drawn.labels[0].nbytes,
        seconds_per_sample=seconds,
        backend=gen.backend,
    )
