"""The endpoints topic's signing secrets against the configured keyring.

Two uses: the fanout and the eventlog API check, before they start, that
``WEBHOOKS_SECRETS_KEY`` opens every secret on the topic (:func:`check_secrets_key`), and
``webhooks rotate-secrets-key`` reads the topic to re-encrypt it
(:class:`EndpointRecords`). A process without the right key must refuse to start rather
than sign with garbage; the refusal names the key ids it lacks.

The check is a start-up guard, not the only one: every secret is authenticated again when
it is opened (AES-GCM), so a record written later under a key this process lacks is
refused where it is used (the fanout fails that delivery as ``endpoint_misconfigured``).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass

from confluent_kafka import Message

from webhooks.compacted_topic import CompactedTopicFollower
from webhooks.endpoints import Endpoint
from webhooks.kafka import KafkaConnection
from webhooks.secret_encryption import (
    SecretsKeyring,
    UndecryptableSecret,
    UnknownKeyId,
    key_id_of,
)
from webhooks.settings import Settings, StartRefused
from webhooks.topics import Topics

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 20.0
"""How long a starting service waits to read the endpoints topic for the check."""


class SecretsKeyRefused(StartRefused):
    """This process must not start with the configured ``WEBHOOKS_SECRETS_KEY``."""


def configured_keyring(settings: Settings, service: str) -> SecretsKeyring:
    """The keyring of ``settings``; raises :class:`SecretsKeyRefused` when none is set."""
    if settings.secrets_key is None:
        raise SecretsKeyRefused(
            f"{service} needs WEBHOOKS_SECRETS_KEY, the key that encrypts endpoint signing "
            "secrets at rest: kid:base64 of 32 random bytes, e.g. "
            "k1:$(openssl rand -base64 32); every fanout and eventlog replica needs the same "
            "keys (see docs/operators/security.md)")
    return settings.secrets_key


@dataclass(frozen=True)
class StoredRecord:
    """One record of the endpoints topic: its value (None: tombstone) and where it is."""

    value: bytes | None
    partition: int
    offset: int


class EndpointRecords(CompactedTopicFollower):
    """The latest record of every endpoint id on the topic, read from the beginning.

    After :attr:`ready`, it keeps following, and remembers every record it applies from
    then on in :attr:`later`: a writer that derived records from :meth:`snapshot` finds
    there what others wrote meanwhile.
    """

    thread_name = "endpoint-records"
    stop_timeout = 5.0

    def __init__(self, connection: KafkaConnection, topic: str) -> None:
        super().__init__(connection, topic)
        self._latest: dict[str, StoredRecord] = {}
        self.later: list[tuple[str, StoredRecord]] = []
        self._lock = threading.Lock()

    def reset(self, partitions: int) -> None:
        with self._lock:
            self._latest = {}
            self.later = []

    def apply_message(self, message: Message) -> None:
        key = message.key()
        if key is None:
            return  # not an endpoint record: the views skip it too
        record = StoredRecord(message.value(), message.partition(), message.offset())
        with self._lock:
            self._latest[key.decode()] = record
            if self.ready:
                self.later.append((key.decode(), record))

    def snapshot(self) -> dict[str, StoredRecord]:
        """Endpoint id -> its latest record (tombstones included), as read so far."""
        with self._lock:
            return dict(self._latest)


def read_endpoint_records(connection: KafkaConnection, topic: str, timeout: float
                          ) -> dict[str, StoredRecord] | None:
    """Every endpoint's latest record on ``topic``; None when the topic could not be read
    to its end within ``timeout`` seconds (Kafka unreachable, topic not created yet)."""
    records = EndpointRecords(connection, topic).start()
    try:
        if not records.wait_ready(timeout):
            return None
        return records.snapshot()
    except RuntimeError as exc:  # the follower failed
        log.warning("cannot read %s: %s", topic, exc.__cause__ or exc)
        return None
    finally:
        records.stop()


@dataclass(frozen=True)
class SecretsCensus:
    """What the keyring made of the secrets of the live endpoint records."""

    opened: Counter[str]
    """Secrets opened, by key id."""
    plain: int
    """Unsealed ``whsec_`` secrets (an install from before encryption; see rotate-secrets-key)."""
    missing: Counter[str]
    """Secrets sealed with a key id the keyring lacks, by key id."""
    undecryptable: dict[str, list[str]]
    """Key id -> endpoints whose secret it did not authenticate."""


def census(keyring: SecretsKeyring, records: dict[str, StoredRecord]) -> SecretsCensus:
    """Open every secret of every live endpoint record (about 13 µs a record: its schema
    check and an AES-GCM decryption per secret)."""
    opened: Counter[str] = Counter()
    missing: Counter[str] = Counter()
    undecryptable: dict[str, list[str]] = {}
    plain = 0
    for record in records.values():
        if record.value is None:
            continue
        try:
            endpoint = Endpoint.from_json(record.value)
        except Exception:  # invalid records are skipped by every reader (and logged there)
            continue
        for binding, stored in endpoint.stored_secrets():
            key_id = key_id_of(stored)
            if key_id is None:
                plain += 1
                continue
            try:
                keyring.open(binding, stored)
                opened[key_id] += 1
            except UnknownKeyId:
                missing[key_id] += 1
            except UndecryptableSecret:
                undecryptable.setdefault(key_id, []).append(endpoint.id)
    return SecretsCensus(opened, plain, missing, undecryptable)


def check_secrets_key(settings: Settings, service: str,
                      timeout: float = CHECK_TIMEOUT) -> SecretsKeyring:
    """The keyring, once it opens the secrets on the endpoints topic; raises
    :class:`SecretsKeyRefused` naming the key ids that are missing or wrong.

    A key id is wrong when its key authenticates none of the secrets sealed under it (a
    single secret that fails is a damaged record: logged, and refused where it is used).
    When the topic cannot be read in time, the service starts with a warning: Kafka being
    down is not a configuration error, and each secret is still checked when opened.
    """
    keyring = configured_keyring(settings, service)
    topic = Topics.from_settings(settings).endpoints
    records = read_endpoint_records(settings.kafka, topic, timeout)
    if records is None:
        log.warning("%s: could not read %s within %.0fs to check WEBHOOKS_SECRETS_KEY; "
                    "starting anyway (secrets are still authenticated when opened)",
                    service, topic, timeout)
        return keyring
    found = census(keyring, records)
    if found.missing:
        lacking = ", ".join(sorted(found.missing))
        raise SecretsKeyRefused(
            f"WEBHOOKS_SECRETS_KEY lacks key id(s) {lacking}: {found.missing.total()} endpoint "
            f"secret(s) on {topic} are sealed with them (this process holds "
            f"{', '.join(keyring.key_ids)}). Add those keys after the first one; after "
            "`webhooks rotate-secrets-key` they are no longer needed")
    wrong = sorted(key_id for key_id in found.undecryptable if not found.opened[key_id])
    if wrong:
        raise SecretsKeyRefused(
            f"WEBHOOKS_SECRETS_KEY key(s) {', '.join(wrong)} decrypt none of the endpoint "
            f"secrets on {topic} sealed under that id: not the key(s) they were sealed with")
    for key_id, endpoints in found.undecryptable.items():
        log.error("%d endpoint secret(s) sealed with key %s do not decrypt (damaged or moved "
                  "records), e.g. of %s; those endpoints cannot be signed for",
                  len(endpoints), key_id, ", ".join(endpoints[:5]))
    log.info("%s: WEBHOOKS_SECRETS_KEY opens the endpoint secrets (%s sealed, %d plain); "
             "new secrets are sealed with key %s", service,
             ", ".join(f"{n} with {k}" for k, n in sorted(found.opened.items())) or "none",
             found.plain, keyring.primary)
    if found.plain:
        log.warning("%d endpoint secret(s) on %s are stored unencrypted (from before "
                    "encryption): run `webhooks rotate-secrets-key`", found.plain, topic)
    return keyring
