"""The idempotency ledger: the deterministic state machine every ingest replica runs,
on its on-disk index (RocksDB in a temporary directory)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.ingest.idempotency_ledger import (
    AcceptedBatch,
    AcceptedEvent,
    IdempotencyLedger,
    LedgerRecord,
    decode_record,
    partition_for_tenant,
)
from services.ingest.idempotency_store import DiskEntries

WINDOW_MS = 24 * 3600 * 1000
MakeLedger = Callable[..., IdempotencyLedger]


@pytest.fixture
def make_ledger(tmp_path: Path) -> Iterator[MakeLedger]:
    """Ledgers on fresh indexes, closed at the end."""
    opened: list[DiskEntries] = []

    def make(window_ms: int = WINDOW_MS) -> IdempotencyLedger:
        entries = DiskEntries(tmp_path / f"index-{len(opened)}", window_ms)
        opened.append(entries)
        return IdempotencyLedger(window_ms, entries)

    yield make
    for entries in opened:
        entries.close()


def claim(claim_id: str, *aliases: str, envelope: str = "{}", tenant: str = "acme",
          supersedes: str | None = None) -> LedgerRecord:
    return LedgerRecord(kind="claim", claim_id=claim_id, tenant=tenant, aliases=aliases,
                        envelope=envelope, supersedes=supersedes)


def test_first_claim_of_an_alias_wins_and_later_ones_see_it(make_ledger: MakeLedger) -> None:
    ledger = make_ledger()
    assert ledger.apply(claim("c1", "id:evt_1", envelope="A"), 1000).won
    lost = ledger.apply(claim("c2", "id:evt_1", envelope="B"), 1001)
    assert not lost.won and lost.entry is not None and lost.entry.envelope == "A"
    assert not lost.entry.accepted


def test_any_shared_alias_conflicts_and_tenants_are_separate(make_ledger: MakeLedger) -> None:
    ledger = make_ledger()
    assert ledger.apply(claim("c1", "id:evt_1", "key:k"), 1000).won
    assert not ledger.apply(claim("c2", "id:evt_2", "key:k"), 1001).won
    assert ledger.apply(claim("c3", "key:k", tenant="globex"), 1002).won


def test_acceptance_is_looked_up_and_replays_the_original(make_ledger: MakeLedger) -> None:
    ledger = make_ledger()
    record = claim("c1", "key:k", envelope="A")
    ledger.apply(record, 1000)
    ledger.apply(record.accepted(), 1010)
    entry = ledger.lookup("acme", ("key:k",), 2000)
    assert entry is not None and entry.accepted and entry.envelope == "A"
    assert not ledger.apply(claim("c2", "key:k", envelope="B"), 2000).won


def test_a_takeover_must_name_the_pending_claim_and_only_the_first_succeeds(
        make_ledger: MakeLedger) -> None:
    ledger = make_ledger()
    ledger.apply(claim("c1", "id:evt_1", envelope="A"), 1000)
    assert not ledger.apply(claim("c2", "id:evt_1", envelope="A", supersedes="nope"), 9000).won
    assert ledger.apply(claim("c3", "id:evt_1", envelope="A", supersedes="c1"), 9001).won
    # A second replica racing to take over the same dead claim loses.
    assert not ledger.apply(claim("c4", "id:evt_1", envelope="A", supersedes="c1"), 9002).won
    # An accepted entry cannot be taken over.
    ledger.apply(claim("c3", "id:evt_1", envelope="A").accepted(), 9003)
    assert not ledger.apply(claim("c5", "id:evt_1", supersedes="c3"), 9004).won


def test_acceptance_after_compaction_overrides_a_losing_claim_seen_first(
        make_ledger: MakeLedger) -> None:
    # Compaction may drop the winner's claim (replaced by its accepted record, later in
    # the log), so a replaying replica can meet a losing claim first.
    ledger = make_ledger()
    ledger.apply(claim("loser", "id:evt_1", envelope="B"), 1005)
    ledger.apply(claim("winner", "id:evt_1", envelope="A").accepted(), 1010)
    entry = ledger.lookup("acme", ("id:evt_1",), 1020)
    assert entry is not None and entry.accepted and entry.envelope == "A"


def test_entries_expire_after_the_window_by_record_time(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(window_ms=1000)
    record = claim("c1", "id:evt_1")
    ledger.apply(record.accepted(), 10_000)
    assert ledger.lookup("acme", ("id:evt_1",), 10_999) is not None
    assert ledger.lookup("acme", ("id:evt_1",), 11_001) is None
    assert ledger.apply(claim("c2", "id:evt_1"), 11_001).won


def test_expiry_drops_whole_buckets_once_every_entry_is_past_window_and_slack(
        make_ledger: MakeLedger) -> None:
    ledger = make_ledger(window_ms=1000)  # buckets of 500 ms of the ledger's clock
    ledger.apply(claim("c1", "id:evt_1").accepted(), 10_000)
    ledger.apply(claim("c2", "id:evt_2").accepted(), 12_000)  # a newer bucket
    ledger.entries.commit({0: 1})
    # Entries of the first bucket are older than 12 000: kept until 12 000 + window + slack.
    assert ledger.prune(now_ms=12_999, slack_ms=0) == 0
    assert ledger.prune(now_ms=13_001, slack_ms=3_000) == 0
    assert ledger.entries.get("acme/id:evt_1") is not None
    assert ledger.prune(now_ms=13_001, slack_ms=0) == 1
    assert ledger.entries.get("acme/id:evt_1") is None  # gone from disk, not only hidden
    assert ledger.lookup("acme", ("id:evt_2",), 12_500) is not None
    assert ledger.prune(now_ms=10**9, slack_ms=0) == 0  # the newest bucket is never dropped


def test_records_round_trip_and_keys_are_unique_per_claim() -> None:
    record = claim("c1", "id:evt_1", "key:k", envelope='{"id":"evt_1"}', supersedes="c0")
    assert LedgerRecord.from_json(record.to_json()) == record
    assert record.key() == b"acme/c1" and record.accepted().key() == record.key()


def test_a_batch_of_fresh_acceptances_replays_each_envelope_and_wins_no_accepted_alias(
        make_ledger: MakeLedger) -> None:
    ledger = make_ledger()
    ledger.apply(claim("c0", "id:evt_0", envelope="first").accepted(), 900)
    [batch] = AcceptedBatch.of("acme", [AcceptedEvent(("id:evt_0",), "second"),
                                        AcceptedEvent(("id:evt_1",), "A"),
                                        AcceptedEvent(("id:evt_2", "key:k"), "B")])
    ledger.apply_batch(batch, 1000)
    assert [ledger.lookup("acme", (alias,), 2000).envelope  # type: ignore[union-attr]
            for alias in ("id:evt_0", "id:evt_1", "key:k")] == ["first", "A", "B"]
    assert ledger.lookup("globex", ("id:evt_1",), 2000) is None
    assert not ledger.apply(claim("c3", "key:k"), 2000).won
    assert ledger.lookup("acme", ("id:evt_1",), 1000 + WINDOW_MS + 1) is None


def test_batches_split_by_envelope_size_and_every_record_kind_decodes() -> None:
    events = [AcceptedEvent((f"id:evt_{n}",), "x" * 40) for n in range(5)]
    batches = list(AcceptedBatch.of("acme", events, max_chars=100))
    assert [len(b.events) for b in batches] == [2, 2, 1]
    assert len({b.key() for b in batches}) == 3
    assert [e for b in batches for e in b.events] == events
    assert [len(b.events) for b in AcceptedBatch.of("acme", [AcceptedEvent((), "y" * 500)],
                                                    max_chars=100)] == [1]
    record = claim("c1", "id:evt_1")
    assert [decode_record(r.to_json()) for r in (batches[0], record)] == [batches[0], record]
    with pytest.raises(ValueError):
        decode_record(b'{"kind":"forgotten","tenant":"acme"}')


def test_every_claim_of_a_tenant_goes_to_one_partition() -> None:
    assert {partition_for_tenant("acme", 6) for _ in range(3)} == {partition_for_tenant("acme", 6)}
    assert len({partition_for_tenant(f"t{n}", 6) for n in range(50)}) == 6
