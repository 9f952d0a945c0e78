import base64
import hashlib
import hmac
import json

import pytest

from services.eventlog.cursor import Cursor, CursorError, cursor_key, request_binding
from webhooks.settings import Settings

KEY = cursor_key(Settings(api_keys={"k": "acme"}))
BINDING = request_binding("events", "acme", {"types": ["order.*"]})


def test_round_trip_and_advance() -> None:
    cursor = Cursor().advanced([(0, 5), (0, 9), (2, 3), (0, 7)])
    assert cursor.positions == {0: 9, 2: 3}
    token = cursor.encode(BINDING, KEY)
    assert Cursor.decode(token, BINDING, KEY) == cursor
    assert "acme" not in token and "order" not in token  # opaque: only a digest of filters


def test_binding_covers_listing_tenant_and_filters() -> None:
    others = [request_binding("attempts", "acme", {"types": ["order.*"]}),
              request_binding("events", "globex", {"types": ["order.*"]}),
              request_binding("events", "acme", {"types": ["order.created"]}),
              request_binding("events", "acme", {"types": ["order.*"], "created_after": "x"})]
    token = Cursor({0: 1}).encode(BINDING, KEY)
    for binding in others:
        assert binding != BINDING
        with pytest.raises(CursorError, match="different"):
            Cursor.decode(token, binding, KEY)


def test_tampering_and_other_keys_are_detected() -> None:
    token = Cursor({0: 100}).encode(BINDING, KEY)
    body, mac = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["p"]["0"] = 0
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    with pytest.raises(CursorError, match="tampered"):
        Cursor.decode(f"{forged}.{mac}", BINDING, KEY)
    other_key = cursor_key(Settings(cursor_secret="another"))
    with pytest.raises(CursorError, match="tampered"):
        Cursor.decode(token, BINDING, other_key)


@pytest.mark.parametrize("token", ["", "abc", "a.b", "!!!.???", "x" * 5000 + ".y"])
def test_malformed_tokens(token: str) -> None:
    with pytest.raises(CursorError):
        Cursor.decode(token, BINDING, KEY)


def test_unknown_version_is_refused() -> None:
    payload = json.dumps({"v": 99, "b": BINDING, "p": {}}).encode()
    mac = hmac.new(KEY, payload, hashlib.sha256).digest()[:16]
    token = (base64.urlsafe_b64encode(payload).decode().rstrip("=") + "."
             + base64.urlsafe_b64encode(mac).decode().rstrip("="))
    with pytest.raises(CursorError, match="version"):
        Cursor.decode(token, BINDING, KEY)
