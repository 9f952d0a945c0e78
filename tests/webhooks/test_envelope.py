import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from webhooks.envelope import Envelope, format_timestamp, new_event_id
from webhooks.json_schema import SchemaError


def make(**overrides: object) -> Envelope:
    fields: dict = {"type": "order.shipped", "data": {"object": {"id": "o_1"}},
                    "tenant": "acme", "api_version": "2026-11-01"}
    fields.update(overrides)
    return Envelope.create(**fields)


def test_create_fills_id_and_created() -> None:
    envelope = make()
    assert envelope.id.startswith("evt_")
    assert envelope.created.endswith("Z") and len(envelope.created) == 27


def test_ids_sort_by_time() -> None:
    ids = [new_event_id() for _ in range(3)]
    assert len(set(ids)) == 3
    assert ids[0][:14] <= ids[-1][:14]  # the ULID's timestamp part


def test_round_trip_is_exact() -> None:
    envelope = make(created="2026-11-22T10:30:00.123456+01:00")
    assert envelope.created == "2026-11-22T09:30:00.123456Z"
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
