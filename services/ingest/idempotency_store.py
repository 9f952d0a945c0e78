"""The idempotency ledger's entries on local disk (RocksDB), with the offsets they cover.

Why on disk: an ingest pod used to hold every id and key of the whole window in memory
(~700 bytes each: 86 million at 1,000 events/s and 24 h) and re-read the whole ledger
topic before turning ready. :class:`DiskEntries` keeps them in RocksDB (``rocksdict``),
so memory is bounded by RocksDB's caches, and stores with them, in the same atomic
write, the last topic offset applied per partition: a restart reads only what is new.

Invariant: the database is always the ledger of the topic's records *up to the stored
offsets*, never more and never less. Applied entries gather in memory (``_pending``,
seen by every lookup) and are written with the offsets in one ``WriteBatch`` by
:meth:`DiskEntries.commit` (the follower calls it after each poll); the write-ahead
log makes that batch survive a ``kill -9`` whole or not at all. A crash loses only
the pending entries, whose records lie after the stored offsets and are read again.

Expiry without a per-entry scan or tombstones: entries go into time buckets (one column
family each) by the ledger's *clock*, the highest record timestamp applied so far. The
clock never goes back, so later writes of a slot land in the same or a newer bucket,
and a lookup that asks the buckets newest first finds the latest. Every entry of a
bucket is older than the next bucket's start, so the bucket is dropped whole (a cheap
``drop_column_family``) once that start is ``window`` + slack behind the wall clock:
never before :class:`~services.ingest.idempotency_ledger.IdempotencyLedger` stops
honouring its entries, as the in-memory prune did. With buckets of half a window, at
most about three are live (a lookup of an unknown id asks each: ~1.3 µs apiece with
their Bloom filters) and the disk holds at most ~1.5 windows of entries.

Each process takes its own subdirectory under ``WEBHOOKS_IDEMPOTENCY_DIR`` (an exclusive
``flock``: :class:`IndexDirectory`), so the workers of one pod never share a database,
and a restarted worker takes a free one back. The database records which topic it
follows (the cluster id, the topic id, the partition count): one that does not match
(another cluster, a re-created topic), cannot be opened (corrupt) or has offsets past
the topic's end is wiped and rebuilt from the topic.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rocksdict import (
    BlockBasedOptions,
    Cache,
    DBCompressionType,
    Options,
    Rdict,
    WriteBatch,
    WriteBufferManager,
)

log = logging.getLogger(__name__)

FORMAT = 1
"""Version of the on-disk layout; a database of another version is rebuilt."""
META = "meta"
BUCKET_PREFIX = "bucket-"
BUCKETS_PER_WINDOW = 2
BLOCK_CACHE_BYTES = 32 * 2**20
"""Uncompressed data blocks in memory: recently read or written entries."""
MEMTABLE_BYTES = 32 * 2**20
"""Entries written but not yet flushed to files, across buckets (a replay of a known id
is rare; an unknown id is answered by the Bloom filters, which stay with their files:
these two budgets are most of the index's memory besides ~2.5 bytes per entry)."""
MAX_WORKER_DIRS = 64

EntryFields = tuple[str, str, bool, int]
"""What the ledger keeps per slot: claim id, envelope JSON, accepted, record time (ms)."""

_HEADER = struct.Struct(">q?H")  # record time, accepted, length of the claim id


def encode_fields(fields: EntryFields) -> bytes:
    """The stored value: a fixed header, the claim id, then the envelope's UTF-8 bytes."""
    claim_id, envelope, accepted, since_ms = fields
    claim = claim_id.encode()
    return _HEADER.pack(since_ms, accepted, len(claim)) + claim + envelope.encode()


def decode_fields(raw: bytes) -> EntryFields:
    """The inverse of :func:`encode_fields`."""
    since_ms, accepted, length = _HEADER.unpack_from(raw)
    start = _HEADER.size
    return (raw[start:start + length].decode(), raw[start + length:].decode(), accepted,
            since_ms)


@dataclass(frozen=True)
class TopicIdentity:
    """Which topic a database follows; a different one means the offsets mean nothing."""

    topic: str
    cluster_id: str
    topic_id: str
    partitions: int

    def to_json(self) -> bytes:
        return json.dumps({"format": FORMAT, "topic": self.topic, "cluster_id": self.cluster_id,
                           "topic_id": self.topic_id, "partitions": self.partitions}).encode()


class IndexDirectory:
    """This process's own subdirectory ``<root>/<topic>/<n>``, held by an exclusive flock.

    The lock is released by the kernel when the process dies, so a restarted worker (or
    pod container) takes the first free directory back and resumes from its offsets.
    An ``flock`` conflicts even within one process, so two replicas in one process
    (tests) get two directories as well.
    """

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self._lock_fd: int | None = lock_fd

    @classmethod
    def claim(cls, root: Path, topic: str) -> IndexDirectory:
        """The first unlocked ``<root>/<topic>/<n>``, locked for this process."""
        for n in range(MAX_WORKER_DIRS):
            path = root / topic / str(n)
            path.mkdir(parents=True, exist_ok=True)
            fd = os.open(path / "owner.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return cls(path, fd)
        raise RuntimeError(f"all {MAX_WORKER_DIRS} index directories under {root / topic} "
                           "are in use")

    @property
    def database(self) -> Path:
        return self.path / "db"

    def release(self) -> None:
        """Unlock (once the database is closed)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the only descriptor releases the flock
            self._lock_fd = None


def _options(cache: Cache, buffers: WriteBufferManager) -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.create_missing_column_families(True)
    # The memtables of every bucket share one budget; an old bucket's leftovers are
    # flushed once the write-ahead log passes its cap.
    options.set_write_buffer_manager(buffers)
    options.set_write_buffer_size(16 * 2**20)
    options.set_max_total_wal_size(128 * 2**20)
    options.set_max_background_jobs(2)
    options.set_keep_log_file_num(2)
    # lz4 everywhere: a replayed (known) id decompresses one block; zstd made that ~2x
    # slower for ~40% less disk.
    options.set_compression_type(DBCompressionType.lz4())
    table = BlockBasedOptions()
    table.set_block_cache(cache)
    table.set_block_size(16 * 1024)
    table.set_bloom_filter(10, False)  # ~1% false positives: an unknown id rarely reads a block
    # Filters and indexes stay with their files (~1.3 + ~1 byte per entry) rather than in the
    # block cache: the uncompressed entries outgrow the cache, and filter blocks evicted by
    # data made every lookup of an unknown id (each fresh acceptance applied) read them
    # again: 13-38 us instead of 2-5.
    options.set_block_based_table_factory(table)
    return options


class DiskEntries:
    """The ledger's entries (slot -> :data:`EntryFields`) in one RocksDB database.

    Not thread-safe: the idempotency view calls it under its lock.
    """

    def __init__(self, path: Path, window_ms: int) -> None:
        self.path = path
        self.window_ms = window_ms
        self.width_ms = max(1, window_ms // BUCKETS_PER_WINDOW)
        self._cache = Cache(BLOCK_CACHE_BYTES)
        self._buffers = WriteBufferManager(MEMTABLE_BYTES, False)
        self._pending: dict[str, tuple[EntryFields, int]] = {}  # slot -> (fields, bucket)
        self._db: Rdict | None = None
        self._meta: Any = None
        self._buckets: dict[int, Any] = {}  # bucket start -> its column family, by start
        self._clock = 0
        self._open()

    def memory(self) -> dict[str, int]:
        """Bytes held by the index's two bounded budgets: memtables (entries not flushed
        yet, up to MEMTABLE_BYTES) and the block cache (up to BLOCK_CACHE_BYTES). They fill
        over the first hours of traffic; growth beyond them would be a leak."""
        return {"memtables": self._buffers.get_usage(), "block_cache": self._cache.get_usage()}

    # -- opening, identity, starting over -------------------------------------------------

    def _open(self) -> None:
        options = _options(self._cache, self._buffers)
        try:
            names = Rdict.list_cf(str(self.path)) if (self.path / "CURRENT").exists() else []
            self._db = Rdict(str(self.path), options, column_families={
                name: _options(self._cache, self._buffers) for name in names})
            self._meta = self._column_family(META, names)
            # Names carry zero-padded starts, so sorted names are buckets oldest first.
            self._buckets = {int(name.removeprefix(BUCKET_PREFIX)): self._db.get_column_family(name)
                             for name in sorted(names) if name.startswith(BUCKET_PREFIX)}
            self._clock = int(self._meta.get(b"clock") or 0)
        except Exception as exc:  # RocksDB raises plain Exceptions (corruption, I/O)
            log.warning("idempotency index at %s cannot be opened (%s): rebuilding it",
                        self.path, exc)
            self._wipe()

    def _column_family(self, name: str, existing: list[str]) -> Any:
        assert self._db is not None
        if name in existing:
            return self._db.get_column_family(name)
        return self._db.create_column_family(name, _options(self._cache, self._buffers))

    def _wipe(self) -> None:
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)
        self._db = Rdict(str(self.path), _options(self._cache, self._buffers))
        self._meta = self._column_family(META, [])
        self._buckets, self._clock, self._pending = {}, 0, {}

    def identity(self) -> dict[str, Any] | None:
        """The identity stored with the entries (see :class:`TopicIdentity`), if any."""
        raw = self._meta.get(b"identity")
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def offsets(self) -> dict[int, int]:
        """The last offset applied per partition (what the entries cover)."""
        raw = self._meta.get(b"offsets")
        return {int(p): offset for p, offset in json.loads(raw).items()} if raw else {}

    def start_over(self, identity: TopicIdentity) -> None:
        """Drop everything and follow ``identity``'s topic from its beginning."""
        self._wipe()
        self._meta[b"identity"] = identity.to_json()

    def matches(self, identity: TopicIdentity) -> bool:
        """True if these entries were built from ``identity``'s topic, in this format."""
        return self.identity() == json.loads(identity.to_json())

    # -- reads and writes --------------------------------------------------------------------

    def get(self, slot: str) -> EntryFields | None:
        """The latest fields of ``slot``: pending first, then the buckets newest first."""
        pending = self._pending.get(slot)
        if pending is not None:
            return pending[0]
        key = slot.encode()
        for bucket in reversed(self._buckets.values()):
            raw = bucket.get(key)
            if raw is not None:
                return decode_fields(raw)
        return None

    def put(self, slot: str, fields: EntryFields) -> None:
        """Set ``slot`` (pending until :meth:`commit`), in the bucket of the clock."""
        self._clock = max(self._clock, fields[3])
        newest = next(reversed(self._buckets), None)
        if newest is None or self._clock >= newest + self.width_ms:
            # Starting at the clock itself (not a rounded time): every entry written so far
            # is at most that old, also after a change of the window (and so the width).
            newest = self._clock
            assert self._db is not None
            self._buckets[newest] = self._db.create_column_family(
                f"{BUCKET_PREFIX}{newest:015d}", _options(self._cache, self._buffers))
        self._pending[slot] = (fields, newest)

    def commit(self, offsets: dict[int, int] | None) -> None:
        """Write the pending entries and ``offsets`` (None: keep the stored ones) at once."""
        if not self._pending and offsets is None:
            return
        assert self._db is not None
        batch = WriteBatch(raw_mode=True)
        handles = {start: self._db.get_column_family_handle(f"{BUCKET_PREFIX}{start:015d}")
                   for start in {bucket for _, bucket in self._pending.values()}}
        for slot, (fields, bucket) in self._pending.items():
            batch.put(slot.encode(), encode_fields(fields), handles[bucket])
        meta = self._db.get_column_family_handle(META)
        batch.put(b"clock", str(self._clock).encode(), meta)
        if offsets is not None:
            batch.put(b"offsets", json.dumps(offsets).encode(), meta)
        self._db.write(batch)
        self._pending.clear()

    def discard_pending(self) -> None:
        """Forget what was applied since the last commit (it will be read again)."""
        self._pending.clear()
        self._clock = int(self._meta.get(b"clock") or 0)

    def expire(self, now_ms: int, slack_ms: int) -> int:
        """Drop every bucket whose entries are all older than the window plus ``slack_ms``
        at ``now_ms``; return how many went. The newest bucket is never dropped."""
        starts = list(self._buckets)
        dropped = 0
        for start, next_start in zip(starts, starts[1:], strict=False):
            # Every entry of this bucket is older than the next one's start.
            if next_start + self.window_ms + slack_ms >= now_ms:
                break
            if any(bucket == start for _, bucket in self._pending.values()):
                break  # not yet written; next time
            assert self._db is not None
            self._buckets.pop(start).close()
            self._db.drop_column_family(f"{BUCKET_PREFIX}{start:015d}")
            dropped += 1
        return dropped

    @property
    def buckets(self) -> list[int]:
        """The start (ms) of every bucket, oldest first."""
        return list(self._buckets)

    def estimated_entries(self) -> int:
        """RocksDB's estimate of the stored entries (superseded ones may count twice)."""
        return sum(bucket.property_int_value("rocksdb.estimate-num-keys") or 0
                   for bucket in self._buckets.values()) + len(self._pending)

    def close(self) -> None:
        """Close the database (pending entries are dropped: commit first)."""
        for handle in [*self._buckets.values(), self._meta]:
            if handle is not None:
                with contextlib.suppress(Exception):
                    handle.close()
        self._buckets, self._meta = {}, None
        if self._db is not None:
            self._db.close()
            self._db = None


@contextlib.contextmanager
def opened_index(root: Path, topic: str, window_ms: int) -> Iterator[DiskEntries]:
    """The index of a process that is not running (its directory free), for inspection
    and benchmarks."""
    directory = IndexDirectory.claim(root, topic)
    entries = DiskEntries(directory.database, window_ms)
    try:
        yield entries
    finally:
        entries.close()
        directory.release()
