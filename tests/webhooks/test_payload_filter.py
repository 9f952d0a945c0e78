"""Payload filters: every operator, JSON comparison rules, and bad filters refused with
the bad part named (pure logic; the endpoints API and fanout tests run them for real)."""

from __future__ import annotations

from typing import Any

import pytest

from webhooks.envelope import Envelope
from webhooks.payload_filter import FilterError, compile_filter

ORDER = {"id": "evt_1", "type": "order.updated", "tenant": "acme", "api_version": "v",
         "data": {"object": {"status": "shipped", "amount": 1500, "currency": "EUR",
                             "paid": True, "tags": ["vip", "eu"], "note": None,
                             "items": [{"sku": "A-1"}, {"sku": "B-2"}]}}}


def matches(document: Any) -> bool:
    return compile_filter(document)(ORDER)


@pytest.mark.parametrize(("document", "expected"), [
    ({"data.object.status": "shipped"}, True),
    ({"data.object.status": "pending"}, False),
    ({"data.object.status": {"$eq": "shipped"}}, True),
    ({"data.object.status": {"$neq": "shipped"}}, False),
    ({"data.object.missing": {"$neq": "x"}}, True),
    ({"data.object.amount": {"$gt": 1000}}, True),
    ({"data.object.amount": {"$gte": 1500}}, True),
    ({"data.object.amount": {"$lt": 1500}}, False),
    ({"data.object.amount": {"$lte": 1500.0}}, True),
    ({"data.object.amount": {"$gte": 1000, "$lt": 2000}}, True),
    ({"data.object.amount": {"$gt": "100"}}, False),  # a number is not a string
    ({"data.object.currency": {"$gt": "DKK"}}, True),
    ({"data.object.currency": {"$in": ["EUR", "USD"]}}, True),
    ({"data.object.currency": {"$nin": ["EUR", "USD"]}}, False),
    ({"data.object.paid": 1}, False),  # JSON: true is not 1
    ({"data.object.paid": True}, True),
    ({"data.object.amount": 1500.0}, True),  # 1500 is 1500.0
    ({"data.object.note": None}, True),
    ({"data.object.note": {"$exist": True}}, True),
    ({"data.object.gone": {"$exist": False}}, True),
    ({"data.object.gone": {"$exist": True}}, False),
    ({"data.object.status": {"$regex": "^ship"}}, True),
    ({"data.object.amount": {"$regex": "15"}}, False),  # only strings
    ({"data.object.items.1.sku": "B-2"}, True),
    ({"data.object.items.5.sku": {"$exist": False}}, True),
    ({"data.object.tags": ["vip", "eu"]}, True),
    ({"type": "order.updated", "tenant": "acme"}, True),
    ({"$or": [{"data.object.status": "pending"}, {"data.object.amount": {"$gt": 1000}}]}, True),
    ({"$and": [{"data.object.status": "shipped"}, {"data.object.currency": "USD"}]}, False),
    ({"data.object.status": "shipped", "data.object.currency": "USD"}, False),
])
def test_operators(document: Any, expected: bool) -> None:
    assert matches(document) is expected


@pytest.mark.parametrize(("document", "named"), [
    ([], "must be a non-empty object"),
    ({}, "must be a non-empty object"),
    ({"$not": {"a": 1}}, "$not"),
    ({"data.amount": {"$gt": [1]}}, "data.amount.$gt"),
    ({"data.amount": {"$in": "EUR"}}, "data.amount.$in"),
    ({"data.amount": {"$exist": "yes"}}, "data.amount.$exist"),
    ({"data.amount": {"$regex": "(unclosed"}}, "data.amount.$regex"),
    ({"data.amount": {"$regex": "a" * 300}}, "data.amount.$regex"),
    ({"data.amount": {"$between": [1, 2]}}, "data.amount.$between"),
    ({"data.amount": {"$gt": 1, "b": 2}}, "mixes operators"),
    ({"data..amount": 1}, "data..amount"),
    ({"$or": []}, "$or"),
    ({"$and": [{"a": 1}, "x"]}, "$and[1]"),
    ({"a": {"$in": list(range(2))}, **{f"f{i}": i for i in range(60)}}, "more than 50"),
])
def test_bad_filters_are_refused_naming_the_part(document: Any, named: str) -> None:
    with pytest.raises(FilterError) as refused:
        compile_filter(document)
    assert named in str(refused.value)


def test_deep_nesting_is_refused() -> None:
    document: dict[str, Any] = {"a": 1}
    for _ in range(8):
        document = {"$and": [document]}
    with pytest.raises(FilterError, match="deeper"):
        compile_filter(document)


def test_a_backtracking_pattern_runs_in_linear_time() -> None:
    predicate = compile_filter({"data.text": {"$regex": "^(a+)+$"}})
    assert predicate({"data": {"text": "a" * 50_000 + "b"}}) is False  # instant with RE2


def test_the_filter_sees_the_envelope_fields() -> None:
    envelope = Envelope.create(type="order.updated", tenant="acme", api_version="2026-11-01",
                               data={"object": {"status": "shipped"}})
    document = envelope.filtered_document
    assert compile_filter({"type": "order.updated", "data.object.status": "shipped"})(document)
