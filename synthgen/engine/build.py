"""``synthgen build-dataset``: plan the shards, run one task per shard, record each, resume after a crash.

The coordinating process takes the store's lease (one writer at a time), creates the store (or reopens
it to resume), runs :func:`pipeline.build_shard` for every shard not yet complete on the chosen
scheduler, and records each shard and its digest in the store's attributes as its task returns. A
store whose attributes hold a different build config is refused (unless it holds no complete shard:
then nothing is lost by replacing it), so a resumed build can only ever finish the build it started.
The number of samples is not part of what a build is (:func:`build_identity`): sample i depends only
on the config and i, so a larger ``n`` grows a store of the same build (its arrays are resized, its
partial last shard is built again whole, then the new shards; :meth:`StoreWriter.grow`) into the
bytes of a fresh build of ``n``, and a smaller one is refused.
``--overwrite`` builds the new store aside (``OUT.synthgen-new``, resumable in turn) and swaps it in
when it is complete: until then the old store stays as it was.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synthgen import __version__
from synthgen.engine import pipeline
from synthgen.engine.schedule import check_scheduler, parse_scheduler, run_shards
from synthgen.errors import ConfigError, GateError, StoreError, StoreFormatError
from synthgen.schemas import BuildConfig, StoreAttrs
from synthgen.storage import (
    StoreReader,
    StoreWriter,
    aside_url,
    clear_scratch,
    given_storage_options,
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

    scheduler: str = "threads"
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
    grown_from: int | None = None  # the samples the store held before this build grew it

    @property
    def samples_per_second(self) -> float:
        built = self.samples * self.shards_built / max(self.shards_total, 1)
        return built / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        out = [
            f"built {self.shards_built} shard(s), skipped {self.shards_skipped} already complete: "
            f"{self.out} holds {self.samples} samples in {self.shards_total} shards"
            + (f" (grown from {self.grown_from})" if self.grown_from is not None else ""),
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
    """The token of this build's shard tasks (their Dask keys): of the whole config, ``n`` included,
    since the last shard of a build depends on ``n``."""
    return pipeline.token(config.to_dict())


def build_identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """What makes two builds the same build: their config (as JSON holds it) less ``n``. Sample i
    depends only on the config and i, so a build of n samples is the first n of any larger one."""
    return {k: v for k, v in json.loads(json.dumps(dict(config))).items() if k != "n"}


def _refuse_other(url: str) -> str:
    """The state of ``url`` (:func:`~synthgen.storage.store_state`), refusing what is not synthgen's."""
    state = store_state(url)
    if state == "other":
        raise StoreError(
            f"Output {url} exists and is not a synthgen dataset build (nor any synthgen store): refusing to "
            "touch it. Choose another --out."
        )
    return state


@dataclass(frozen=True)
class Continuation:
    """What is left of this build in a store that holds part of it (or all of it)."""

    todo: list[int]  # the shards still to build, in the layout of the config's n
    grow_from: int | None = None  # the samples the store holds, where the config asks for more


def _resumable(url: str, config: BuildConfig, *, replace: bool) -> Continuation | None:
    """What is left to build where ``url`` holds this build (of as many samples, or fewer: it grows);
    None where a new store is to be created there. Refuses a store that holds another build with
    complete shards, or more samples of this one, unless ``replace`` (the aside store of
    ``--overwrite``, which is ours). Writes nothing."""
    state = _refuse_other(url)
    if state != "synthgen":
        return None
    try:
        reader = StoreReader(url)
    except StoreFormatError as e:
        raise StoreError(f"Output {url} is not a readable synthgen store ({e}). Choose another --out.") from e
    held = reader.attrs.provenance.get("build_config")
    mine = config.to_dict()
    if isinstance(held, Mapping) and build_identity(held) == build_identity(mine):
        if config.n < reader.layout.n and replace:
            return None
        return _continuation(url, reader, config.n)
    if held is None and not replace:
        raise StoreError(
            f"Output {url} holds a store that build-dataset did not write (ingested data?). Choose another "
            "--out, or --overwrite to replace it."
        )
    if reader.complete_shards and not replace:
        held_id, mine_id = build_identity(held or {}), build_identity(mine)
        diff = sorted(k for k in mine_id if held_id.get(k) != mine_id[k])
        raise StoreError(
            f"Output {url} holds a different build (differs in {diff or 'its origin'}). "
            "Use another --out, the same config to resume, or --overwrite to replace it."
        )
    return None  # another build without a complete shard: nothing is lost by replacing it


def _continuation(url: str, reader: StoreReader, n: int) -> Continuation:
    """The shards of ``n`` samples not complete in ``reader``'s store of the same build: a store of
    fewer samples grows (its last shard, where partial, is built again whole); one of more is refused."""
    held = reader.layout
    if n < held.n:
        raise StoreError(
            f"Expected --n >= {held.n}: {url} holds {held.n} samples of this build, and a build only grows. "
            f"Got --n {n} instead. Use another --out, or --overwrite to replace it."
        )
    done = set(reader.complete_shards)
    if n > held.n and held.n % held.shard_size:
        done.discard(held.num_shards - 1)
    shards = -(-n // held.shard_size)
    return Continuation([k for k in range(shards) if k not in done], held.n if n > held.n else None)


ORIGIN = ("generator", "generator_spec", "label_source")  # provenance that a grown store must share


def _check_origin(url: str, held: StoreAttrs, fresh: StoreAttrs) -> None:
    """Refuse to grow a store whose samples this build would not make again: another checkpoint at
    the same generator path, another label source or schema, another synthgen release."""

    def origin(attrs: StoreAttrs, version: object) -> dict[str, Any]:
        prov = json.loads(json.dumps({k: attrs.provenance.get(k) for k in ORIGIN}))
        layout = attrs.layout.to_dict() | {"n": None}
        return prov | {
            "layout": layout,
            "label_schema": attrs.schema.to_dict(),
            "intensity": attrs.intensity.to_dict(),
            "spacing": attrs.spacing,
            "synthgen_version": version,
        }

    was, now = origin(held, held.provenance.get("synthgen_version")), origin(fresh, __version__)
    diff = sorted(k for k in now if was.get(k) != now[k])
    if diff:
        raise StoreError(
            f"Output {url} holds fewer samples of this build config, but made otherwise (differs in {diff}): "
            "grown, it would not equal a fresh build. Use another --out, or --overwrite to replace it."
        )


def _open_or_create(
    url: str, config: BuildConfig, held: Continuation | None
) -> tuple[StoreWriter, list[int], int | None]:
    """The writer, the shards still to build and the samples the store held where it grows (``held``
    from :func:`_resumable`; None: create)."""
    if held is None:
        _check_space(url, config, config.n)
        attrs = pipeline.store_attrs(config)
        writer = StoreWriter.create(url, attrs, overwrite=True)  # absent, ours and empty, or being replaced
        return writer, list(range(attrs.layout.num_shards)), None
    writer = StoreWriter.open(url)
    if held.grow_from is None:
        writer.fit_arrays()  # where a growth was killed before it recorded its size
        return writer, held.todo, None
    _check_space(url, config, config.n - held.grow_from)
    _check_origin(url, writer.attrs, pipeline.store_attrs(config))
    writer.grow(config.n, {"build_config": config.to_dict()})
    return writer, held.todo, held.grow_from


def _check_space(out: str, config: BuildConfig, samples: int) -> None:
    """Refuse to start writing ``samples`` samples of a local build that cannot fit (a rough upper
    bound: uncompressed size)."""
    if not is_local(out):
        return
    from pathlib import Path

    parent = Path(out.removeprefix("file://")).resolve().parent
    if not parent.exists():
        raise ConfigError(f"Expected the parent folder of --out to exist. {parent} does not.")
    need = pipeline.store_layout(config).bytes_per_sample() * samples // 2  # zstd halves images at least
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

    held = _resumable(out, config, replace=out != lease_url)
    if held is None or held.todo:  # work to do: preflight before anything is written
        pipeline.prepare_workers(config)
    writer, todo, grown_from = _open_or_create(out, config, held)
    clear_scratch(out)  # what killed writers left; this process holds the lease
    layout = writer.attrs.layout
    total_shards = layout.num_shards
    summary = BuildSummary(out, config.n, total_shards, 0, total_shards - len(todo), 0.0)
    summary.grown_from = grown_from
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
    records = CompletionRecords(writer)

    def on_done(k: int, stats: pipeline.ShardStats) -> None:
        nonlocal built_samples, renewed, lease
        records.add(k, stats.digest)
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

    payload = {
        "out": out,
        "config": config.to_dict(),
        "storage_options": given_storage_options(),
        "attrs": writer.shard_attrs(),  # so that no task reads the completion records, which grow
    }
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
        try:
            records.flush()  # what finished is recorded, also when the build stops on an error
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
    grow_from: int | None = None  # the samples the store holds, where the build grows it

    def lines(self) -> list[str]:
        size = self.bytes_per_sample * self.config.n
        eta = self.seconds_per_sample * self.samples_todo / self.options.workers
        grows = f" (grows the {self.grow_from} samples there)" if self.grow_from is not None else ""
        return [
            f"plan: {self.config.n} samples of {self.config.image_size[0]} x {self.config.image_size[1]} "
            f"{self.config.image_dtype} into {self.out}{grows}",
            f"shards: {self.shards_total} of {self.config.shard_size} samples, {self.shards_todo} to build "
            f"({self.shards_total - self.shards_todo} already complete)",
            f"size on disk: about {size / 1e6:.1f} MB ({self.bytes_per_sample / 1e3:.1f} kB per sample, zstd)",
            f"calibration: {1 / self.seconds_per_sample:.1f} samples/s on one worker (generator backend "
            f"{self.backend})",
            f"estimated time: {_duration(eta)} on {self.options.workers} {self.options.scheduler} worker(s) "
            "(assumes the workers scale linearly)",
        ]


class CompletionRecords:
    """The coordinator's records of finished shards, written in batches.

    Each record rewrites the store's root attributes, which list every complete shard with its digest,
    so one costs more the fuller the store (milliseconds empty, seconds at hundreds of thousands of
    shards). Shards are recorded at once while that is cheap, and later together: a write waits until
    ``RECORD_SHARE`` of the time since the last one covers what the last one cost. So recording takes
    at most about that share of the coordinator's time however large the store. A build killed
    between two writes has written the shards it had not yet recorded whole; resuming writes them
    again, with the same bytes.
    """

    RECORD_SHARE = 0.1

    def __init__(self, writer: StoreWriter, clock=time.monotonic) -> None:
        self.writer = writer
        self.clock = clock  # seconds, monotonic (a test's own clock)
        self.pending: dict[int, str] = {}
        self.last_cost = 0.0
        self.last_end = clock()

    def add(self, k: int, digest: str) -> None:
        self.pending[k] = digest
        if self.clock() - self.last_end >= self.last_cost / self.RECORD_SHARE:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        start = self.clock()
        self.writer.mark_complete(list(self.pending), digests=dict(self.pending))
        self.pending.clear()
        self.last_end = self.clock()
        self.last_cost = self.last_end - start


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def plan_build(out: str, config: BuildConfig, options: RunOptions, calibration: int = 32) -> BuildPlan:
    """What a build would do, with a timing and size estimate from ``calibration`` samples built in memory."""
    from numcodecs import Zstd

    held = None if options.overwrite else _resumable(out, config, replace=False)
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
    if held is None:  # a new store: every shard (counted, not listed: n may be huge)
        shards_todo, todo_samples = layout.num_shards, config.n
    else:
        shards_todo = len(held.todo)
        todo_samples = sum(b - a for a, b in map(layout.shard_bounds, held.todo))
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
        grow_from=None if held is None else held.grow_from,
    )
