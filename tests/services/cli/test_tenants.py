"""``webhooks tenants …`` and ``webhooks keys …`` (admin) against the real stack: a key
made with the CLI works for the tenant commands and stops working once revoked."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner, Result

from services.cli import client, main
from tests.services.cli.conftest import Cli
from tests.support.eventlog import eventually

MISSING_ADMIN = "Error: 403 Forbidden: this API key lacks the 'admin' scope"


@pytest.fixture
def admin(cli: Cli) -> Cli:
    return cli.as_key("key-admin")


def run(cli: Cli, *args: str) -> Result:
    """A command whose exit code the caller looks at (no assertion)."""
    return CliRunner().invoke(main, list(args), env=cli.env, catch_exceptions=False)


def test_tenant_lifecycle(admin: Cli) -> None:
    created = admin.json("tenants", "create", "life-a", "--name", "Life A",
                         "--metadata", "plan=pro", "--metadata", "region=eu")
    assert (created["id"], created["name"]) == ("life-a", "Life A")
    assert created["metadata"] == {"plan": "pro", "region": "eu"}
    assert created["disabled"] is False
    shown = admin("tenants", "create", "life-b").stdout
    assert shown.splitlines()[0].split() == ["id:", "life-b"]
    admin("tenants", "create", "life-c")

    table = admin("tenants", "list", "--all").stdout
    header, *lines = table.splitlines()
    assert header.split() == ["ID", "NAME", "STATUS", "METADATA", "CREATED"]
    row = next(line for line in lines if line.startswith("life-a "))
    assert "Life A" in row and "enabled" in row and '"plan":"pro"' in row
    listed = [t["id"] for t in admin.json("tenants", "list", "--all")["data"]]
    assert [t for t in listed if t.startswith("life-")] == ["life-a", "life-b", "life-c"]
    assert listed == sorted(listed)
    first = admin.json("tenants", "list", "--limit", "1", "--cursor", "life-a")["data"]
    assert [t["id"] for t in first] == ["life-b"]

    got = admin("tenants", "get", "life-a").stdout
    assert "name:     Life A" in got and '{"plan": "pro", "region": "eu"}' in got
    assert admin.json("tenants", "get", "life-a") == created

    renamed = admin.json("tenants", "update", "life-a", "--name", "Life Inc",
                         "--metadata", "plan=enterprise")
    assert (renamed["name"], renamed["metadata"]) == ("Life Inc", {"plan": "enterprise"})
    assert admin.json("tenants", "update", "life-a", "--disable")["disabled"] is True
    assert "disabled" in next(line for line in admin("tenants", "list", "--all").stdout
                              .splitlines() if line.startswith("life-a "))
    enabled = admin.json("tenants", "update", "life-a", "--enable", "--clear-metadata")
    assert (enabled["disabled"], enabled["metadata"], enabled["name"]) == \
        (False, {}, "Life Inc")

    refused = admin("tenants", "delete", "life-c", input="n\n", expect=1)
    assert "Aborted" in refused.stderr
    assert admin.json("tenants", "get", "life-c")["id"] == "life-c"
    erased = admin("tenants", "delete", "life-c", "--yes").stdout
    assert erased.startswith("erased tenant life-c\ndeleted rows: events 0, attempts 0")
    assert "remains until retention removes it:" in erased and "retention" in erased
    gone = admin("tenants", "get", "life-c", expect=1)
    assert gone.stderr.strip() == "Error: 404 Not Found: no tenant life-c"
    assert "life-c" not in admin("tenants", "list", "--all").stdout
    again = admin("tenants", "create", "life-c", expect=1)
    assert again.stderr.strip() == \
        "Error: 409 Conflict: tenant life-c was erased; choose another id"


def test_listing_follows_next_cursor_across_pages(admin: Cli,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(5):
        admin("tenants", "create", f"paged-{n}")
    everything = [t["id"] for t in admin.json("tenants", "list", "--all")["data"]]
    monkeypatch.setattr(client, "PAGE_SIZE", 2)  # /v1/tenants pages carry no has_more
    assert [t["id"] for t in admin.json("tenants", "list", "--all")["data"]] == everything
    assert [t["id"] for t in admin.json("tenants", "list", "--limit", "3",
                                        "--cursor", "paged-0")["data"]] == \
        ["paged-1", "paged-2", "paged-3"]


def test_a_created_key_works_until_revoked(admin: Cli, cli: Cli) -> None:
    admin("tenants", "create", "keyed", "--name", "Keyed")
    made = admin("keys", "create", "keyed", "--scope", "read", "--scope", "publish",
                 "--description", "ci runner", "--expires-in", "30d")
    assert "Store the key now: it is shown only this once." in made.stderr
    fields = dict(line.split(": ", 1) for line in made.stdout.splitlines())
    key, key_id = fields["key"].strip(), fields["id"].strip()
    assert key.startswith("whk_") and key_id.startswith("key_")
    assert fields["scopes"].strip() == "read,publish"
    assert fields["expires"].strip() != "-"

    tenant = cli.as_key(key)
    # The eventlog that wrote the key knows it at once; ingest within a fetch.
    assert tenant.json("events", "list")["data"] == []
    sent = eventually(lambda: run(tenant, "send", "--type", "keyed.made", "--data", "{}",
                                  "--json").exit_code == 0 or None)
    assert sent
    events = eventually(lambda: tenant.json("events", "list", "--type", "keyed.*")["data"])
    assert {e["tenant"] for e in events} == {"keyed"}
    # read + publish, no manage: the API names the scope the key lacks.
    no_manage = tenant("endpoints", "create", "--url", "http://127.0.0.1:9/x", expect=1)
    assert no_manage.stderr.strip() == \
        "Error: 403 Forbidden: this API key lacks the 'manage' scope"

    header, *rows = admin("keys", "list", "keyed").stdout.splitlines()
    assert header.split()[:4] == ["ID", "PREFIX", "SCOPES", "DESCRIPTION"]
    assert "LAST USED" in header and "EXPIRES" in header
    (row,) = rows
    assert row.split()[:3] == [key_id, key[:12], "read,publish"] and "ci runner" in row
    (listed,) = admin.json("keys", "list", "keyed")["data"]
    assert "key" not in listed and listed["prefix"] == key[:12]
    assert key not in json.dumps(admin.json("keys", "list", "keyed"))
    # Last use is written back by the replicas, about once a minute per key.
    eventually(lambda: admin.json("keys", "list", "keyed")["data"][0]["last_used"],
               timeout=30, interval=1.0)

    kept = admin("keys", "revoke", "keyed", key_id, input="n\n", expect=1)
    assert "Aborted" in kept.stderr
    assert tenant.json("events", "list", "--type", "keyed.*")["data"]
    assert admin("keys", "revoke", "keyed", key_id, "--yes").stdout.strip() == \
        f"revoked {key_id}"
    refused = tenant("events", "list", expect=1)
    assert refused.stderr.strip() == ("Error: 401 Unauthorized: missing or invalid API key "
                                      "(Authorization: Bearer <key>)")
    eventually(lambda: run(tenant, "send", "--type", "keyed.late", "--data", "{}")
               .exit_code == 1)
    assert admin("keys", "list", "keyed").stdout.strip() == \
        "no managed keys (keys from WEBHOOKS_API_KEYS are not listed)"
    twice = admin("keys", "revoke", "keyed", key_id, "--yes", expect=1)
    assert twice.stderr.strip() == f"Error: 404 Not Found: no key {key_id} for tenant keyed"


def test_disabling_a_tenant_refuses_its_events_until_enabled(admin: Cli, cli: Cli) -> None:
    admin("tenants", "create", "pausable")
    key = admin.json("keys", "create", "pausable")["key"]
    tenant = cli.as_key(key)
    eventually(lambda: run(tenant, "send", "--type", "pause.before", "--data", "{}")
               .exit_code == 0)
    admin("tenants", "update", "pausable", "--disable")
    refused = eventually(lambda: (r := run(tenant, "send", "--type", "pause.during",
                                           "--data", "{}")).exit_code == 1 and r)
    assert refused.stderr.startswith("Error: 403 Forbidden:")
    assert "disabled" in refused.stderr
    admin("tenants", "update", "pausable", "--enable")
    eventually(lambda: run(tenant, "send", "--type", "pause.after", "--data", "{}")
               .exit_code == 0)


def test_erasing_a_tenant_removes_its_data_and_keys(admin: Cli, cli: Cli) -> None:
    admin("tenants", "create", "erasable")
    key = admin.json("keys", "create", "erasable")["key"]
    tenant = cli.as_key(key)
    eventually(lambda: run(tenant, "send", "--type", "erase.me", "--data", "{}")
               .exit_code == 0)
    eventually(lambda: tenant.json("events", "list")["data"])
    erasure = admin.json("tenants", "delete", "erasable", "--yes")
    assert erasure["tenant"] == "erasable"
    assert erasure["rows_deleted"]["events"] >= 1
    assert erasure["tombstoned"]["keys"] == 1
    assert any("retention" in item for item in erasure["remaining"])
    assert "401 Unauthorized" in tenant("events", "list", expect=1).stderr
    assert admin("keys", "list", "erasable", expect=1).stderr.strip() == \
        "Error: 404 Not Found: no tenant erasable"
    gone = admin("--tenant", "erasable", "events", "list", expect=1)
    assert gone.stderr.strip() == "Error: 404 Not Found: tenant erasable was erased"


def test_admin_keys_made_with_the_cli_administer(admin: Cli) -> None:
    made = admin.json("keys", "create", "*", "--description", "second admin")
    assert made["scopes"] == ["admin"] and made["tenant"] == "*"
    second = admin.as_key(made["key"])
    assert isinstance(second.json("tenants", "list")["data"], list)
    assert made["id"] in admin("keys", "list", "*").stdout
    second("keys", "revoke", "*", made["id"], "--yes")
    assert second("tenants", "list", expect=1).stderr.startswith("Error: 401")


def test_tenant_keys_get_a_clear_error_naming_the_admin_scope(admin: Cli, cli: Cli) -> None:
    for args in (("tenants", "list"), ("tenants", "get", "acme"),
                 ("tenants", "create", "sneaky"), ("tenants", "delete", "acme", "--yes"),
                 ("keys", "create", "acme"), ("keys", "list", "acme"),
                 ("keys", "revoke", "acme", "key_01ABC", "--yes")):
        refused = cli(*args, expect=1)
        assert refused.stderr.strip() == MISSING_ADMIN, args
    # A managed key with every tenant scope is still no admin.
    admin("tenants", "create", "plain")
    strong = cli.as_key(admin.json("keys", "create", "plain")["key"])
    assert strong("tenants", "list", expect=1).stderr.strip() == MISSING_ADMIN
    assert "sneaky" not in admin("tenants", "list", "--all").stdout


def test_bad_input_fails_cleanly_and_changes_nothing(admin: Cli) -> None:
    before = admin.json("tenants", "list", "--all")["data"]
    bad_id = admin("tenants", "create", "no spaces!", expect=2)
    assert "'no spaces!' is not a valid tenant id" in bad_id.stderr
    assert "is not a valid tenant id" in admin("tenants", "get", "../endpoints",
                                               expect=2).stderr
    assert "is not a valid tenant id" in admin("tenants", "create", "*", expect=2).stderr
    assert "is not a valid tenant id" in admin("keys", "list", "a/b", expect=2).stderr
    assert "is not a valid key id" in admin("keys", "revoke", "acme", "nope", expect=2).stderr
    unknown_scope = admin("keys", "create", "acme", "--scope", "superuser", expect=2)
    assert "'superuser' is not one of 'publish', 'read', 'manage', 'admin'" in \
        unknown_scope.stderr
    wrong_scope = admin("keys", "create", "acme", "--scope", "admin", expect=1)
    assert wrong_scope.stderr.startswith("Error: 422 Unprocessable Entity: scopes: ['admin'] "
                                         "not allowed for tenant keys")
    assert len(wrong_scope.stderr.strip().splitlines()) == 1
    assert "not allowed for admin keys" in admin("keys", "create", "*", "--scope", "read",
                                                 expect=1).stderr
    assert "not a duration" in admin("keys", "create", "acme", "--expires-in", "soon",
                                     expect=2).stderr
    assert "Error: 422" in admin("keys", "create", "acme", "--expires-in", "20000d",
                                 expect=1).stderr
    assert "is not key=value" in admin("tenants", "create", "x", "--metadata", "plan",
                                       expect=2).stderr
    assert "given twice" in admin("tenants", "create", "x", "--metadata", "a=1",
                                  "--metadata", "a=2", expect=2).stderr
    assert "nothing to change" in admin("tenants", "update", "x", expect=2).stderr
    assert "not both" in admin("tenants", "update", "x", "--metadata", "a=1",
                               "--clear-metadata", expect=2).stderr
    assert admin("keys", "create", "nobody", expect=1).stderr.strip() == \
        "Error: 404 Not Found: no tenant nobody"
    assert admin("tenants", "update", "nobody", "--disable", expect=1).stderr.strip() == \
        "Error: 404 Not Found: no tenant nobody"
    long_name = admin("tenants", "create", "x", "--name", "n" * 300, expect=1)
    assert long_name.stderr.startswith("Error: 422") and "name" in long_name.stderr
    assert admin.json("tenants", "list", "--all")["data"] == before

