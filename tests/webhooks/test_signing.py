import base64
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from webhooks.signing import generate_secret, sign_payload, signature_header, verify_signature

# Golden vector from the Standard Webhooks specification's reference libraries.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_golden_vector() -> None:
    assert sign_payload(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_published_library_verifies_rotation_headers() -> None:
    old, new = generate_secret(), generate_secret()
    now = int(time.time())
    header = signature_header([new, old], "evt_1", now, b"{}")
    headers = {"webhook-id": "evt_1", "webhook-timestamp": str(now), "webhook-signature": header}
    for secret in (old, new):
        assert Webhook(secret).verify(b"{}", headers) == {}
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(b"{}", headers)


def test_verify_rejects_tampering() -> None:
    secret = generate_secret()
    header = sign_payload(secret, "evt_1", 1, b"{}")
    assert verify_signature(secret, "evt_1", 1, b"{}", header)
    assert not verify_signature(secret, "evt_1", 1, b"{ }", header)
    assert not verify_signature(secret, "evt_2", 1, b"{}", header)


def test_secret_format() -> None:
    secret = generate_secret(24)
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24
    with pytest.raises(ValueError):
        generate_secret(8)
    with pytest.raises(ValueError):
        sign_payload("nope", "evt_1", 1, b"")
