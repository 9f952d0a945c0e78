"""What ``webhooks rotate-secrets-key`` does: every endpoint record re-encrypted with the
current key.

Reads the compacted endpoints topic to its end and writes back, acknowledged by Kafka,
every live record whose signing secrets are not all sealed with the first key of
``WEBHOOKS_SECRETS_KEY``: records sealed with an older key, and plain ``whsec_`` records
of an install from before encryption (that is its migration). Idempotent: a second run
finds nothing to do. Safe while the services run: their readers hold the old and the new
keys, and the eventlog API seals whatever it writes with the new one.

A record is rewritten from the version this command read. Another writer (the API, a
fanout disabling the endpoint) may change the endpoint in the moment between that read
and the write, which the write would then undo; so the command follows the topic on, and
writes any such change again, sealed, after its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field

import click

from webhooks.acked_producer import AckedProducer, Acknowledged
from webhooks.endpoint_secrets import EndpointRecords, StoredRecord, configured_keyring
from webhooks.endpoints import Endpoint
from webhooks.secret_encryption import SecretsKeyError, SecretsKeyring
from webhooks.settings import Settings
from webhooks.topics import Topics

REPAIR_ROUNDS = 3
"""Rounds of writing back changes made during the previous round's writes (one is the
realistic case: a change within milliseconds of a write)."""


@dataclass
class RotationReport:
    """What one run did, in counts (and the endpoints it could not open)."""

    key_id: str
    endpoints: int = 0
    """Live endpoint records read."""
    current: int = 0
    """Already sealed with ``key_id`` only: left as they are."""
    reencrypted: int = 0
    """Written back sealed with ``key_id``."""
    plain: int = 0
    """Of those, records that held unencrypted secrets."""
    rewritten_after_concurrent_change: int = 0
    invalid: int = 0
    """Records no reader accepts (skipped by every service too)."""
    failed: dict[str, str] = field(default_factory=dict)
    """Endpoint id -> why its secrets could not be opened (left unchanged)."""

    def lines(self) -> list[str]:
        """The report for people."""
        lines = [f"endpoints read: {self.endpoints}",
                 f"already sealed with key {self.key_id}: {self.current}",
                 f"re-encrypted with key {self.key_id}: {self.reencrypted} "
                 f"({self.plain} of them held unencrypted secrets)"]
        if self.rewritten_after_concurrent_change:
            lines.append("written again after a concurrent change: "
                         f"{self.rewritten_after_concurrent_change}")
        if self.invalid:
            lines.append(f"invalid records skipped: {self.invalid}")
        lines += [f"not re-encrypted: {endpoint_id}: {reason}"
                  for endpoint_id, reason in sorted(self.failed.items())]
        return lines


def rotate_secrets_key(settings: Settings, timeout: float = 60.0) -> RotationReport:
    """Re-encrypt every endpoint record not sealed with the primary key only (see the
    module docstring); raises ``ProduceFailed`` if Kafka does not acknowledge a write and
    ``click.ClickException`` if the topic cannot be read."""
    keyring = configured_keyring(settings, "rotate-secrets-key")
    topic = Topics.from_settings(settings).endpoints
    report = RotationReport(keyring.primary)
    records = EndpointRecords(settings.kafka, topic).start()
    producer = AckedProducer(settings.kafka)
    try:
        if not records.wait_ready(timeout):
            raise click.ClickException(f"could not read {topic} to its end within {timeout:.0f}s")
        pending = []
        for endpoint_id, record in records.snapshot().items():
            sealed = _resealed(keyring, endpoint_id, record, report)
            if sealed is not None:
                pending.append((endpoint_id, record,
                                producer.produce(topic, sealed, key=endpoint_id.encode())))
        written = _acknowledged(pending, producer.timeout)
        report.reencrypted = len(written)
        report.rewritten_after_concurrent_change = rewrite_concurrent_changes(
            records, producer, keyring, topic, written, timeout)
    finally:
        records.stop()
        producer.close()
    return report


def _resealed(keyring: SecretsKeyring, endpoint_id: str, record: StoredRecord,
              report: RotationReport) -> bytes | None:
    """The record's value sealed with the primary key, or None when it needs no write
    (a tombstone, already current, invalid, or unopenable: counted in ``report``)."""
    if record.value is None:
        return None
    try:
        endpoint = Endpoint.from_json(record.value)
    except Exception:  # the services skip such a record too
        report.invalid += 1
        return None
    report.endpoints += 1
    key_ids = endpoint.secret_key_ids()
    if key_ids == {keyring.primary}:
        report.current += 1
        return None
    try:
        sealed = endpoint.sealed(keyring)
    except SecretsKeyError as exc:
        report.failed[endpoint_id] = str(exc)
        return None
    if None in key_ids:
        report.plain += 1
    return sealed.to_json()


Written = list[tuple[str, StoredRecord, Acknowledged]]
"""Per write: the endpoint id, the record it was derived from, and where it was stored."""


def _acknowledged(pending: Iterable[tuple[str, StoredRecord, Future[Acknowledged]]],
                  timeout: float) -> Written:
    return [(endpoint_id, base, future.result(timeout + 5))
            for endpoint_id, base, future in pending]


def rewrite_concurrent_changes(records: EndpointRecords, producer: AckedProducer,
                                    keyring: SecretsKeyring, topic: str, written: Written,
                                    timeout: float) -> int:
    """Find records another writer stored between the version a write was derived from
    and the write itself (the write undid them), and write the newest of each again,
    sealed; repeated for those writes. Returns how many were written again."""
    ours: set[tuple[int, int]] = set()
    again = 0
    for _ in range(REPAIR_ROUNDS):
        if not written:
            break
        ours |= {(ack.partition, ack.offset) for _, _, ack in written}
        if not records.catch_up(timeout):
            raise click.ClickException(f"could not follow {topic} to confirm the writes")
        window = {endpoint_id: (base, ack) for endpoint_id, base, ack in written}
        undone: dict[str, StoredRecord] = {}
        for endpoint_id, record in list(records.later):
            if endpoint_id not in window or (record.partition, record.offset) in ours:
                continue
            base, ack = window[endpoint_id]
            if record.partition == ack.partition and base.offset < record.offset < ack.offset:
                undone[endpoint_id] = record  # later ones replace earlier: offset order
        pending = []
        for endpoint_id, record in undone.items():
            value = record.value
            # A tombstone is written again as is; a record it cannot seal (a key this
            # command lacks, invalid) as the other writer wrote it: its change matters more.
            with contextlib.suppress(ValueError):
                if value is not None:
                    value = Endpoint.from_json(value).sealed(keyring).to_json()
            pending.append((endpoint_id, record,
                            producer.produce(topic, value, key=endpoint_id.encode())))
        written = _acknowledged(pending, producer.timeout)
        again += len(written)
    return again

