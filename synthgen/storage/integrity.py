"""Ownership, atomic writes and digests of synthgen stores (the README's integrity guarantees).

- **Files.** :class:`StoreFiles` reads and writes the files of a store at any fsspec URL. A write is
  atomic: on a local file system the bytes go to a temporary file that is renamed over the target
  (readers see the old file or the new one, never a torn one); on an object store one PUT is atomic.
  Remote URLs open with :func:`storage_options`: the options given to :func:`set_storage_options`
  (the CLI's ``--storage-option KEY=VALUE``) over fsspec's configuration (``FSSPEC_S3_*`` variables)
  over synthgen's bounded timeouts and retries for S3, so that a wrong endpoint fails in seconds.
- **Ownership.** One writer at a time holds a store's lease (the file ``URL.synthgen-lease`` beside it:
  an owner token, host, process id and its start time, the command). It lives beside the store, not in
  it, so that Zarr tools see nothing but Zarr there, and it exists only while a writer runs. A second writer is refused with a line
  naming the first. A lease is stale when its process is gone (same host: the process id is not
  running, or runs another program) or, from another host, when it was not renewed for
  :data:`LEASE_TIMEOUT_S`; a stale lease is taken over (written, then read back to check that this
  writer won). Local files are created with an exclusive link; on object stores with a conditional
  PUT (``If-None-Match: *`` on S3: the server refuses it where the lease exists), after a check that
  it does not exist (which keeps a running writer's lease where a server ignores the condition: there
  two writers starting within the same instant are not excluded).
- **Replacement.** ``--overwrite`` writes the new store aside (``URL.synthgen-new``) and swaps it in only
  when it is complete (:func:`swap_in`); the old store stays intact until then. A swap interrupted half
  way is finished or undone by :func:`recover` at the next start. On a local file system each step is
  a rename; on object stores a move copies each object (the root ``zarr.json`` last, so the copy is a
  store only once whole) and then deletes the source (its ``zarr.json`` first), so a swap there is
  not atomic, but it is resumable: :func:`recover` goes by which ``zarr.json`` exists.
- **Shards.** A shard is encoded into a scratch folder beside the store (``URL.synthgen-scratch``, same
  file system) and each of its files is then renamed into place (uploaded in one PUT on object stores).
  The shard's digest (:func:`shard_digest`: SHA-256 over each file's size and the CRC32C of its
  chunks' compressed lengths, read from its index, and which of the shard's files exist: a file whose chunks are all fill value is not written)
  is recorded when the shard is marked complete, and checked by ``synthgen verify``; readers check that
  the files it lists exist. Every chunk carries a zstd checksum, checked by every read (and by verify,
  which decodes every chunk), so a digest needs no read of the data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from synthgen.errors import StoreError, StoreLockedError
from synthgen.schemas import StoreLayout

LEASE_SUFFIX = ".synthgen-lease"  # beside the store: who writes it
SCRATCH_SUFFIX = ".synthgen-scratch"  # beside the store: shards being encoded
ASIDE_SUFFIX = ".synthgen-new"  # a replacement store being written
OLD_SUFFIX = ".synthgen-old"  # the replaced store, during a swap
LEASE_TIMEOUT_S = 600.0  # a lease of another host not renewed for this long is stale


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def local_path(url: str) -> str:
    return url.removeprefix("file://")


# -- storage options ----------------------------------------------------------------------------------
STORAGE_OPTIONS_ENV = "SYNTHGEN_STORAGE_OPTIONS"  # JSON: the given options, inherited by child processes
# botocore's settings on S3: a closed or wrong endpoint fails within seconds (s3fs retries each call
# up to 5 times on top of botocore's attempts), a slow server still gets s3fs's read timeout
_DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    protocol: {"config_kwargs": {"connect_timeout": 5, "retries": {"max_attempts": 2, "mode": "standard"}}}
    for protocol in ("s3", "s3a")
}


def set_storage_options(options: Mapping[str, Any] | None) -> None:
    """fsspec storage options for every remote store this process opens from now on, and for the
    processes it starts (they inherit them through the environment variable
    :data:`STORAGE_OPTIONS_ENV`); for S3 say ``endpoint_url``, ``key``, ``secret``, ``client_kwargs``,
    ``config_kwargs``. None or empty: none. Tasks that run on other hosts (Dask workers) get them in
    their payload and set them there."""
    if options:
        os.environ[STORAGE_OPTIONS_ENV] = json.dumps(dict(options), sort_keys=True)
    else:
        os.environ.pop(STORAGE_OPTIONS_ENV, None)


def given_storage_options() -> dict[str, Any]:
    """The options :func:`set_storage_options` set, here or in a parent process ({} where none)."""
    raw = os.environ.get(STORAGE_OPTIONS_ENV)
    if not raw:
        return {}
    try:
        options = json.loads(raw)
    except ValueError as e:
        raise StoreError(f"Expected a JSON object in {STORAGE_OPTIONS_ENV}. Got {raw!r} instead.") from e
    if not isinstance(options, dict):
        raise StoreError(f"Expected a JSON object in {STORAGE_OPTIONS_ENV}. Got {raw!r} instead.")
    return options


def storage_options(url: str) -> dict[str, Any]:
    """The options that open the store at ``url``: synthgen's defaults for its protocol, then fsspec's
    configuration for it, then :func:`given_storage_options`, each over the one before (dictionaries
    such as ``config_kwargs`` merged key by key). {} for a local path."""
    if is_local(url):
        return {}
    import fsspec.config

    protocol = url.split("://", 1)[0]
    layers = (
        _DEFAULT_OPTIONS.get(protocol, {}),
        fsspec.config.conf.get(protocol, {}),
        given_storage_options(),
    )
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in json.loads(json.dumps(layer)).items():  # copies: botocore edits its config
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                value = merged[key] | value
            merged[key] = value
    return merged


def _error_code(e: BaseException) -> str:
    """The S3 error code (``NoSuchBucket``...) of an error s3fs raised, from the botocore error it
    chains; "" where there is none."""
    cause = e.__cause__ if e.__cause__ is not None else e
    return (getattr(cause, "response", None) or {}).get("Error", {}).get("Code", "")


def _remote_failure(url: str, e: BaseException) -> StoreError | None:
    """A one-line error for a failure to reach the object store of ``url`` (credentials refused or
    missing, no such bucket, endpoint unreachable), or None where ``e`` is none of these."""
    code = _error_code(e)
    name = type(e).__name__
    bucket = url.split("://", 1)[-1].split("/", 1)[0]
    credentials = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or --storage-option key=... secret=..."
    if isinstance(e, PermissionError) or code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return StoreError(
            f"The object store refused access to {url} ({e}). Check the credentials: {credentials}."
        )
    if isinstance(e, FileNotFoundError) and code == "NoSuchBucket":
        return StoreError(f"Bucket {bucket!r} of {url} does not exist. Create it first, or check the name.")
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return StoreError(f"No credentials for {url} ({e}). Set {credentials}.")
    if "Connect" in name or "Endpoint" in name:
        return StoreError(
            f"Cannot reach the object store of {url}: {e}. Check the endpoint (AWS_ENDPOINT_URL, or "
            "--storage-option endpoint_url=...) and that the server is up."
        )
    return None


@contextlib.contextmanager
def object_store_errors(url: str) -> Iterator[None]:
    """Raise a failure to reach the object store of ``url`` as one :class:`StoreError` line."""
    try:
        yield
    except StoreError:
        raise
    except Exception as e:
        failure = None if is_local(url) else _remote_failure(url, e)
        if failure is None:
            raise
        raise failure from e


class StoreFiles:
    """The files of the store at ``url`` (a local path or any fsspec URL), by key relative to its root."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.local = is_local(url)
        if self.local:
            self.root = os.path.abspath(local_path(self.url))
            self.fs = None
        else:
            import fsspec

            self.fs, self.root = fsspec.core.url_to_fs(self.url, **storage_options(self.url))
            self.root = self.root.rstrip("/")

    def path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def exists(self, key: str = "") -> bool:
        return os.path.exists(self.path(key)) if self.local else self.fs.exists(self.path(key))

    def read(self, key: str) -> bytes:
        if self.local:
            with open(self.path(key), "rb") as f:
                return f.read()
        protocols = (self.fs.protocol,) if isinstance(self.fs.protocol, str) else self.fs.protocol
        if "s3" in protocols:  # small files: one GET (s3fs asks for the size first otherwise)
            return self.fs.cat_file(self.path(key), max_concurrency=1)
        return self.fs.cat_file(self.path(key))

    def write(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        """Write ``data`` atomically; ``exclusive``: fail with FileExistsError if ``key`` exists."""
        path = self.path(key)
        if not self.local:
            if exclusive and self.fs.exists(path):  # also where a server ignores the condition below
                raise FileExistsError(path)
            # one PUT; exclusive: conditional (If-None-Match: * on S3), so the server refuses it where
            # another writer created the file since the check (fsspec raises FileExistsError), or
            # answers 409 where another one is creating it at the same moment
            try:
                self.fs.pipe_file(path, data, mode="create" if exclusive else "overwrite")
            except OSError as e:
                if exclusive and _error_code(e) == "ConditionalRequestConflict":
                    raise FileExistsError(path) from e
                raise
            return
        if not exclusive:
            atomic_write(path, data)
            return
        tmp = f"{path}.{uuid.uuid4().hex}.partial"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.link(tmp, path)  # fails if path exists: exclusive and atomic
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def fingerprint(self, key: str, chunks: int) -> str:
        """:func:`file_fingerprint` of ``key`` (reading only a shard file's index)."""
        if self.local:
            return file_fingerprint(self.path(key), chunks)
        size = self.fs.size(self.path(key))
        start = max(0, size - (16 * chunks + 4)) if chunks else 0
        return fingerprint_bytes(size, self.fs.cat_file(self.path(key), start=start), chunks)

    def keys(self) -> list[str]:
        """Every file under the root, as keys relative to it, sorted."""
        if self.local:
            return sorted(
                os.path.relpath(os.path.join(d, f), self.root)
                for d, _, names in os.walk(self.root)
                for f in names
            )
        return sorted(p[len(self.root) + 1 :] for p in self.fs.find(self.root))

    def move_in(self, local_file: str, key: str) -> None:
        """Move a finished local file to ``key`` atomically (a rename, or one upload)."""
        path = self.path(key)
        if self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.replace(local_file, path)
        else:
            self.fs.put_file(local_file, path)
            os.unlink(local_file)

    def remove(self, key: str, *, recursive: bool = False) -> None:
        path = self.path(key)
        if self.local:
            if os.path.isdir(path):
                import shutil

                shutil.rmtree(path, ignore_errors=False)
            elif os.path.exists(path):
                os.unlink(path)
        elif self.fs.exists(path):
            self.fs.rm(path, recursive=recursive)


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``: the file is
    the old one or the new one, never torn (for whatever a rerun reads back: logs, summaries, caches)."""
    path = Path(path)
    data = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -- ownership ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lease:
    """Who writes a store: recorded in the store while the writer runs."""

    token: str
    host: str
    pid: int
    process_started: float  # the process's start time (seconds since the epoch), against pid reuse
    command: str
    acquired: float
    renewed: float

    @classmethod
    def new(cls, command: str) -> Lease:
        now = time.time()
        return cls(
            uuid.uuid4().hex,
            socket.gethostname(),
            os.getpid(),
            _process_started(os.getpid()) or 0.0,
            command,
            now,
            now,
        )

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.acquired))
        return f"'synthgen {self.command}' (pid {self.pid} on {self.host}, since {since})"

    def is_stale(self, now: float | None = None) -> bool:
        if self.host == socket.gethostname():
            started = _process_started(self.pid)
            if started is None:  # no such process
                return True
            return started is not _UNKNOWN and abs(started - self.process_started) > 1.0
        return (now or time.time()) - self.renewed > LEASE_TIMEOUT_S


_UNKNOWN = float("nan")  # a process runs with that id, but its start time cannot be read


def _process_started(pid: int) -> float | None:
    """Start time of process ``pid``; None where no such process runs; :data:`_UNKNOWN` where one runs
    but may not be inspected (another user's: it is alive, so its lease is not stale)."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return _UNKNOWN


def _lease_file(url: str) -> StoreFiles:
    return StoreFiles(url.rstrip("/") + LEASE_SUFFIX)


def read_lease(url: str) -> Lease | None:
    files = _lease_file(url)
    try:
        return Lease(**json.loads(files.read("")))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as e:  # not ours or damaged: nobody can be holding it
        raise StoreError(f"Unreadable lease {files.path('')}: {e}. Remove it if no writer runs.") from e


def acquire_lease(url: str, command: str) -> Lease:
    """Take the store's lease for this process, or raise :class:`StoreLockedError` naming its holder."""
    with object_store_errors(url):
        return _acquire_lease(url, command)


def _acquire_lease(url: str, command: str) -> Lease:
    files = _lease_file(url)
    if files.local and not os.path.isdir(os.path.dirname(files.root)):
        raise StoreError(
            f"Expected the parent folder of {url} to exist. {os.path.dirname(files.root)} does not: create it first."
        )
    lease = Lease.new(command)
    data = json.dumps(asdict(lease)).encode()
    try:
        files.write("", data, exclusive=True)
        return lease
    except FileExistsError:
        pass
    held = read_lease(url)
    if held is not None and not held.is_stale():
        raise StoreLockedError(
            f"Expected no other writer on {url}. {held.describe()} is writing it: wait for it to finish or "
            "stop it."
        )
    files.write("", data)  # take over the stale lease, then check that no one else did too
    if (read_lease(url) or lease).token != lease.token:
        raise StoreLockedError(f"Expected no other writer on {url}. Another one took it over just now.")
    return lease


def renew_lease(url: str, lease: Lease) -> Lease:
    """Record that the holder still runs (for holders on other hosts); refuses a lease lost meanwhile."""
    held = read_lease(url)
    if held is None or held.token != lease.token:
        who = held.describe() if held is not None else "nobody"
        raise StoreLockedError(f"Lost the lease of {url}: it is held by {who} now. Stopping.")
    renewed = Lease(**(asdict(lease) | {"renewed": time.time()}))
    _lease_file(url).write("", json.dumps(asdict(renewed)).encode())
    return renewed


def release_lease(url: str, lease: Lease) -> None:
    held = read_lease(url)
    if held is not None and held.token == lease.token:
        _lease_file(url).remove("")


@contextlib.contextmanager
def store_lease(url: str, command: str) -> Iterator[Lease]:
    """Hold the lease of the store at ``url`` (which need not exist yet) for the block."""
    lease = acquire_lease(url, command)
    try:
        yield lease
    finally:
        with contextlib.suppress(StoreError, OSError):
            release_lease(url, lease)


def clear_scratch(url: str) -> None:
    """Remove the scratch folders that killed writers left beside the store (call under its lease)."""
    if is_local(url):
        import shutil

        shutil.rmtree(local_path(url).rstrip("/") + SCRATCH_SUFFIX, ignore_errors=True)


# -- replacement ----------------------------------------------------------------------------------------
def aside_url(url: str) -> str:
    return url.rstrip("/") + ASIDE_SUFFIX


def _move(src: StoreFiles, dst: StoreFiles) -> None:
    if src.local:
        os.rename(src.root, dst.root)
        return
    # no rename on object stores: copy object by object (server-side), the root zarr.json last, so
    # that dst is a store only once whole; then delete src, its zarr.json first, so that a half
    # deleted src is no store (recover() goes by both)
    if dst.exists():  # what an interrupted move left
        dst.remove("", recursive=True)
    keys = src.keys()
    rest = [k for k in keys if k != "zarr.json"]
    if rest:
        src.fs.copy([src.path(k) for k in rest], [dst.path(k) for k in rest])
    if "zarr.json" in keys:
        src.fs.copy(src.path("zarr.json"), dst.path("zarr.json"))
        src.remove("zarr.json")
    src.remove("", recursive=True)


def swap_in(aside: str, url: str) -> None:
    """Replace the store at ``url`` (if any) by the complete store at ``aside``."""
    new, target, old = StoreFiles(aside), StoreFiles(url), StoreFiles(url.rstrip("/") + OLD_SUFFIX)
    if old.exists():
        old.remove("", recursive=True)
    if target.exists():
        _move(target, old)
    _move(new, target)
    if old.exists():
        old.remove("", recursive=True)


def recover(url: str) -> None:
    """Finish or undo a swap that a killed process left half done."""
    target, old = StoreFiles(url), StoreFiles(url.rstrip("/") + OLD_SUFFIX)
    if not old.exists():
        return
    new = StoreFiles(aside_url(url))
    if target.exists("zarr.json"):  # the new store is in place (whole: zarr.json moves last)
        old.remove("", recursive=True)
        if not new.local and new.exists() and not new.exists("zarr.json"):  # its half-deleted source
            new.remove("", recursive=True)
        return
    _move(new if new.exists("zarr.json") else old, target)  # the complete new one, else put the old one back
    if old.exists():
        old.remove("", recursive=True)


# -- digests --------------------------------------------------------------------------------------------
def shard_keys(layout: StoreLayout, k: int) -> tuple[str, ...]:
    """The files that hold shard ``k`` (zarr v3 default chunk keys: one shard file per array)."""
    keys = [
        f"images/c/{k}" + "/0" * len(layout.image_shape),
        f"labels/c/{k}" + "/0" * len(layout.label_shape),
    ]
    keys += [f"meta/{m.name}/c/{k}" + "/0" * len(m.shape) for m in layout.meta]
    return tuple(keys)


def shard_digest(keys: tuple[str, ...], fingerprints: Mapping[str, str]) -> str:
    """``HASH:MASK``: HASH is SHA-256 (128 bits, hex) over the fingerprints of the shard's files
    (:func:`file_fingerprint`, in key order); MASK (hex) has bit ``i`` set where file ``keys[i]`` exists
    (a shard whose chunks are all fill value is not written)."""
    h = hashlib.sha256()
    for key in keys:
        if key in fingerprints:
            h.update(f"{key}\0{fingerprints[key]}\n".encode())
    mask = sum(1 << i for i, key in enumerate(keys) if key in fingerprints)
    return f"{h.hexdigest()[:32]}:{mask:x}"


def digest_files(keys: tuple[str, ...], digest: str) -> tuple[str, ...]:
    """The files of a shard that its digest says exist."""
    try:
        mask = int(digest.partition(":")[2], 16)
    except ValueError as e:
        raise StoreError(f"Expected a shard digest 'HASH:MASK'. Got {digest!r} instead.") from e
    return tuple(key for i, key in enumerate(keys) if mask >> i & 1)


def fingerprint_bytes(size: int, tail: bytes, chunks: int) -> str:
    """``SIZE-CRC``. For a shard file (``chunks`` > 0) the CRC32C is taken over the compressed length of
    every chunk, read from the shard index at its end (16 bytes per chunk, then the index's CRC32C):
    what was written, independent of the order in which the encoder placed the chunks, so a rewrite of
    the same data (a retried task) gives the same fingerprint. For a plain file (``chunks`` 0): the
    CRC32C of its bytes. The chunks' bytes are covered by their zstd checksums, checked on every decode."""
    import google_crc32c
    import numpy as np

    if chunks:
        index = bytes(tail[-(16 * chunks + 4) : -4]) if len(tail) >= 16 * chunks + 4 else b""
        lengths = np.frombuffer(index, "<u8").reshape(-1, 2)[:, 1].copy() if index else np.zeros(0, "<u8")
        lengths.setflags(write=False)
        return f"{size:x}-{google_crc32c.value(lengths):08x}"
    return f"{size:x}-{google_crc32c.value(bytes(tail)):08x}"


def file_fingerprint(path: str, chunks: int) -> str:
    """:func:`fingerprint_bytes` of a local file (reading only a shard file's index)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if chunks:
            f.seek(max(0, size - (16 * chunks + 4)))
        return fingerprint_bytes(size, f.read(), chunks)


def fingerprint_chunks(layout: StoreLayout) -> tuple[int, ...]:
    """Inner chunks per file of each of :func:`shard_keys`: images and labels are sharded, the small
    metadata arrays are one plain chunk per file (0: fingerprint the whole file)."""
    per_shard = -(-layout.shard_size // layout.chunk_size)
    return (per_shard, per_shard, *(0 for _ in layout.meta))
