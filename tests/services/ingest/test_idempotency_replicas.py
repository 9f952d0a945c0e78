"""Idempotency across ingest restarts and between concurrent replicas, on the real broker.

Each replica is a separate app with its own producer and its own ledger follower, so
they share nothing but Kafka, as two pods would.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from services.ingest.idempotency_ledger import LedgerRecord, decode_record
from tests.services.ingest.conftest import ACME, envelopes_on, running_ingest
from tests.support.kafka import read_topic
from webhooks.acked_producer import AckedProducer
from webhooks.settings import Settings
from webhooks.topics import Topics

MAX_RACE_ROUNDS = 5


def test_repeats_after_a_restart_are_replayed_not_appended(settings: Settings) -> None:
    mark = uuid.uuid4().hex
    by_id = {"type": "order.paid", "data": {"marker": mark}, "id": f"evt_r{mark}"}
    keyed = {**ACME, "Idempotency-Key": f"restart-{mark}"}
    with running_ingest(settings) as first:
        original_by_id = first.post("/v1/events", json=by_id, headers=ACME)
        original_by_key = first.post("/v1/events", json={"type": "order.paid",
                                                         "data": {"marker": mark}}, headers=keyed)
        assert (original_by_id.status_code, original_by_key.status_code) == (202, 202)
        # Ids ingest generates need no claim: their acceptances share one ledger record.
        generated = [r["envelope"] for r in first.post("/v1/events/batch", headers=ACME, json={
            "events": [{"type": "order.made", "data": {"marker": mark, "n": n}}
                       for n in range(3)]}).json()["data"]]

    with running_ingest(settings) as restarted:  # a new replica: ledger rebuilt from Kafka
        again_by_id = restarted.post("/v1/events", json=by_id, headers=ACME)
        again_by_key = restarted.post("/v1/events", json={"type": "order.paid",
                                                          "data": {"marker": mark}},
                                      headers=keyed)
        assert (again_by_id.status_code, again_by_key.status_code) == (200, 200)
        assert again_by_id.json() == original_by_id.json()
        assert again_by_key.json() == original_by_key.json()
        echoed = [restarted.post("/v1/events", headers=ACME, json={
            "type": "order.made", "data": {}, "id": envelope["id"]}) for envelope in generated]
        assert [(r.status_code, r.json()) for r in echoed] == [(200, e) for e in generated]
        last = restarted.post("/v1/events", json={"type": "order.done", "data": {"marker": mark}},
                              headers=ACME).json()["id"]

    found = envelopes_on(settings, Topics.from_settings(settings).events, until_id=last,
                         marker=mark)
    assert sorted(e["id"] for e in found) == sorted([original_by_id.json()["id"],
                                                     original_by_key.json()["id"], last,
                                                     *(e["id"] for e in generated)])


def test_concurrent_replicas_racing_on_the_same_ids_append_each_once(settings: Settings) -> None:
    mark = uuid.uuid4().hex
    attempts_per_id = 6  # half on each replica, all released at once
    topics = Topics.from_settings(settings)
    raced: list[str] = []
    with running_ingest(settings) as one, running_ingest(settings) as two:
        # Whether both replicas claim an id before either reads the other's claim back is
        # a matter of timing; rounds go on (each checked in full) until one such race
        # has really happened, so the check below is not left to chance.
        for round_ in range(MAX_RACE_ROUNDS):
            ids = [f"evt_c{round_}x{n}{mark}" for n in range(4)]
            raced += ids
            start = threading.Barrier(len(ids) * attempts_per_id)

            def attempt(job: tuple[int, str], start: threading.Barrier = start
                        ) -> tuple[str, int, dict]:
                n, event_id = job
                client = one if n % 2 else two
                body = {"type": "order.raced", "data": {"marker": mark, "attempt": n},
                        "id": event_id}
                start.wait()
                response = client.post("/v1/events", json=body, headers=ACME)
                return event_id, response.status_code, response.json()

            jobs = [(n, event_id) for event_id in ids for n in range(attempts_per_id)]
            with ThreadPoolExecutor(len(jobs)) as pool:
                outcomes = list(pool.map(attempt, jobs))

            for event_id in ids:
                mine = [(status, body) for eid, status, body in outcomes if eid == event_id]
                statuses = sorted(status for status, _ in mine)
                assert statuses == [200] * (attempts_per_id - 1) + [202], mine
                # Every answer carries the winner's envelope.
                assert len({str(sorted(body.items())) for _, body in mine}) == 1
            if max(competing_claims(settings, ids).values()) > 1:
                break
        else:
            raise AssertionError(f"no two replicas claimed the same id in {MAX_RACE_ROUNDS} "
                                 "rounds: the race was never exercised")
        last = one.post("/v1/events", json={"type": "order.done", "data": {"marker": mark}},
                        headers=ACME).json()["id"]

    found = envelopes_on(settings, topics.events, until_id=last, marker=mark)
    assert sorted(e["id"] for e in found) == sorted([*raced, last])


def competing_claims(settings: Settings, ids: list[str]) -> Counter[str]:
    """How many claims the ledger holds for each of ``ids`` (more than one: a race)."""
    aliases = {f"id:{i}" for i in ids}
    records = (decode_record(m.value())
               for m in read_topic(settings, Topics.from_settings(settings).idempotency))
    return Counter(record.aliases[0] for record in records
                   if isinstance(record, LedgerRecord) and record.kind == "claim"
                   and record.aliases[0] in aliases)


def test_a_claim_left_by_a_dead_replica_is_taken_over_with_its_envelope(
        make_settings, settings: Settings) -> None:
    fast = make_settings(ingest_produce_timeout=1.0)  # claims turn stale after 3 s
    topics = Topics.from_settings(fast)
    mark = uuid.uuid4().hex
    event_id = f"evt_d{mark}"
    orphan_envelope = ('{"id":"' + event_id + '","type":"order.orphaned","api_version":'
                       '"2026-11-01","created":"2026-11-22T10:30:00.000000Z","tenant":"acme",'
                       '"data":{"marker":"' + mark + '"}}')
    with running_ingest(fast) as replica:
        view = replica.app.state.runtime.view
        orphan = LedgerRecord(kind="claim", claim_id=uuid.uuid4().hex, tenant="acme",
                              aliases=(f"id:{event_id}",), envelope=orphan_envelope)
        # The dead replica claimed the id and never appended it.
        AckedProducer(fast.kafka, timeout=10).send(topics.idempotency, orphan.to_json(),
                                                   key=orphan.key())
        body = {"type": "order.retried", "data": {"marker": mark}, "id": event_id}
        while view.lookup("acme", (f"id:{event_id}",)) is None:
            threading.Event().wait(0.05)
        waited = replica.post("/v1/events", json=body, headers=ACME)
        assert waited.status_code == 409, waited.text  # still fresh: someone may be appending
        assert waited.headers["retry-after"]
        taken_over = replica.post("/v1/events", json=body, headers=ACME)
        assert taken_over.status_code == 202, taken_over.text
        assert taken_over.json()["type"] == "order.orphaned"  # the original, not the retry
        assert replica.post("/v1/events", json=body, headers=ACME).status_code == 200

    found = envelopes_on(fast, topics.events, until_id=event_id, marker=mark)
    assert [e["id"] for e in found] == [event_id]


def test_single_posts_share_ledger_records_written_after_the_answer(settings: Settings) -> None:
    mark = uuid.uuid4().hex
    with running_ingest(settings) as first:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda n: first.post("/v1/events", headers=ACME, json={
                "type": "order.made", "data": {"marker": mark, "n": n}}), range(40)))
        assert [a.status_code for a in answers] == [202] * 40
        generated = [a.json() for a in answers]
        # Sent back to the replica that answered, before any ledger record could be read
        # back: replayed from what it applied at once.
        echoed = first.post("/v1/events", headers=ACME, json={
            "type": "order.made", "data": {}, "id": generated[0]["id"]})
        assert (echoed.status_code, echoed.json()) == (200, generated[0])

        # The records are written by the timer, not at shutdown: a second replica that
        # builds its ledger from Kafka while the first still runs replays every id.
        with running_ingest(settings) as second:
            again = [second.post("/v1/events", headers=ACME, json={
                "type": "order.made", "data": {}, "id": envelope["id"]})
                for envelope in generated]
            assert [(r.status_code, r.json()) for r in again] == [(200, e) for e in generated]

    ours = {envelope["id"] for envelope in generated}
    batches = [record for record in (decode_record(m.value()) for m in read_topic(
        settings, Topics.from_settings(settings).idempotency, idle=1.0))
        if not isinstance(record, LedgerRecord)
        and {event.aliases[-1].removeprefix("id:") for event in record.events} & ours]
    recorded = [event.aliases[-1].removeprefix("id:") for b in batches for event in b.events]
    assert sorted(recorded) == sorted(ours)  # each once
    assert len(batches) < len(ours)  # gathered: fewer records than events
