import base64
import hashlib
import hmac
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.eventlog.cursor import Cursor, CursorError, cursor_key, request_binding, resume
from webhooks.settings import Settings

KEY = cursor_key(Settings(api_keys={"k": "acme"}))
BINDING = request_binding("events", "acme", {"types": ["order.*"]})


def test_round_trip_and_advance() -> None:
    cursor = Cursor().advanced([(0, 5), (0, 9), (2, 3), (0, 7)])
    assert cursor.positions == {0: 9, 2: 3}
    token = cursor.encode(BINDING, KEY)
    assert Cursor.decode(token, BINDING, KEY) == cursor
    assert "acme" not in token  # the tenant is only in the digest (it comes from the key)


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


FILTERS = {"types": ["order.*"], "created_after": None}


def test_a_token_carries_its_filters_so_it_resumes_alone() -> None:
    start, binding = resume(None, "events", "acme", FILTERS, KEY)
    assert start == Cursor({}, FILTERS) and binding == binding_of(FILTERS)
    token = start.advanced([(0, 4)]).encode(binding, KEY)
    alone, again = resume(token, "events", "acme", {"types": [], "created_after": None}, KEY,
                          filters_given=False)
    assert alone == Cursor({0: 4}, FILTERS) and again == binding
    same, _ = resume(token, "events", "acme", FILTERS, KEY)
    assert same == alone
    with pytest.raises(CursorError, match="different filters"):
        resume(token, "events", "acme", {"types": ["order.created"], "created_after": None},
               KEY)
    for listing, tenant in (("attempts/ep_1", "acme"), ("events", "globex")):
        with pytest.raises(CursorError, match="different listing"):
            resume(token, listing, tenant, FILTERS, KEY, filters_given=False)


def test_a_version_1_token_resumes_only_with_its_own_filters() -> None:
    token = Cursor({0: 4}).encode(binding_of(FILTERS), KEY)  # no filters: version 1
    resumed, _ = resume(token, "events", "acme", FILTERS, KEY)
    assert resumed == Cursor({0: 4}, FILTERS)  # the next token carries them
    with pytest.raises(CursorError, match="different"):
        resume(token, "events", "acme", {"types": [], "created_after": None}, KEY,
               filters_given=False)


def test_carried_filters_cannot_be_changed_without_the_key() -> None:
    token = Cursor({0: 4}, FILTERS).encode(binding_of(FILTERS), KEY)
    body, mac = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["f"]["types"] = ["*"]
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    with pytest.raises(CursorError, match="tampered"):
        resume(f"{forged}.{mac}", "events", "acme", {}, KEY, filters_given=False)


def test_a_keyed_listing_carries_the_last_key_served() -> None:
    filters = {"disabled": None, "url": "orders"}
    start, binding = resume(None, "endpoints", "acme", filters, KEY)
    assert start.after is None and start.past(None) is start
    token = start.past("ep_01J").encode(binding, KEY)
    resumed, again = resume(token, "endpoints", "acme", {}, KEY, filters_given=False)
    assert resumed == Cursor({}, filters, "ep_01J") and again == binding
    assert resumed.advanced([]).after == "ep_01J"
    body, mac = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["k"] = "ep_00"
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    with pytest.raises(CursorError, match="tampered"):
        resume(f"{forged}.{mac}", "endpoints", "acme", {}, KEY, filters_given=False)
    for bad in (7, "k" * 257):
        payload["k"] = bad
        raw = json.dumps(payload).encode()
        signed = (base64.urlsafe_b64encode(raw).decode().rstrip("=") + "." + base64
                  .urlsafe_b64encode(hmac.new(KEY, raw, hashlib.sha256).digest()[:16])
                  .decode().rstrip("="))
        with pytest.raises(CursorError, match="malformed"):
            resume(signed, "endpoints", "acme", {}, KEY, filters_given=False)


def binding_of(filters: dict) -> str:
    return request_binding("events", "acme", filters)


# -- properties (hypothesis): any cursor, any token ---------------------------------------

POSITIONS = st.dictionaries(st.integers(0, 63), st.integers(0, 2**62), max_size=8)
FILTER_DOCS = st.dictionaries(st.sampled_from(["types", "created_after", "endpoint_id", "error"]),
                          st.none() | st.text(max_size=20) | st.lists(st.text(max_size=8),
                                                                       max_size=3), max_size=4)
KEY = b"k" * 32


@given(positions=POSITIONS, filters=FILTER_DOCS, tenant=st.text(min_size=1, max_size=10))
def test_any_cursor_round_trips_alone_and_only_for_its_tenant_and_listing(
        positions: dict[int, int], filters: dict[str, object], tenant: str) -> None:
    start, binding = resume(None, "events", tenant, filters, KEY)
    token = Cursor(positions, start.filters).encode(binding, KEY)
    again, same_binding = resume(token, "events", tenant, {}, KEY, filters_given=False)
    assert again.positions == positions and again.filters == start.filters
    assert same_binding == binding
    with pytest.raises(CursorError):
        resume(token, "events", tenant + "x", {}, KEY, filters_given=False)
    with pytest.raises(CursorError):
        resume(token, "dlq", tenant, {}, KEY, filters_given=False)


@given(positions=POSITIONS, rows=st.lists(st.tuples(st.integers(0, 63), st.integers(0, 2**62))))
def test_advancing_never_moves_a_partition_back(positions: dict[int, int],
                                                rows: list[tuple[int, int]]) -> None:
    advanced = Cursor(positions).advanced(rows).positions
    for partition, offset in positions.items():
        assert advanced[partition] >= offset
    for partition, offset in rows:
        assert advanced[partition] >= offset
    assert set(advanced) == set(positions) | {p for p, _ in rows}


@given(token=st.text(min_size=1, max_size=200) | st.binary(max_size=150).map(
    lambda raw: base64.urlsafe_b64encode(raw).decode() + "." + base64.urlsafe_b64encode(
        raw[:16]).decode()))
def test_any_other_token_is_a_cursor_error_never_a_crash(token: str) -> None:
    with pytest.raises(CursorError):
        resume(token, "events", "acme", {}, KEY, filters_given=False)


@given(positions=POSITIONS, flip=st.integers(0, 10**6))
def test_any_changed_byte_is_detected(positions: dict[int, int], flip: int) -> None:
    _, binding = resume(None, "events", "acme", {}, KEY)
    token = Cursor(positions, {}).encode(binding, KEY)
    index = flip % len(token)
    changed = token[:index] + ("A" if token[index] != "A" else "B") + token[index + 1:]
    try:
        decoded, _ = resume(changed, "events", "acme", {}, KEY, filters_given=False)
    except CursorError:
        return
    # Base64 padding bits can absorb a change without altering the bytes; then the
    # cursor must be the very same one.
    assert decoded.positions == positions
