"""``synthgen verify``: check every complete shard of a store against its digest, and decode it.

A shard fails when a file its digest lists is missing, when its files' hashes differ from the digest
recorded as it was written, or when a chunk does not decode (zstd checksums, the shard index's
CRC32C). ``repair`` unlists the failed shards (under the store's lease): rerunning the build that
wrote the store regenerates exactly those shards, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

from synthgen.errors import CorruptShardError
from synthgen.storage.integrity import (
    StoreFiles,
    digest_files,
    fingerprint_chunks,
    shard_digest,
    shard_keys,
    store_lease,
)
from synthgen.storage.store import StoreReader, StoreWriter


@dataclass(frozen=True)
class ShardProblem:
    shard: int
    problem: str


@dataclass(frozen=True)
class VerifyReport:
    url: str
    checked: int  # complete shards checked
    without_digest: int  # complete shards written before digests were recorded (decoded only)
    problems: tuple[ShardProblem, ...]
    repaired: bool

    @property
    def intact(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        out = [f"shard {p.shard}: {p.problem}" for p in self.problems]
        if self.without_digest:
            out.append(
                f"{self.without_digest} shard(s) carry no digest (an older synthgen wrote them): decoded only"
            )
        if not self.problems:
            out.append(f"{self.url}: {self.checked} complete shard(s) verified, all intact")
        elif self.repaired:
            shards = [p.shard for p in self.problems]
            out.append(
                f"{self.url}: unlisted {len(shards)} damaged shard(s) {shards}; rerun the command that built the "
                "store (same config) to write them again"
            )
        else:
            out.append(
                f"{self.url}: {len(self.problems)} of {self.checked} complete shard(s) damaged; "
                "'--repair' unlists them so that the build can write them again"
            )
        return out


def check_shard(reader: StoreReader, k: int) -> str | None:
    """What is wrong with complete shard ``k``, or None."""
    keys = shard_keys(reader.layout, k)
    digest = reader.attrs.shard_digests.get(k)
    files = StoreFiles(reader.url)
    if digest is not None:
        gone = [key for key in digest_files(keys, digest) if not files.exists(key)]
        if gone:
            return f"file(s) missing: {', '.join(gone)}"
        fingerprints = {
            key: files.fingerprint(key, chunks)
            for key, chunks in zip(keys, fingerprint_chunks(reader.layout), strict=True)
            if files.exists(key)
        }
        if shard_digest(keys, fingerprints) != digest:
            return "its files differ from the digest recorded when it was written"
    start, stop = reader.layout.shard_bounds(k)
    try:  # every chunk: its zstd checksum and the shard index's CRC32C
        for name in ("images", "labels", *(f"meta/{m.name}" for m in reader.layout.meta)):
            reader._read(name, start, stop)
    except CorruptShardError as e:
        return str(e.__cause__ or e)
    return None


def verify_store(url: str, *, repair: bool = False, progress: bool = False) -> VerifyReport:
    """Check every complete shard of the store at ``url``; with ``repair``, unlist the damaged ones."""
    from tqdm import tqdm

    reader = StoreReader(url)
    problems = []
    shards = reader.complete_shards
    for k in tqdm(shards, desc="verify", unit="shard", disable=not progress):
        problem = check_shard(reader, k)
        if problem is not None:
            problems.append(ShardProblem(k, problem))
    if repair and problems:
        with store_lease(url, "verify --repair"):
            StoreWriter.open(url).unmark(p.shard for p in problems)
    without = sum(1 for k in shards if k not in reader.attrs.shard_digests)
    return VerifyReport(url, len(shards), without, tuple(problems), repair and bool(problems))
