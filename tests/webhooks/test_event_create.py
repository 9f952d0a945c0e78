"""The one validation path of HTTP and Kafka intake: raw event -> envelope, or a precise refusal."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webhooks.envelope import Envelope
from webhooks.event_create import (
    IntakeError,
    build_event,
    check_idempotency_key,
    item_too_large,
    parse_event_json,
)
from webhooks.json_schema import SchemaError, _fast_validator, check, validate

VERSION = "2026-11-01"


def build(document: object, tenant: str | None = "acme", **kwargs: object):
    return build_event(document, caller_tenant=tenant, default_api_version=VERSION, **kwargs)


def refusal(document: object, tenant: str | None = "acme", **kwargs: object) -> IntakeError:
    with pytest.raises(IntakeError) as caught:
        build(document, tenant, **kwargs)
    return caught.value


def test_minimal_event_gets_id_created_version_and_callers_tenant() -> None:
    request = build({"type": "order.shipped", "data": {"object": {"id": "o_1"}}})
    envelope = request.envelope
    assert envelope.id.startswith("evt_") and len(envelope.id) == 30
    assert (envelope.type, envelope.tenant, envelope.api_version) == ("order.shipped", "acme",
                                                                      VERSION)
    assert Envelope.from_json(envelope.to_json()) == envelope
    assert request.aliases == ()  # a fresh id cannot repeat anything


def test_supplied_fields_are_kept_and_created_is_normalised_to_utc_micros() -> None:
    request = build({"type": "customer.subscription.created", "data": {}, "id": "evt_abc",
                     "created": "2026-11-22T12:30:00+02:00", "api_version": "2025-01-01"},
                    idempotency_key="k-1")
    assert request.envelope.id == "evt_abc"
    assert request.envelope.created == datetime(2026, 11, 22, 10, 30, tzinfo=UTC)
    assert b'"created":"2026-11-22T10:30:00.000000Z"' in request.envelope.to_json()
    assert request.envelope.api_version == "2025-01-01"
    assert request.aliases == ("id:evt_abc", "key:k-1")


def test_derived_id_is_used_only_without_a_supplied_one() -> None:
    assert build({"type": "a.b", "data": {}}, event_id="evt_derived").envelope.id == "evt_derived"
    assert build({"type": "a.b", "data": {}, "id": "evt_mine"},
                 event_id="evt_derived").envelope.id == "evt_mine"


INVALID = [
    ({"type": "a.b", "data": {}, "colour": "red"}, "colour: unknown field", "unknown_field"),
    ({"type": "Order.Shipped", "data": {}}, "type: must be lower-case", "schema"),
    ({"type": "shipped", "data": {}}, "type: must be lower-case", "schema"),
    ({"type": "a.b", "data": [1]}, "data: [1] is not of type 'object'", "schema"),
    ({"type": 7, "data": {}}, "type: 7 is not of type 'string'", "schema"),
    ({"data": {}}, "'type' is a required property", "schema"),
    ({"type": "a.b", "data": {}, "id": "123"}, "id: must be 'evt_'", "schema"),
    ({"type": "a.b", "data": {}, "created": "yesterday"}, "created: must be an RFC 3339", "schema"),
    ({"type": "a.b", "data": {}, "created": "2026-13-40T00:00:00Z"}, "created:", "schema"),
    # Outside what ClickHouse's DateTime64 stores (an offset cannot carry it back in).
    ({"type": "a.b", "data": {}, "created": "0373-08-26T07:10:00Z"}, "created: must lie", "schema"),
    ({"type": "a.b", "data": {}, "created": "0001-01-01T00:00:00+01:00"}, "created: must lie",
     "schema"),
    ({"type": "a.b", "data": {}, "created": "2300-01-01T00:00:00Z"}, "created: must lie", "schema"),
    ({"type": "a.b", "data": {}, "api_version": "v1"}, "api_version: must be a date", "schema"),
    (["not", "an", "object"], "body: must be a JSON object, not an array", "schema"),
]


@pytest.mark.parametrize(("document", "field", "reason"), INVALID)
def test_invalid_documents_are_refused_with_422_naming_the_field(
        document: object, field: str, reason: str) -> None:
    error = refusal(document)
    assert (error.status, error.reason) == (422, reason)
    assert field in error.detail


def test_admin_callers_must_name_the_tenant() -> None:
    error = refusal({"type": "a.b", "data": {}}, tenant=None)
    assert (error.status, error.reason) == (422, "tenant_required")
    assert error.detail.startswith("tenant:")
    assert build({"type": "a.b", "data": {}, "tenant": "globex"}, None).tenant == "globex"


def test_a_tenant_key_may_not_publish_for_another_tenant_but_may_name_itself() -> None:
    error = refusal({"type": "a.b", "data": {}, "tenant": "globex"})
    assert (error.status, error.reason) == (403, "tenant_forbidden")
    assert build({"type": "a.b", "data": {}, "tenant": "acme"}).tenant == "acme"


def test_malformed_json_is_a_400_with_position() -> None:
    with pytest.raises(IntakeError) as caught:
        parse_event_json(b'{"type": "a.b",')
    assert caught.value.status == 400 and caught.value.reason == "malformed_json"
    assert "line 1 column" in caught.value.detail
    with pytest.raises(IntakeError) as caught:
        parse_event_json(b"\xff\xfe")
    assert caught.value.status == 400


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_numbers_are_a_400(constant: str) -> None:
    # Python's json module would read them; a signed body must never carry them.
    with pytest.raises(IntakeError) as caught:
        parse_event_json(b'{"type": "a.b", "data": {"x": %s}}' % constant.encode())
    assert (caught.value.status, caught.value.reason) == (400, "malformed_json")
    assert constant in caught.value.detail


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there"])
def test_bad_idempotency_keys_are_refused(key: str) -> None:
    with pytest.raises(IntakeError) as caught:
        check_idempotency_key(key)
    assert caught.value.status == 422 and caught.value.detail.startswith("Idempotency-Key:")


# Documents on both sides of every rule of event_create.v1, beside the refusals above.
EDGE_CASES = [
    {"type": "a.b", "data": {}},
    {"type": "a.b", "data": {}, "id": "evt_abc", "api_version": "2026-11-01",
     "tenant": "acme", "created": "2026-11-22T10:30:00.5+02:00"},
    {"type": "a.b\n", "data": {}},  # jsonschema's re.search lets "$" match before "\n"
    {"type": "a.b", "data": {}, "tenant": "acme\n"},  # (jsonschema-rs' "$" does not)
    {"type": "a.b\ud800", "data": {}}, {"type": "a.b", "data": {"x": "\ud800"}},  # JSON may
    {"type": "a.b", "data": {}, "tenant": "\udc00"},  # hold lone surrogates
    {"type": "a." + "b" * 126, "data": {}}, {"type": "a." + "b" * 127, "data": {}},
    {"type": "a.b", "data": {}, "id": None}, {"type": "a.b", "data": {}, "id": "evt_"},
    {"type": "a.b", "data": {}, "id": "evt_" + "x" * 65}, {"type": True, "data": {}},
    {"type": "a.b", "data": {}, "tenant": ".acme"}, {"type": "a.b", "data": {}, "tenant": 5},
    {"type": "a.b", "data": None}, {"type": "a.b"}, {}, "a.b", None, 7,
]


BATCH_CASES = [{"events": []}, {"events": [{}]}, {"events": [1] * 1000},
               {"events": [1] * 1001}, {"events": {}}, {"other": []},
               {"events": [1], "more": 1}, []]

ENVELOPE = {"id": "evt_1", "type": "a.b", "api_version": "2026-11-01",
            "created": "2026-11-22T10:30:00.123456Z", "tenant": "acme", "data": {}}
ENVELOPE_CASES = [ENVELOPE, {**ENVELOPE, "type": "a.b\n"}, {**ENVELOPE, "id": "evt_"},
                  {**ENVELOPE, "tenant": ".acme"}, {**ENVELOPE, "data": None},
                  {**ENVELOPE, "extra": 1}, {k: v for k, v in ENVELOPE.items() if k != "tenant"}]


@pytest.mark.parametrize(("schema", "document"), [
    *(("event_create.v1", case[0]) for case in INVALID),
    *(("event_create.v1", document) for document in EDGE_CASES),
    *(("event_batch.v1", document) for document in BATCH_CASES),
    *(("envelope.v1", document) for document in ENVELOPE_CASES)])
def test_the_fast_check_accepts_exactly_what_the_schema_accepts(schema: str,
                                                                 document: object) -> None:
    assert_fast_check_agrees(schema, document)


def assert_fast_check_agrees(schema: str, document: object) -> None:
    """:func:`check` accepts ``document`` exactly when jsonschema does, and its fast path
    (jsonschema-rs) never accepts a document jsonschema refuses."""
    try:
        validate(schema, document)
        accepted = True
    except SchemaError:
        accepted = False
    try:
        check(schema, document)
        checked = True
    except SchemaError:
        checked = False
    assert checked is accepted
    assert accepted or not fast_accepts(schema, document)


def fast_accepts(schema: str, document: object) -> bool:
    try:
        return _fast_validator(schema).is_valid(document)
    except ValueError:  # a string or value jsonschema-rs cannot read
        return False


@pytest.mark.parametrize("raw", [b'{"a": 1}', b'{"a": 123456789012345678901234567890}',
                                 b'{"a": 1e400}', b'{"a": "\\ud800"}', b'{"a": -0.0}',
                                 '{"a": "caf\u00e9"}'.encode("utf-16"), b'{"a": 1.5e-7}'])
def test_json_is_decoded_as_the_json_module_decodes_it(raw: bytes) -> None:
    assert repr(parse_event_json(raw)) == repr(json.loads(raw))


@pytest.mark.parametrize("item", [{"x": "a" * 100}, {"x": "\u00e9" * 200}, {"x": [1.5e-7] * 60},
                                  {"x": 10 ** 30}, {"x": "\ud800" * 50}])
@pytest.mark.parametrize("limit", [100, 1024, 4096])
def test_batch_item_size_is_json_dumps_size(item: object, limit: int) -> None:
    assert item_too_large(item, limit) is (len(json.dumps(item).encode()) > limit)


# -- properties (hypothesis): any document, not only the cases above ---------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8)
# Field values that lie on both sides of event_create.v1's rules (valid ones twice as likely).
VALID_FIELDS = {
    "type": st.from_regex(r"[a-z][a-z0-9_]{0,8}(\.[a-z][a-z0-9_]{0,8}){1,3}", fullmatch=True),
    "data": st.dictionaries(st.text(max_size=5), JSON_VALUES, max_size=3),
    "id": st.from_regex(r"evt_[0-9A-Za-z_-]{1,64}", fullmatch=True),
    "api_version": st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", fullmatch=True),
    "tenant": st.just("acme"),
    "created": st.datetimes(datetime(1900, 1, 2), datetime(2299, 12, 30),
                            timezones=st.just(UTC)).map(lambda d: d.isoformat()),
}
INVALID_FIELDS = {
    "type": st.text(max_size=12) | JSON_VALUES,
    "data": JSON_VALUES,
    "id": st.from_regex(r"evt_[0-9A-Za-z_-]{60,70}", fullmatch=True) | JSON_VALUES,
    "api_version": st.text(max_size=12) | JSON_VALUES,
    "tenant": st.from_regex(r"[A-Za-z0-9.][A-Za-z0-9_.-]{0,70}", fullmatch=True) | JSON_VALUES,
    "created": st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()) | JSON_VALUES,
}


def either(name: str) -> st.SearchStrategy[object]:
    return st.one_of(VALID_FIELDS[name], VALID_FIELDS[name], INVALID_FIELDS[name])


DOCUMENTS = st.fixed_dictionaries(
    {"type": either("type"), "data": either("data")},
    optional={**{name: either(name) for name in ("id", "api_version", "tenant", "created")},
              "extra": JSON_VALUES}) | JSON_VALUES


@settings(max_examples=400, deadline=None)
@given(document=DOCUMENTS, tenant=st.sampled_from(["acme", None]))
def test_any_document_becomes_a_valid_envelope_or_a_clear_refusal(document: object,
                                                         tenant: str | None) -> None:
    try:
        request = build(document, tenant)
    except IntakeError as exc:
        assert exc.detail
        if exc.status == 403:  # a tenant key naming another tenant
            assert tenant == "acme" and isinstance(document, dict)
            assert document["tenant"] != "acme"
        else:
            assert exc.status == 422
        return
    raw = request.envelope.to_json()
    validate("envelope.v1", json.loads(raw))  # what goes onto the topic is always valid
    assert Envelope.from_json(raw) == request.envelope
    assert isinstance(document, dict) and request.envelope.type == document["type"]


@settings(max_examples=400, deadline=None)
@given(document=DOCUMENTS)
def test_the_fast_check_agrees_with_jsonschema_on_any_document(document: object) -> None:
    for schema in ("event_create.v1", "envelope.v1"):
        assert_fast_check_agrees(schema, document)
