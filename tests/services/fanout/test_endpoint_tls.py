"""Endpoints with TLS material of their own, against real TLS receivers on loopback: one
that requires a client certificate (mutual TLS), both with certificates from private CAs
(minted by trustme) that the system does not trust."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trustme
from aiohttp import web

from services.fanout import tls_contexts
from services.fanout.deliverer import Deliverer, DeliveryResult
from tests.conftest import TEST_SECRETS_KEY
from tests.services.fanout.test_deliverer import LoopbackReceiver, make_endpoint, make_task
from tests.support.tls_material import (
    ClientCertificate,
    ca_pem,
    client_certificate,
    mutual_tls_server,
)
from webhooks.endpoints import Endpoint, EndpointTls
from webhooks.secret_encryption import SecretsKeyring
from webhooks.target_policy import TargetPolicy

LOOPBACK = TargetPolicy.create(("127.0.0.0/8",), production=False)


class MutualTlsReceiver(LoopbackReceiver):
    """Records, besides each request, the common name of the client certificate it came
    with."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client_names: list[str] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        peer = request.transport.get_extra_info("peercert") or {}
        self.client_names += [value for part in peer.get("subject", ())
                              for key, value in part if key == "commonName"]
        return await super()._handle(request)


@pytest.fixture(scope="module")
def client(clients_ca: trustme.CA) -> ClientCertificate:
    return client_certificate(clients_ca)


@pytest.fixture
async def receiver(receivers_ca: trustme.CA, clients_ca: trustme.CA
                   ) -> AsyncIterator[MutualTlsReceiver]:
    async with MutualTlsReceiver(tls=mutual_tls_server(receivers_ca, clients_ca)) as started:
        yield started


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str | None, str | None]]]:
    """Every TLS context the fanout builds: (client certificate, CA bundle)."""
    built: list[tuple[str | None, str | None]] = []
    real = tls_contexts.client_context

    def counting(cert: str | None, key: str | None, ca: str | None) -> Any:
        built.append((cert, ca))
        return real(cert, key, ca)

    monkeypatch.setattr(tls_contexts, "client_context", counting)
    yield built


def with_tls(receiver: LoopbackReceiver, **tls: str | None) -> Endpoint:
    return make_endpoint(url=receiver.url()).model_copy(update={"tls": EndpointTls(**tls)})


async def deliver(endpoint: Endpoint, keyring: SecretsKeyring | None = None,
                  times: int = 1) -> list[DeliveryResult]:
    """``times`` deliveries by one fresh deliverer (its default trust: the system's CAs)."""
    deliverer = Deliverer(LOOPBACK, timeout=5.0, keyring=keyring)
    try:
        return [await deliverer.deliver(make_task(endpoint), endpoint) for _ in range(times)]
    finally:
        await deliverer.aclose()


async def test_the_receiver_gets_the_endpoint_s_client_certificate(
        receiver: MutualTlsReceiver, client: ClientCertificate, receivers_ca: trustme.CA
        ) -> None:
    endpoint = with_tls(receiver, client_cert=client.cert, client_key=client.key,
                        ca_bundle=ca_pem(receivers_ca))
    [result] = await deliver(endpoint)
    assert result.succeeded, result
    assert receiver.client_names == ["acme-webhooks"]
    assert len(receiver.requests) == 1


@pytest.mark.parametrize("who", ["no certificate", "a certificate of another CA"])
async def test_without_the_right_client_certificate_the_receiver_refuses(
        receiver: MutualTlsReceiver, receivers_ca: trustme.CA, who: str) -> None:
    stranger = client_certificate(trustme.CA(), "stranger")
    tls = {"ca_bundle": ca_pem(receivers_ca)}
    if who != "no certificate":
        tls |= {"client_cert": stranger.cert, "client_key": stranger.key}
    [result] = await deliver(with_tls(receiver, **tls))
    assert not result.succeeded and result.error in ("connect", "network"), result
    assert result.response_status is None and receiver.requests == []


async def test_a_private_ca_bundle_is_what_lets_the_receiver_s_certificate_verify(
        receivers_ca: trustme.CA) -> None:
    plain_tls = mutual_tls_server(receivers_ca, clients=None)
    async with LoopbackReceiver(tls=plain_tls) as receiver:
        [without] = await deliver(make_endpoint(url=receiver.url()))
        [with_bundle] = await deliver(with_tls(receiver, ca_bundle=ca_pem(receivers_ca)))
    assert without.error == "connect" and "CERTIFICATE_VERIFY_FAILED" in (
        without.response_body or "")
    assert with_bundle.succeeded, with_bundle
    assert len(receiver.requests) == 1


async def test_one_context_per_endpoint_and_version_of_its_material(
        receiver: MutualTlsReceiver, client: ClientCertificate, clients_ca: trustme.CA,
        receivers_ca: trustme.CA, builds: list[tuple[str | None, str | None]]) -> None:
    endpoint = with_tls(receiver, client_cert=client.cert, client_key=client.key,
                        ca_bundle=ca_pem(receivers_ca))
    # The same record, and a new version with the same material (another description).
    renamed = endpoint.model_copy(update={"description": "renamed", "tls": EndpointTls(
        **endpoint.tls.model_dump())})  # type: ignore[union-attr]
    renewed = client_certificate(clients_ca, "acme-renewed")
    changed = endpoint.model_copy(update={"tls": EndpointTls(
        client_cert=renewed.cert, client_key=renewed.key, ca_bundle=ca_pem(receivers_ca))})
    deliverer = Deliverer(LOOPBACK, timeout=5.0)
    try:
        for version in (endpoint, endpoint, renamed, renamed, changed, changed):
            result = await deliverer.deliver(make_task(version), version)
            assert result.succeeded, result
    finally:
        await deliverer.aclose()
    assert builds == [(client.cert, ca_pem(receivers_ca)), (renewed.cert, ca_pem(receivers_ca))]
    assert "acme-renewed" in receiver.client_names and len(receiver.requests) == 6


async def test_a_sealed_key_is_opened_to_build_the_context(
        receiver: MutualTlsReceiver, client: ClientCertificate, receivers_ca: trustme.CA
        ) -> None:
    sealed = with_tls(receiver, client_cert=client.cert, client_key=client.key,
                      ca_bundle=ca_pem(receivers_ca)).sealed(TEST_SECRETS_KEY)
    assert sealed.tls is not None and sealed.tls.client_key.startswith("whenc_v1.t1.")  # type: ignore[union-attr]
    [result] = await deliver(sealed, keyring=TEST_SECRETS_KEY)
    assert result.succeeded, result


async def test_a_key_this_worker_cannot_open_sends_nothing(
        receiver: MutualTlsReceiver, client: ClientCertificate, receivers_ca: trustme.CA,
        caplog: pytest.LogCaptureFixture) -> None:
    foreign = SecretsKeyring.generate("elsewhere")
    sealed = with_tls(receiver, client_cert=client.cert, client_key=client.key,
                      ca_bundle=ca_pem(receivers_ca)).sealed(foreign)
    results = await deliver(sealed, keyring=TEST_SECRETS_KEY, times=3)
    assert {(r.error, r.response_body) for r in results} == {(
        "endpoint_misconfigured",
        f"cannot use the endpoint's TLS material: client_key: the secret of "
        f"{sealed.id}/tls/key is sealed with key id 'elsewhere', which WEBHOOKS_SECRETS_KEY "
        f"does not hold (it holds t1, t0)")}
    assert receiver.requests == []
    # Tried (and logged) once for this version of the record, not once per delivery; the
    # log names the endpoint and the key id, not the material.
    [logged] = [r for r in caplog.records if r.name == tls_contexts.__name__]
    assert sealed.id in logged.getMessage() and "elsewhere" in logged.getMessage()
    assert client.key not in caplog.text and sealed.tls.client_key not in caplog.text  # type: ignore[union-attr]


async def test_a_delivery_given_up_while_the_context_builds_does_not_spoil_it(
        monkeypatch: pytest.MonkeyPatch, receivers_ca: trustme.CA) -> None:
    """A delivery that times out while waiting for its endpoint's context (cancelled)
    leaves the build to finish for the deliveries after it: built once, used by them."""
    release = threading.Event()
    built: list[str | None] = []
    real = tls_contexts.client_context

    def slow(cert: str | None, key: str | None, ca: str | None) -> Any:
        release.wait(10)
        built.append(ca)
        return real(cert, key, ca)

    monkeypatch.setattr(tls_contexts, "client_context", slow)
    contexts = tls_contexts.TlsContexts(keyring=None)
    endpoint = make_endpoint(url="https://127.0.0.1:9/hook").model_copy(
        update={"tls": EndpointTls(ca_bundle=ca_pem(receivers_ca))})
    assert endpoint.tls is not None
    first = asyncio.create_task(contexts.context(endpoint, endpoint.tls))
    second = asyncio.create_task(contexts.context(endpoint, endpoint.tls))
    await asyncio.sleep(0)  # both wait for the one build
    first.cancel()
    release.set()
    context = await second
    assert isinstance(context, ssl.SSLContext) and first.cancelled()
    assert await contexts.context(endpoint, endpoint.tls) is context
    assert built == [ca_pem(receivers_ca)]
