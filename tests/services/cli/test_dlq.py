"""``webhooks dlq …``: a delivery dies after its retries, then a replay brings it to the
now-healthy receiver with the same ``webhook-id``."""

from __future__ import annotations

import json
from typing import Any

from tests.services.cli.conftest import Cli, create_live_endpoint
from tests.support.eventlog import eventually
from tests.support.receiver import Receiver


def test_list_show_and_replay_dead_deliveries(cli: Cli, cli_receiver: Receiver) -> None:
    healthy = {"now": True}
    cli_receiver.on("/dying", lambda _: (200 if healthy["now"] else 500, {}, 0.0))
    endpoint = create_live_endpoint(cli, cli_receiver, "/dying", "dlq.*")
    healthy["now"] = False
    doomed = [cli.json("send", "--type", "dlq.item", "--data", json.dumps({"n": n}))
              for n in range(2)]

    def dead() -> list[dict[str, Any]]:
        entries = cli.json("dlq", "list", "--endpoint", endpoint["id"], "--all")["data"]
        return entries if len(entries) == 2 else []

    entries = eventually(dead, timeout=60, interval=1.0)  # retries: 1s, 2s
    assert sorted(e["event_id"] for e in entries) == sorted(e["id"] for e in doomed)
    table = cli("dlq", "list", "--type", "dlq.*").stdout
    assert all(e["id"] in table for e in entries)

    entry = cli.json("dlq", "show", entries[0]["id"])
    assert entry["attempts"] == 3 and len(entry["history"]) == 3
    shown = cli("dlq", "show", entries[0]["id"]).stdout
    assert entries[0]["event_id"] in shown and "STATUS" in shown

    healthy["now"] = True
    one = cli("dlq", "replay", entries[0]["id"])
    assert one.stdout.strip() == "queued 1 dead-lettered deliveries again"
    assert "replaying" in one.stderr  # the progress bar
    every = cli.json("dlq", "replay", "--endpoint", endpoint["id"])
    assert every == {"queued": 2, "skipped": 0}

    def delivered(event_id: str) -> list[Any]:
        return [r for r in cli_receiver.at("/dying")
                if json.loads(r.body)["id"] == event_id and r.headers["webhook-id"] == event_id]

    for event in doomed:
        # Three failed attempts, then the replays (same webhook-id) reached it.
        assert len(eventually(lambda e=event: delivered(e["id"])[3:])) >= 1
    replays = eventually(lambda: [a for a in cli.json("attempts", endpoint["id"],
                                                      "--event", doomed[0]["id"],
                                                      "--status", "succeeded")["data"]
                                  if a["trigger"] == "replay"])
    assert replays
    cli("endpoints", "delete", endpoint["id"], "--yes")


def test_dlq_errors(cli: Cli) -> None:
    assert "404 Not Found" in cli("dlq", "show", "dlv_missing", expect=1).stderr
    assert "give DLQ ids" in cli("dlq", "replay", expect=2).stderr
    assert "not both" in cli("dlq", "replay", "dlv_x", "--type", "a.*", expect=2).stderr
    missing = cli("dlq", "replay", "dlv_missing", expect=1)
    assert "404 Not Found: no dead tasks dlv_missing" in missing.stderr
    bad_type = cli("dlq", "list", "--type", "Not A Type", expect=1)
    assert bad_type.stderr.startswith("Error: 400")
