"""Sealed signing secrets: the text format, the key ring setting, and what refuses to open."""

from __future__ import annotations

import base64
import logging

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import ValidationError

from webhooks.endpoints import (
    Endpoint,
    EndpointHeader,
    EndpointSecret,
    header_binding,
    new_endpoint_id,
)
from webhooks.envelope import utcnow
from webhooks.json_schema import SchemaError
from webhooks.secret_encryption import (
    OpenedSecrets,
    SecretsKeyring,
    UndecryptableSecret,
    UnknownKeyId,
    is_sealed,
    key_id_of,
)
from webhooks.settings import Settings
from webhooks.signing import generate_secret

OLD = SecretsKeyring([("k1", b"\x01" * 32)])
NEW = SecretsKeyring([("k2", b"\x02" * 32), ("k1", b"\x01" * 32)])


def test_a_golden_vector_pins_the_format() -> None:
    """whenc_v1.<kid>.<base64(nonce | ciphertext | tag)>, the associated data naming the
    format, key id and endpoint id: what every release must keep opening."""
    key, nonce = bytes(range(32)), bytes(range(12))
    aad = b"whenc_v1.k1.ep_01JGOLDEN"
    sealed = AESGCM(key).encrypt(nonce, b"whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0", aad)
    text = "whenc_v1.k1." + base64.b64encode(nonce + sealed).decode()
    assert text == ("whenc_v1.k1.AAECAwQFBgcICQoLMGqlfqa6oSnbK/Tm59k0Nc263ge6Fzs/CR2/0lMQWupQZM"
                    "3O+atx9SKUdc5Jv4P+hx8rfub2v2/QJA==")
    keyring = SecretsKeyring([("k1", key)])
    assert keyring.open("ep_01JGOLDEN", text) == "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"


def test_seal_and_open_round_trip_with_a_fresh_nonce_each_time() -> None:
    secret = generate_secret()
    first, second = OLD.seal("ep_1", secret), OLD.seal("ep_1", secret)
    assert first != second  # random nonce: equal secrets do not look equal at rest
    assert first.startswith("whenc_v1.k1.") and is_sealed(first) and key_id_of(first) == "k1"
    assert secret not in first and secret.removeprefix("whsec_") not in first
    assert OLD.open("ep_1", first) == OLD.open("ep_1", second) == secret


def test_a_plain_secret_from_before_encryption_is_read_as_is() -> None:
    secret = generate_secret()
    assert not is_sealed(secret) and key_id_of(secret) is None
    assert OLD.open("ep_1", secret) == secret


def test_every_key_opens_and_the_first_seals() -> None:
    secret = generate_secret()
    old_text = OLD.seal("ep_1", secret)
    assert NEW.open("ep_1", old_text) == secret
    assert key_id_of(NEW.seal("ep_1", secret)) == "k2"
    resealed = NEW.reseal("ep_1", old_text)
    assert key_id_of(resealed) == "k2" and NEW.open("ep_1", resealed) == secret
    assert NEW.reseal("ep_1", resealed) is resealed  # already current: unchanged
    assert key_id_of(NEW.reseal("ep_1", secret)) == "k2"  # plain ones are sealed


def test_a_secret_moved_to_another_endpoint_does_not_open() -> None:
    sealed = OLD.seal("ep_1", generate_secret())
    with pytest.raises(UndecryptableSecret) as raised:
        OLD.open("ep_2", sealed)
    assert raised.value.key_id == "k1"


def test_an_unknown_key_id_and_a_wrong_key_are_told_apart() -> None:
    sealed = NEW.seal("ep_1", generate_secret())
    with pytest.raises(UnknownKeyId, match="key id 'k2'.*holds k1") as raised:
        OLD.open("ep_1", sealed)
    assert raised.value.key_id == "k2"
    impostor = SecretsKeyring([("k2", b"\x09" * 32)])
    with pytest.raises(UndecryptableSecret, match="does not decrypt with key 'k2'"):
        impostor.open("ep_1", sealed)


@pytest.mark.parametrize("damage", [
    lambda text: text[:-4] + ("AAAA" if not text.endswith("AAAA") else "BBBB"),  # the tag
    lambda text: text.replace("whenc_v1.k1.", "whenc_v1.k1.!"),  # not base64
    lambda text: "whenc_v1.k1.AAAA",  # too short for a nonce and a tag
])
def test_a_damaged_text_does_not_open(damage: object) -> None:
    sealed = OLD.seal("ep_1", generate_secret())
    with pytest.raises(UndecryptableSecret):
        OLD.open("ep_1", damage(sealed))  # type: ignore[operator]


def test_the_setting_is_parsed_once_and_written_back_the_same(
        monkeypatch: pytest.MonkeyPatch) -> None:
    text = NEW.to_setting()
    twos, ones = (base64.b64encode(byte * 32).decode() for byte in (b"\x02", b"\x01"))
    assert text == f"k2:{twos},k1:{ones}"
    monkeypatch.setenv("WEBHOOKS_SECRETS_KEY", f" {text.replace(',', ' , ')} ")
    settings = Settings()
    assert settings.secrets_key == NEW
    assert settings.secrets_key.primary == "k2" and settings.secrets_key.key_ids == ("k2", "k1")
    assert settings.model_dump()["secrets_key"] == text  # what a child process is handed
    monkeypatch.setenv("WEBHOOKS_SECRETS_KEY", "")
    assert Settings().secrets_key is None
    monkeypatch.delenv("WEBHOOKS_SECRETS_KEY")
    assert Settings().secrets_key is None


@pytest.mark.parametrize(("value", "message"), [
    ("k1", "not kid:base64-key"),
    ("k1:bm90IGJhc2U2NA=$$", "not valid base64"),
    (f"k1:{base64.b64encode(b'short').decode()}", "must be 32 bytes, not 5"),
    (f"k.1:{base64.b64encode(bytes(32)).decode()}", "key id 'k.1'"),
    (f"k1:{base64.b64encode(bytes(32)).decode()},k1:{base64.b64encode(bytes(32)).decode()}",
     "appears twice"),
    (",", "at least one key"),
])
def test_a_bad_setting_is_refused_without_quoting_it(monkeypatch: pytest.MonkeyPatch,
                                                     value: str, message: str) -> None:
    monkeypatch.setenv("WEBHOOKS_SECRETS_KEY", value)
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert message in str(raised.value)
    material = value.partition(":")[2]
    assert not material or material not in str(raised.value)


def test_key_material_stays_out_of_reprs_and_logs() -> None:
    settings = Settings(secrets_key=NEW.to_setting())
    material = NEW.to_setting().split(",")[0].partition(":")[2]
    for shown in (repr(settings), str(settings), repr(NEW), str(NEW), f"{NEW}"):
        assert material not in shown
    assert "k2" in repr(NEW)


def test_endpoint_records_seal_and_open_every_secret() -> None:
    now = utcnow()
    secrets = [generate_secret(), generate_secret()]
    plain = Endpoint(id=new_endpoint_id(), tenant="acme", url="https://example.com/hook",
                     events=["*"], created=now, updated=now,
                     secrets=[EndpointSecret(secret=secrets[0]),
                              EndpointSecret(secret=OLD.seal("x", "whsec_AAAA"), expires=now)])
    plain = plain.model_copy(update={"secrets": [
        plain.secrets[0], EndpointSecret(secret=OLD.seal(plain.id, secrets[1]), expires=now)]})
    assert plain.secret_key_ids() == {None, "k1"}

    sealed = plain.sealed(NEW)
    assert sealed.secret_key_ids() == {"k2"} and sealed.sealed(NEW) is sealed
    assert [s.secret for s in sealed.opened_secrets(NEW)] == secrets
    assert [s.expires for s in sealed.secrets] == [None, now]
    # The endpoint schema takes sealed texts (and the plain ones of older records).
    assert Endpoint.validated(sealed.to_json()) == sealed
    assert Endpoint.validated(plain.to_json()) == plain
    with pytest.raises(SchemaError):
        Endpoint.validated(sealed.to_json().replace(b"whenc_v1.k2.", b"whenc_v1.k 2."))


def test_opened_secrets_are_remembered_and_failures_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    secret = generate_secret()
    sealed = NEW.seal("ep_1", secret)
    opened = OpenedSecrets(NEW)
    assert opened.open("ep_1", sealed) is opened.open("ep_1", sealed)
    assert opened.open_all("ep_1", [sealed, secret]) == [secret, secret]

    lacking = OpenedSecrets(SecretsKeyring([("k9", bytes(32))]))
    with caplog.at_level(logging.ERROR):
        for _ in range(3):
            with pytest.raises(UnknownKeyId):
                lacking.open("ep_1", sealed)
    [logged] = caplog.records
    assert "ep_1" in logged.getMessage() and "k2" in logged.getMessage()
    assert sealed not in caplog.text and secret not in caplog.text

    without_keyring = OpenedSecrets(None)
    assert without_keyring.open("ep_1", secret) == secret
    with pytest.raises(UnknownKeyId):
        without_keyring.open("ep_1", sealed)


def test_the_cache_is_bounded() -> None:
    opened = OpenedSecrets(NEW, max_size=10)
    for n in range(25):
        opened.open(f"ep_{n}", generate_secret())
    assert len(opened._opened) <= 10


def test_secret_header_values_are_sealed_for_their_header() -> None:
    now = utcnow()
    endpoint = Endpoint(id=new_endpoint_id(), tenant="acme", url="https://example.com/hook",
                        events=["*"], created=now, updated=now,
                        secrets=[EndpointSecret(secret=generate_secret())],
                        headers=[EndpointHeader(name="Authorization", value="Bearer tok_1",
                                                secret=True),
                                 EndpointHeader(name="X-Team", value="ops")])
    assert endpoint.secret_key_ids() == {None}
    sealed = endpoint.sealed(NEW)
    authorization, team = sealed.headers
    assert authorization.value.startswith("whenc_v1.k2.")
    assert b"tok_1" not in sealed.to_json()
    assert team.value == "ops"  # not secret: as given
    assert sealed.secret_key_ids() == {"k2"}
    assert NEW.open(header_binding(sealed.id, "authorization"), authorization.value) == \
        "Bearer tok_1"
    with pytest.raises(UndecryptableSecret):  # not as another header, nor as the secret
        NEW.open(header_binding(sealed.id, "X-Other"), authorization.value)
    with pytest.raises(UndecryptableSecret):
        NEW.open(sealed.id, authorization.value)
    assert Endpoint.validated(sealed.to_json()) == sealed
