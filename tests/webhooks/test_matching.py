import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

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


# -- properties (hypothesis): a filter means what its segments say ------------------------

SEGMENT = st.from_regex(r"[a-z][a-z0-9_]{0,3}", fullmatch=True) | st.sampled_from(["order", "o"])
TYPES = st.lists(SEGMENT, min_size=2, max_size=4).map(".".join)
FILTERS = st.just("*") | TYPES | st.lists(SEGMENT, min_size=1, max_size=3).map(
    lambda parts: ".".join(parts) + ".*")


def reference_match(pattern: str, event_type: str) -> bool:
    """The documented meaning, segment by segment."""
    if pattern == "*":
        return True
    wanted, actual = pattern.split("."), event_type.split(".")
    if wanted[-1] == "*":
        prefix = wanted[:-1]
        return len(actual) > len(prefix) and actual[:len(prefix)] == prefix
    return wanted == actual


@given(pattern=FILTERS, event_type=TYPES)
def test_a_filter_matches_exactly_the_types_its_segments_name(pattern: str,
                                                               event_type: str) -> None:
    assert is_valid_filter(pattern)
    assert type_matches(pattern, event_type) is reference_match(pattern, event_type)


@given(pattern=FILTERS, event_type=TYPES)
def test_a_prefix_filter_matches_every_type_below_it(pattern: str, event_type: str) -> None:
    if pattern != "*":
        prefix = pattern.removesuffix(".*")
        assert type_matches(f"{prefix}.*", f"{prefix}.{event_type}")
        assert not type_matches(f"{prefix}.*", prefix)


@example(text="order.*\n")  # a regex "$" matches before a final newline
@given(text=st.text(alphabet="ab_.*A1 \n", max_size=12))
def test_only_well_formed_filters_are_valid(text: str) -> None:
    segments = text.removesuffix(".*").split(".")
    well_formed = text == "*" or all(re.fullmatch(r"[a-z][a-z0-9_]*", s) for s in segments)
    assert is_valid_filter(text) is well_formed
