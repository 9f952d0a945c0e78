"""``webhooks endpoints …`` against the real stack."""

from __future__ import annotations

import json

from standardwebhooks.webhooks import Webhook

from tests.services.cli.conftest import Cli, create_live_endpoint
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
