"""The verification contract: what counts as an echo, and records old and new that stay
valid under ``endpoint.v1``."""

from __future__ import annotations

import pytest

from tests.support.records import endpoint, event
from webhooks.endpoint_verification import (
    challenge_of,
    echoes,
    pending,
    settled,
    verification_request,
)
from webhooks.endpoints import Endpoint
from webhooks.envelope import utcnow

CHALLENGE = "3Jx1YxvQ0kq3b0m2cRk6hU8qWl9z-Ab_"


@pytest.mark.parametrize("body", [f'{{"challenge": "{CHALLENGE}"}}', CHALLENGE,
                                  f"  {CHALLENGE}\n", f'{{"challenge":"{CHALLENGE}","ok":1}}'])
def test_an_echo_is_the_challenge_as_json_or_alone(body: str) -> None:
    assert echoes(body, CHALLENGE)


@pytest.mark.parametrize("body", [None, "", '{"received": true}', f'["{CHALLENGE}"]',
                                  f'{{"challenge": "{CHALLENGE[:-1]}"}}', f"ok {CHALLENGE}",
                                  '{"challenge": null}'])
def test_anything_else_is_no_echo(body: str | None) -> None:
    assert not echoes(body, CHALLENGE)


def test_a_pending_record_and_its_settled_forms_stay_valid_and_old_records_too() -> None:
    old = endpoint("acme", ["*"])
    assert Endpoint.validated(old.to_json()).verification is None and old.verified
    waiting = pending(old, utcnow())
    assert waiting.verification is not None and not waiting.verified
    assert not waiting.wants(event("order.created"))
    request = verification_request(waiting, "2026-11-01")
    assert challenge_of(request) == waiting.verification.challenge
    assert challenge_of(event("order.created")) is None

    for error, reason in ((None, None), ("http_status", "the receiver answered HTTP 500"),
                          ("connect", "x" * 5000)):
        decided = waiting.model_copy(update={
            "verification": settled(waiting.verification, utcnow(), error, reason)})
        again = Endpoint.validated(decided.to_json())  # the schema takes it
        assert again.verified is (error is None)
        assert again.wants(event("order.created")) is (error is None)
