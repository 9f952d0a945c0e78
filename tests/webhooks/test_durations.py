import pytest

from webhooks.durations import format_duration, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("30s", 30), ("5m", 300), ("2h", 7200), ("1d", 86400), ("15", 15), (3, 3),
])
def test_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "-1s", "1w", "s"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [(60, "1m"), (90, "90s"), (7200, "2h"),
                                               (0.25, "250ms"), (86400, "1d")])
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
