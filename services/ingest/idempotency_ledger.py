"""Idempotency for ingest: a ledger that every replica rebuilds from one Kafka topic.

Why a log and not a cache: two ingest replicas may receive the same event id (or
``Idempotency-Key``) at the same moment, and a replica may restart at any time. Every
replica therefore follows ``Topics.idempotency`` from the beginning and applies its
records, in partition order, to an in-memory :class:`IdempotencyLedger`. All records of
one tenant go to one partition, so every replica sees the same sequence and reaches the
same decision: **the first claim of an alias in the log wins**.

To accept an event with aliases a replica

1. looks the aliases up locally: accepted -> replay the original envelope; claimed but
   not yet accepted -> ``409`` (in progress) unless the claim is stale;
2. appends a ``claim`` record and waits until its own follower has applied that record,
   which tells it whether it won (nothing earlier in the partition claimed the alias);
3. if it won, appends the envelope to the events topic and then an ``accepted`` record.

A claim whose owner died before ``accepted`` (broker down, crash) becomes stale after a
while; a later repeat *takes it over* with a claim that names it in ``supersedes`` and
re-appends the **original** envelope (same id), so at worst the events topic holds the
same event id twice, never two different events for one alias.

Record keys are ``<tenant>/<claim_id>``: unique per claim, so compaction can replace a
claim only by its own ``accepted`` record and never lets a losing claim shadow a
winner. Entries expire ``window`` seconds after their record (record timestamps, so
every replica expires them at the same point of the log).
"""

from __future__ import annotations

import itertools
import os
import zlib
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from pydantic import ConfigDict

from webhooks.record import JsonRecord

RecordKind = Literal["claim", "accepted"]
PRUNE_SLACK_MS = 3600 * 1000


_CLAIM_ID_PREFIX = os.urandom(8).hex()  # this process's; a counter numbers its claims
_claim_numbers = itertools.count()


def new_claim_id() -> str:
    """A unique id for one claim (one attempt to accept an event): a random prefix per
    process and a counter, a fraction of the cost of a uuid4 per event."""
    return f"{_CLAIM_ID_PREFIX}{next(_claim_numbers):x}"


def partition_for_tenant(tenant: str, partitions: int) -> int:
    """The idempotency-topic partition that orders every claim of ``tenant``."""
    return zlib.crc32(tenant.encode()) % partitions


class LedgerRecord(JsonRecord):
    """One record of the idempotency topic (a claim or an acceptance)."""

    # Unknown fields are ignored rather than refused: a replica must keep following the
    # ledger while a newer version that writes more is being rolled out.
    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: RecordKind
    claim_id: str
    tenant: str
    aliases: tuple[str, ...]
    envelope: str  # the envelope JSON exactly as appended to the events topic
    supersedes: str | None = None

    def key(self) -> bytes:
        """The Kafka key: unique per claim, shared by the claim and its acceptance."""
        return f"{self.tenant}/{self.claim_id}".encode()

    def accepted(self) -> LedgerRecord:
        """The record that marks this claim's event as appended."""
        return self.model_copy(update={"kind": "accepted"})


class Entry(NamedTuple):
    """What the ledger knows about one alias."""

    claim_id: str
    envelope: str
    accepted: bool
    since_ms: int


_SINCE_MS = Entry._fields.index("since_ms")


@dataclass(frozen=True)
class ClaimOutcome:
    """The ledger's verdict on a claim: did it win, and what the alias maps to now."""

    won: bool
    entry: Entry | None


@dataclass
class IdempotencyLedger:
    """The deterministic state machine every replica runs over the idempotency topic."""

    window_ms: int
    # Plain tuples (an Entry's fields), not Entry objects: the garbage collector stops
    # tracking a plain tuple of strings and numbers (not a subclass), so a ledger of a
    # million entries adds nothing to a full collection's scan; tracked, they made each
    # one take ~100 ms and cost the intake a third of its time.
    _entries: dict[str, tuple[str, str, bool, int]] = field(default_factory=dict)

    @staticmethod
    def _slot(tenant: str, alias: str) -> str:
        return f"{tenant}/{alias}"

    def _live(self, slot: str, at_ms: int) -> Entry | None:
        fields = self._entries.get(slot)
        if fields is None or fields[_SINCE_MS] + self.window_ms < at_ms:
            return None  # unknown, or older than the window: the alias is free again
        return Entry(*fields)

    def lookup(self, tenant: str, aliases: tuple[str, ...], at_ms: int) -> Entry | None:
        """The entry of the first alias known at ``at_ms``, if any."""
        for alias in aliases:
            entry = self._live(self._slot(tenant, alias), at_ms)
            if entry is not None:
                return entry
        return None

    def apply(self, record: LedgerRecord, timestamp_ms: int) -> ClaimOutcome:
        """Apply one record in log order; for a claim, say whether it won."""
        if record.kind == "accepted":
            entry = Entry(record.claim_id, record.envelope, True, timestamp_ms)
            for alias in record.aliases:
                slot = self._slot(record.tenant, alias)
                current = self._live(slot, timestamp_ms)
                # Accepted is authoritative (only a winner writes it, and takeovers reuse
                # the original envelope), unless the alias is already accepted.
                if current is None or not current.accepted:
                    self._entries[slot] = tuple(entry)
            return ClaimOutcome(True, entry)

        existing = self.lookup(record.tenant, record.aliases, timestamp_ms)
        takes_over = (existing is not None and not existing.accepted
                      and record.supersedes == existing.claim_id)
        if existing is not None and not takes_over:
            return ClaimOutcome(False, existing)
        entry = Entry(record.claim_id, record.envelope, False, timestamp_ms)
        for alias in record.aliases:
            self._entries[self._slot(record.tenant, alias)] = tuple(entry)
        return ClaimOutcome(True, entry)

    def prune(self, now_ms: int, slack_ms: int = PRUNE_SLACK_MS) -> int:
        """Forget entries older than the window; return how many went.

        The slack keeps entries a little longer than :meth:`lookup` honours them, so a
        record stamped by a replica whose clock lags still meets the same state on
        every replica.
        """
        expired = [slot for slot, fields in self._entries.items()
                   if fields[_SINCE_MS] + self.window_ms + slack_ms < now_ms]
        for slot in expired:
            del self._entries[slot]
        return len(expired)

    def __len__(self) -> int:
        return len(self._entries)
