"""``webhooks endpoints …`` against the real stack."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from services.cli import client
from tests.services.cli.conftest import Cli, create_live_endpoint
from tests.support.eventlog import eventually
from tests.support.receiver import Receiver


def test_endpoint_lifecycle(cli: Cli, cli_receiver: Receiver) -> None:
    endpoint = create_live_endpoint(cli, cli_receiver, "/lifecycle", "order.*", "invoice.paid")
    assert endpoint["id"].startswith("ep_")
    assert endpoint["secret"].startswith("whsec_")
    assert endpoint["events"] == ["order.*", "invoice.paid"]

    # The test webhook went through the real pipeline, signed with the endpoint's secret.
    test_message = next(r for r in cli_receiver.at("/lifecycle")
                        if json.loads(r.body)["type"] == "webhook.test")
    assert Webhook(endpoint["secret"]).verify(test_message.body, test_message.headers)

    listed = cli("endpoints", "list").stdout
    assert endpoint["id"] in listed and "enabled" in listed
    assert listed.splitlines()[0].split()[:3] == ["ID", "URL", "EVENTS"]
    assert endpoint["id"] in [e["id"] for e in cli.json("endpoints", "list")["data"]]

    shown = cli("endpoints", "show", endpoint["id"], "--secrets").stdout
    assert f"secret: {endpoint['secret']}" in shown

    updated = cli.json("endpoints", "update", endpoint["id"], "--description", "orders",
                       "--rate-limit", "50")
    assert (updated["description"], updated["rate_limit"]) == ("orders", 50)
    assert updated["events"] == ["order.*", "invoice.paid"]  # untouched

    assert cli.json("endpoints", "disable", endpoint["id"])["disabled"] is True
    assert "disabled" in cli("endpoints", "list").stdout
    assert cli.json("endpoints", "enable", endpoint["id"])["disabled"] is False

    rotated = cli.json("endpoints", "rotate-secret", endpoint["id"])
    assert rotated["secret"] != endpoint["secret"]
    secrets = cli.json("endpoints", "show", endpoint["id"], "--secrets")["secrets"]
    assert [s["secret"] for s in secrets] == [rotated["secret"], endpoint["secret"]]

    queued = cli.json("endpoints", "test", endpoint["id"])
    assert queued["queued"] == 1

    # Without --yes it asks; "n" leaves the endpoint alone.
    refused = cli("endpoints", "delete", endpoint["id"], input="n\n", expect=1)
    assert "Aborted" in refused.stderr
    assert cli("endpoints", "delete", endpoint["id"], "--yes").stdout.strip() == \
        f"deleted {endpoint['id']}"
    gone = cli("endpoints", "show", endpoint["id"], expect=1)
    assert gone.stderr.strip() == f"Error: 404 Not Found: no endpoint {endpoint['id']}"


def test_endpoints_are_tenant_scoped(cli: Cli, cli_receiver: Receiver) -> None:
    mine = cli.json("endpoints", "create", "--url", cli_receiver.url("/scoped"))
    globex = cli.as_key("key-globex")
    assert mine["id"] not in globex("endpoints", "list").stdout
    refused = globex("endpoints", "show", mine["id"], expect=1)
    assert "404 Not Found" in refused.stderr
    cli("endpoints", "delete", mine["id"], "--yes")


def test_admin_keys_act_for_the_tenant_they_name(cli: Cli, cli_receiver: Receiver) -> None:
    admin = cli.as_key("key-admin")
    created = admin.json("--tenant", "globex", "endpoints", "create",
                         "--url", cli_receiver.url("/admin"), "--events", "admin.*")
    assert created["id"] in cli.as_key("key-globex")("endpoints", "list").stdout
    assert created["id"] not in cli("endpoints", "list").stdout
    sent = admin.json("--tenant", "globex", "send", "--type", "admin.made", "--data", "{}")
    assert sent["tenant"] == "globex"
    no_tenant = admin("endpoints", "list", expect=1)
    assert "admin keys must name a tenant" in no_tenant.stderr
    admin("--tenant", "globex", "endpoints", "delete", created["id"], "--yes")


def test_bad_input_is_one_clear_line_and_changes_nothing(cli: Cli) -> None:
    before = cli.json("endpoints", "list")["data"]
    bad_filter = cli("endpoints", "create", "--url", "http://127.0.0.1:1/x",
                     "--events", "Order Shipped", expect=1)
    assert bad_filter.stderr.startswith("Error: 422")
    assert "events" in bad_filter.stderr and len(bad_filter.stderr.strip().splitlines()) == 1
    bad_secret = cli("endpoints", "create", "--url", "http://127.0.0.1:1/x",
                     "--secret", "nope", expect=1)
    assert "secret" in bad_secret.stderr
    nothing = cli("endpoints", "update", "ep_missing", expect=2)
    assert "nothing to change" in nothing.stderr
    wrong_key = cli.as_key("key-wrong")("endpoints", "list", expect=1)
    assert wrong_key.stderr.strip() == (
        "Error: 401 Unauthorized: missing or invalid API key (Authorization: Bearer <key>)")
    assert cli.json("endpoints", "list")["data"] == before


def test_every_command_has_help(cli: Cli) -> None:
    from services.cli import main

    def walk(command: object, path: list[str]) -> list[list[str]]:
        found = [path]
        for name, sub in getattr(command, "commands", {}).items():
            found += walk(sub, [*path, name])
        return found

    for path in walk(main, []):
        result = cli(*path, "--help")
        assert result.stdout.startswith("Usage: "), path


def test_custom_headers_and_a_payload_filter(cli: Cli, tmp_path: Path) -> None:
    shipped = {"data.object.status": "shipped", "data.object.amount": {"$gte": 1000}}
    created = cli.json("endpoints", "create", "--url", "http://127.0.0.1:1/options",
                       "--header", "X-Team=payments", "--header", "X-Trace=a=b",
                       "--secret-header", "Authorization=Bearer s3cr3t",
                       "--filter", json.dumps(shipped))
    assert created["headers"] == [
        {"name": "X-Team", "value": "payments", "secret": False},
        {"name": "X-Trace", "value": "a=b", "secret": False},
        {"name": "Authorization", "value": "[masked]", "secret": True}]
    assert created["filter"] == shipped
    shown = cli("endpoints", "show", created["id"]).stdout
    assert "s3cr3t" not in shown
    lines = shown.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("headers:"))
    value_column = lines[at].index("X-Team")
    assert [line[value_column:] for line in lines[at:at + 3]] == [
        "X-Team: payments", "X-Trace: a=b", "Authorization: [masked]  (secret)"]
    assert f"filter:          {json.dumps(shipped)}" in lines

    # A filter from a file, or from standard input; headers replaced, then cleared.
    (tmp_path / "filter.json").write_text('{"type": {"$in": ["order.shipped"]}}')
    changed = cli.json("endpoints", "update", created["id"], "--filter",
                       f"@{tmp_path / 'filter.json'}", "--secret-header", "X-Key=k2")
    assert changed["filter"] == {"type": {"$in": ["order.shipped"]}}
    assert changed["headers"] == [{"name": "X-Key", "value": "[masked]", "secret": True}]
    from_stdin = json.loads(cli("endpoints", "update", created["id"], "--filter", "@-",
                                "--json", input='{"data.n": 1}').stdout)
    assert from_stdin["filter"] == {"data.n": 1}
    assert from_stdin["headers"] == changed["headers"]  # untouched
    cleared = cli.json("endpoints", "update", created["id"], "--clear-headers",
                       "--clear-filter")
    assert (cleared["headers"], cleared["filter"]) == ([], None)
    plain = cli("endpoints", "show", created["id"]).stdout.splitlines()
    assert "headers:         -" in plain and "filter:          -" in plain
    cli("endpoints", "delete", created["id"], "--yes")


def test_bad_headers_and_filters_are_one_clear_line_and_change_nothing(
        cli: Cli, tmp_path: Path) -> None:
    before = cli.json("endpoints", "list")["data"]
    create = ("endpoints", "create", "--url", "http://127.0.0.1:1/bad")
    usage = [  # refused before any request: exit 2, naming the option
        (("--header", "X-Team"), "Invalid value for '--header': 'X-Team' is not NAME=VALUE"),
        (("--secret-header", "=v"), "Invalid value for '--secret-header': '=v' is not"),
        (("--filter", "{nope"), "Invalid value for '--filter': not JSON"),
        (("--filter", "[1]"), "Invalid value for '--filter': must be a JSON object"),
        (("--filter", f"@{tmp_path / 'missing.json'}"),
         "Invalid value for '--filter': cannot read"),
    ]
    for args, complaint in usage:
        result = cli(*create, *args, expect=2)
        assert complaint in result.stderr, result.stderr
    refused = [  # refused by the API: exit 1, one line naming the bad part
        (("--header", "Host=evil.example"), "'Host': reserved"),
        (("--secret-header", "X-A=1", "--header", "x-a=2"), "'X-A': given twice"),
        (("--filter", '{"$where": "1"}'), "$where"),
        (("--filter", '{"data.note": {"$regex": "(open"}}'), "data.note.$regex"),
    ]
    for args, named in refused:
        result = cli(*create, *args, expect=1)
        assert result.stderr.startswith("Error: 422 Unprocessable Entity: "), result.stderr
        assert named in result.stderr and len(result.stderr.strip().splitlines()) == 1
    endpoint = cli.json(*create)
    both = [(("--header", "X-A=1", "--clear-headers"), "--clear-headers, not both"),
            (("--filter", "{}", "--clear-filter"), "--clear-filter, not both")]
    for args, complaint in both:
        assert complaint in cli("endpoints", "update", endpoint["id"], *args,
                                expect=2).stderr
    patched = cli("endpoints", "update", endpoint["id"], "--header", "Content-Type=x",
                  expect=1)
    assert "'Content-Type': reserved" in patched.stderr
    assert cli.json("endpoints", "show", endpoint["id"])["headers"] == []
    cli("endpoints", "delete", endpoint["id"], "--yes")
    assert cli.json("endpoints", "list")["data"] == before


def test_list_pages_through_every_endpoint_with_filters(
        cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    admin = cli.as_key("key-admin")
    tenant = ("--tenant", f"t{uuid.uuid4().hex[:10]}")
    urls = [f"http://127.0.0.1:1/{name}" for name in ("Shop-1", "blog", "shop-2", "shop-3")]
    made = [admin.json(*tenant, "endpoints", "create", "--url", url)["id"] for url in urls]
    admin(*tenant, "endpoints", "disable", made[3])
    monkeypatch.setattr(client, "PAGE_SIZE", 2)  # several requests for four endpoints

    def listed(*args: str) -> list[str]:
        return [e["id"] for e in admin.json(*tenant, "endpoints", "list", *args)["data"]]

    assert listed() == made
    assert listed("--limit", "3") == made[:3]
    assert listed("--url", "SHOP") == [made[0], made[2], made[3]]
    assert listed("--url", "shop", "--enabled") == [made[0], made[2]]
    assert listed("--disabled") == [made[3]]
    table = admin(*tenant, "endpoints", "list", "--disabled").stdout
    assert "disabled" in table and made[3] in table and made[0] not in table
    assert admin(*tenant, "endpoints", "list", "--url", "nowhere").stdout == "no endpoints yet\n"


def test_a_create_retried_with_its_idempotency_key_makes_one_endpoint(cli: Cli) -> None:
    key = f"cli-{uuid.uuid4()}"
    create = ("endpoints", "create", "--url", "http://127.0.0.1:1/once", "--idempotency-key",
              key)
    first, again = cli.json(*create), cli.json(*create)
    assert again == first  # same id and secret
    other = cli("endpoints", "create", "--url", "http://127.0.0.1:1/other",
                "--idempotency-key", key, expect=1)
    assert other.stderr.startswith("Error: 422 Unprocessable Entity: Idempotency-Key: "
                                   f"already used to create {first['id']} with other values "
                                   "of url;")
    cli("endpoints", "delete", first["id"], "--yes")


def test_ordered_paused_and_verification_from_the_cli(cli: Cli, cli_receiver: Receiver) -> None:
    path = "/cli-verify"
    created = cli.json("endpoints", "create", "--url", cli_receiver.url(path), "--ordered",
                       "--paused", "--verify")
    assert (created["ordered"], created["paused"]) == (True, True)
    assert created["verification"]["state"] == "pending"

    # The receiver answers 200 without echoing: the verification fails, and says why.
    def settled() -> dict[str, Any] | None:
        verification = cli.json("endpoints", "show", created["id"])["verification"]
        return verification if verification["state"] != "pending" else None

    failed = eventually(settled, timeout=60)
    assert failed["error"] == "challenge_not_echoed"
    assert created["id"] in [line.split()[0] for line in cli("endpoints", "list").stdout
                             .splitlines() if "unverified" in line]

    cli_receiver.answers[path] = lambda request: json.dumps(
        {"challenge": json.loads(request.body)["data"].get("challenge")}).encode()
    verified = cli("endpoints", "verify", created["id"], "--wait").stdout
    assert verified.startswith(f"{created['id']}: verified ")
    shown = cli("endpoints", "show", created["id"]).stdout.splitlines()
    assert "ordered:         yes" in shown and "paused:          yes" in shown
    assert any(line.startswith("verification:    verified ") for line in shown)
    row = next(line for line in cli("endpoints", "list").stdout.splitlines()
               if line.startswith(created["id"]))
    assert row.split()[3:5] == ["paused", "yes"]  # status, ordered

    resumed = cli.json("endpoints", "resume", created["id"])
    assert (resumed["paused"], resumed["paused_since"]) == (False, None)
    assert cli.json("endpoints", "pause", created["id"])["paused"] is True
    assert cli.json("endpoints", "update", created["id"], "--unordered")["ordered"] is False
    again = cli("endpoints", "verify", created["id"], expect=1)
    assert again.stderr.strip() == (f"Error: 409 Conflict: endpoint {created['id']} is "
                                    "verified already")
    cli("endpoints", "delete", created["id"], "--yes")
