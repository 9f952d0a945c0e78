import pytest

from webhooks.matching import is_valid_filter, matches_any, type_matches


@pytest.mark.parametrize(("pattern", "event_type", "expected"), [
    ("*", "order.shipped", True),
    ("order.*", "order.shipped", True),
    ("order.*", "order.line.added", True),
    ("order.*", "orders.shipped", False),
    ("order.*", "order", False),
    ("order.shipped", "order.shipped", True),
    ("order.shipped", "order.shipped.late", False),
])
def test_type_matches(pattern: str, event_type: str, expected: bool) -> None:
    assert type_matches(pattern, event_type) is expected


def test_matches_any() -> None:
    assert matches_any(["invoice.paid", "order.*"], "order.created")
    assert not matches_any([], "order.created")


@pytest.mark.parametrize(("pattern", "valid"), [
    ("*", True), ("order.*", True), ("a.b.c", True), ("Order.*", False), ("*.shipped", False),
    ("order.", False), ("", False),
])
def test_filter_validation(pattern: str, valid: bool) -> None:
    assert is_valid_filter(pattern) is valid
