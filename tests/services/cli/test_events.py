"""``send``, ``events …``, ``attempts``, ``redeliver``, ``recover`` against the real stack."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from standardwebhooks.webhooks import Webhook

from services.cli.events import describe_attempt
from tests.services.cli.conftest import Cli, create_live_endpoint
from tests.support.eventlog import eventually
from tests.support.receiver import Receiver


def deliveries(receiver: Receiver, path: str, event_id: str) -> list[Any]:
    return [r for r in receiver.at(path) if json.loads(r.body)["id"] == event_id]


def test_send_list_show_and_the_delivery_log(cli: Cli, cli_receiver: Receiver,
                                             tmp_path: Path) -> None:
    endpoint = create_live_endpoint(cli, cli_receiver, "/orders", "order.*")
    sent = cli.json("send", "--type", "order.shipped",
                    "--data", '{"object": {"id": "order_1"}}', "--idempotency-key", "ship-1")
    assert sent["type"] == "order.shipped" and sent["tenant"] == "acme"
    # A repeat with the same key is recognised: the same event comes back.
    assert cli.json("send", "--type", "order.shipped", "--data", "{}",
                    "--idempotency-key", "ship-1")["id"] == sent["id"]
    body_file = tmp_path / "event.json"
    body_file.write_text(json.dumps({"type": "order.created", "data": {"object": {"n": 2}}}))
    from_file = cli("send", "--file", str(body_file)).stdout
    assert from_file.startswith("sent evt_") and "order.created" in from_file

    (request,) = eventually(lambda: deliveries(cli_receiver, "/orders", sent["id"]))
    assert Webhook(endpoint["secret"]).verify(request.body, request.headers) == sent

    listed = eventually(lambda: [e for e in cli.json("events", "list", "--type", "order.*",
                                                     "--all")["data"]
                                 if e["id"] == sent["id"]])
    assert listed == [sent]
    table = cli("events", "list", "--type", "order.shipped").stdout
    assert sent["id"] in table and "order.created" not in table

    def delivered() -> Any:
        detail = cli.json("events", "show", sent["id"])
        return [d for d in detail["deliveries"]
                if d["endpoint_id"] == endpoint["id"] and d["delivered"]]

    assert eventually(delivered)[0]["attempts"] == 1
    shown = cli("events", "show", sent["id"]).stdout
    assert "ENDPOINT" in shown and endpoint["id"] in shown

    attempts = eventually(lambda: [a for a in cli.json("attempts", endpoint["id"],
                                                       "--all")["data"]
                                   if a["event_id"] == sent["id"]])
    assert [(a["trigger"], a["status"]) for a in attempts] == [("event", "succeeded")]
    assert cli.json("attempts", endpoint["id"], "--status", "failed")["data"] == []
    assert sent["id"] in cli("attempts", endpoint["id"], "--all").stdout

    redelivered = cli("redeliver", sent["id"], "--endpoint", endpoint["id"]).stdout
    assert f"queued 1 deliveries of {sent['id']}: {endpoint['id']}" in redelivered
    again = eventually(lambda: deliveries(cli_receiver, "/orders", sent["id"])[1:])
    assert again[0].headers["webhook-id"] == sent["id"]

    recovered = cli.json("recover", endpoint["id"], "--since", "1h", "--window", "20m")
    assert recovered["requests"] == 3
    assert recovered["queued"] >= 2  # at least the shipped event and the file's
    eventually(lambda: len(deliveries(cli_receiver, "/orders", sent["id"])) >= 3)
    cli("endpoints", "delete", endpoint["id"], "--yes")


def test_attempts_show_prints_the_headers_sent_and_received(cli: Cli,
                                                             cli_receiver: Receiver) -> None:
    cli_receiver.on("/shown", lambda n: (200, {"x-request-id": f"req-cli-{n}"}, 0.0))
    endpoint = create_live_endpoint(cli, cli_receiver, "/shown", "order.*")
    sent = cli.json("send", "--type", "order.packed", "--data", "{}")
    (request,) = eventually(lambda: deliveries(cli_receiver, "/shown", sent["id"]))
    eventually(lambda: cli.json("attempts", endpoint["id"], "--event", sent["id"])["data"])

    shown = cli("attempts", endpoint["id"], "--event", sent["id"], "--show").stdout
    request_part, response_part = shown.split("  response headers:")
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature", "content-type",
                 "user-agent"):
        assert f"    {name}: {request.headers[name]}\n" in request_part, name
    assert "  request headers:\n" in request_part and sent["id"] in request_part
    assert "    x-request-id: req-cli-" in response_part
    assert 'response body:\n    {"received":true}' in response_part
    # The table without --show stays one line per attempt.
    assert "webhook-signature" not in cli("attempts", endpoint["id"], "--event",
                                          sent["id"]).stdout
    # An attempt recorded before headers were kept (the API answers null).
    old = describe_attempt({**cli.json("attempts", endpoint["id"], "--event", sent["id"])[
        "data"][0], "request_headers": None, "response_headers": None})
    assert "  request headers: none recorded" in old
    assert "  response headers: none recorded" in old
    cli("endpoints", "delete", endpoint["id"], "--yes")


def test_follow_streams_new_events_and_stops_after_limit(cli: Cli) -> None:
    follower = cli.spawn("events", "list", "--follow", "--type", "follow.*", "--limit", "2",
                         "--json")
    try:
        # The stream starts "now": events sent before it are not shown. Send until the
        # follower has seen two (the first sends may precede its connection).
        sent: list[str] = []

        def finished() -> bool:
            sent.append(cli.json("send", "--type", "follow.tick", "--data", "{}")["id"])
            cli.json("send", "--type", "other.tick", "--data", "{}")
            try:
                follower.wait(2)
            except subprocess.TimeoutExpired:
                return False
            return True

        eventually(finished, timeout=60, interval=0)
        out, err = follower.communicate(timeout=10)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    printed = [json.loads(line)["id"] for line in out.splitlines()]
    assert len(printed) == 2
    # Two consecutive events of those sent, in order, none of the other type.
    start = sent.index(printed[0])
    assert printed == sent[start:start + 2]


def test_follow_from_created_after_replays_then_follows(cli: Cli) -> None:
    first = cli.json("send", "--type", "replay.tick", "--data", "{}")
    result = eventually(lambda: cli("events", "list", "--follow", "--type", "replay.*",
                                    "--created-after", "1h", "--limit", "1", "--json"))
    assert json.loads(result.stdout)["id"] == first["id"]


def test_command_errors(cli: Cli) -> None:
    missing = cli("events", "show", "evt_missing", expect=1)
    assert missing.stderr.strip() == "Error: 404 Not Found: no event evt_missing"
    assert "give --type" in cli("send", "--data", "{}", expect=2).stderr
    assert "not JSON" in cli("send", "--type", "a.b", "--data", "{", expect=2).stderr
    bad_type = cli("send", "--type", "Not A Type", expect=1)
    assert bad_type.stderr.startswith("Error: 422")
    assert "neither a time" in cli("events", "list", "--created-after", "soon",
                                   expect=2).stderr
    assert "cannot end" in cli("events", "list", "--follow", "--created-before", "1h",
                               expect=2).stderr
    nowhere = Cli({**cli.env, "WEBHOOKS_EVENTLOG_URL": "http://127.0.0.1:9"})
    unreachable = nowhere("endpoints", "list", expect=1)
    assert unreachable.stderr.startswith("Error: cannot reach eventlog at http://127.0.0.1:9")
    recover_missing = cli("recover", "ep_missing", "--since", "1h", expect=1)
    assert "404 Not Found" in recover_missing.stderr
