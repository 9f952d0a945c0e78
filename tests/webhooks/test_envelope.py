import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from webhooks.delivery import DeliveryTask
from webhooks.envelope import Envelope, format_timestamp, new_event_id
from webhooks.json_schema import SchemaError


def make(**overrides: object) -> Envelope:
    fields: dict = {"type": "order.shipped", "data": {"object": {"id": "o_1"}},
                    "tenant": "acme", "api_version": "2026-11-01"}
    fields.update(overrides)
    return Envelope.create(**fields)


def test_create_fills_id_and_created() -> None:
    before = datetime.now(UTC)
    envelope = make()
    assert envelope.id.startswith("evt_")
    assert envelope.created.tzinfo is UTC and before <= envelope.created <= datetime.now(UTC)
    created = json.loads(envelope.to_json())["created"]
    assert created.endswith("Z") and len(created) == 27


def test_ids_sort_by_time() -> None:
    ids = [new_event_id() for _ in range(3)]
    assert len(set(ids)) == 3
    assert ids[0][:14] <= ids[-1][:14]  # the ULID's timestamp part


def test_round_trip_is_exact() -> None:
    envelope = make(created="2026-11-22T10:30:00.123456+01:00")
    assert envelope.created == datetime(2026, 11, 22, 9, 30, 0, 123456, tzinfo=UTC)
    assert json.loads(envelope.to_json())["created"] == "2026-11-22T09:30:00.123456Z"
    assert Envelope.from_json(envelope.to_json()) == envelope


@pytest.mark.parametrize(("field", "value"), [
    ("type", "Order.Shipped"), ("type", "order"), ("type", "order..shipped"),
    ("tenant", ""), ("id", "not-an-event-id"),
])
def test_invalid_fields_name_the_field(field: str, value: str) -> None:
    with pytest.raises(SchemaError) as raised:
        make(**{field: value})
    assert raised.value.errors[0].startswith(f"{field}:")


def test_unknown_fields_are_refused() -> None:
    document = json.loads(make().to_json())
    document["extra"] = 1
    with pytest.raises(SchemaError, match="extra"):
        Envelope.from_dict(document)


def test_timestamps_are_fixed_width_utc_for_every_year() -> None:
    # strftime("%Y") writes year 373 as "373", which the schema and ClickHouse refuse.
    assert format_timestamp(datetime(373, 8, 26, 7, 10, tzinfo=UTC)) == \
        "0373-08-26T07:10:00.000000Z"
    assert format_timestamp(datetime(2026, 11, 22, 12, 30, tzinfo=timezone(timedelta(hours=2)))) \
        == "2026-11-22T10:30:00.000000Z"
    assert format_timestamp(datetime(2026, 11, 22, 10, 30)) == "2026-11-22T10:30:00.000000Z"
    # An offset past the end of the calendar saturates instead of raising OverflowError.
    assert format_timestamp(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))) == \
        "0001-01-01T00:00:00.000000Z"


# The exact body that is signed and delivered for one fixed envelope, captured from the
# implementation before records moved to a shared base: these bytes must never change
# (key order, compact separators, raw UTF-8, escapes, Python's float and int spelling).
GOLDEN_DATA = {"object": {
    "id": "order_1",
    "customer": {"name": "Zoë Ångström", "city": "東京",
                 "note": "naïve café — “quoted” \\ \"x\"\n\ttab \u2028 \U0001F600"},
    "lines": [{"sku": "A-1", "qty": 2, "price": 1.5}, {"sku": "B-2", "qty": 0, "price": 1e100}],
    "tags": [], "meta": {}, "count": 42, "negative": -7, "big": 12345678901234567890,
    "small": 1e-7, "ratio": 0.1, "shipped": True, "cancelled": False, "coupon": None}}
GOLDEN_BYTES = (
    b'{"id":"evt_01JGOLDEN0000000000000000","type":"order.shipped","api_version":"2026-11-01",'
    b'"created":"2026-11-22T10:30:00.123456Z","tenant":"acme","data":{"object":{"id":"order_1",'
    b'"customer":{"name":"Zo\xc3\xab \xc3\x85ngstr\xc3\xb6m","city":"\xe6\x9d\xb1\xe4\xba\xac",'
    b'"note":"na\xc3\xafve caf\xc3\xa9 \xe2\x80\x94 \xe2\x80\x9cquoted\xe2\x80\x9d \\\\ \\"x\\"'
    b'\\n\\ttab \xe2\x80\xa8 \xf0\x9f\x98\x80"},"lines":[{"sku":"A-1","qty":2,"price":1.5},'
    b'{"sku":"B-2","qty":0,"price":1e+100}],"tags":[],"meta":{},"count":42,"negative":-7,'
    b'"big":12345678901234567890,"small":1e-07,"ratio":0.1,"shipped":true,"cancelled":false,'
    b'"coupon":null}}}'
)


def golden() -> Envelope:
    return Envelope.create(id="evt_01JGOLDEN0000000000000000", type="order.shipped",
                           api_version="2026-11-01", created="2026-11-22T10:30:00.123456Z",
                           tenant="acme", data=GOLDEN_DATA)


def test_signed_body_bytes_are_pinned() -> None:
    assert golden().to_json() == GOLDEN_BYTES


def test_signed_body_bytes_survive_parsing_and_a_delivery_task() -> None:
    # The fanout parses the envelope (alone, and inside a delivery task) and signs what
    # it serialises again: the bytes must come out as they went in.
    assert Envelope.from_json(GOLDEN_BYTES).to_json() == GOLDEN_BYTES
    task = DeliveryTask.create(golden(), "ep_1")
    assert DeliveryTask.from_json(task.to_json()).event.to_json() == GOLDEN_BYTES
