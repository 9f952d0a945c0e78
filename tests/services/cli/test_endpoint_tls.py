"""``webhooks endpoints create|update`` with TLS files, against the real stack."""

from __future__ import annotations

from pathlib import Path

import trustme

from tests.services.cli.conftest import Cli
from tests.support.tls_material import ca_pem, client_certificate


def test_tls_files_reach_the_api_and_the_key_is_never_printed(cli: Cli, tmp_path: Path) -> None:
    clients = trustme.CA()
    client, other = client_certificate(clients), client_certificate(clients, "other")
    files = {"cert": client.cert, "key": client.key, "ca": ca_pem(trustme.CA()),
             "other-key": other.key}
    for name, text in files.items():
        (tmp_path / f"{name}.pem").write_text(text)
    pem = {name: str(tmp_path / f"{name}.pem") for name in files}

    created = cli.json("endpoints", "create", "--url", "https://127.0.0.1:9/tls",
                       "--client-cert", pem["cert"], "--client-key", pem["key"],
                       "--ca-bundle", pem["ca"])
    assert created["tls"] == {"client_cert": client.cert, "client_key": "[masked]",
                              "ca_bundle": files["ca"]}
    shown = cli("endpoints", "show", created["id"]).stdout
    assert "tls:" in shown and "client certificate (key masked)" in shown
    assert "private CA bundle" in shown and client.key.splitlines()[1] not in shown

    # A key of another certificate: one line from the API naming the field; nothing changes.
    refused = cli("endpoints", "update", created["id"], "--client-cert", pem["cert"],
                  "--client-key", pem["other-key"], expect=1)
    assert refused.stderr.startswith("Error: 422 Unprocessable Entity: tls: ")
    assert "client_key: does not belong to client_cert" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert other.key.splitlines()[1] not in refused.stderr
    assert cli.json("endpoints", "show", created["id"])["tls"] == created["tls"]

    both = cli("endpoints", "update", created["id"], "--ca-bundle", pem["ca"], "--clear-tls",
               expect=2)
    assert "give TLS files or --clear-tls, not both" in both.stderr
    missing = cli("endpoints", "update", created["id"], "--client-key",
                  str(tmp_path / "missing.pem"), expect=2)
    assert "Invalid value for '--client-key'" in missing.stderr
    replaced = cli.json("endpoints", "update", created["id"], "--ca-bundle", pem["ca"])
    assert replaced["tls"] == {"client_cert": None, "client_key": None,
                               "ca_bundle": files["ca"]}
    assert cli.json("endpoints", "update", created["id"], "--clear-tls")["tls"] is None
    cli("endpoints", "delete", created["id"], "--yes")
