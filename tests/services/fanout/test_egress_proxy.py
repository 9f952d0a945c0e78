"""Deliveries through the egress proxy (``WEBHOOKS_DELIVERY_PROXY``): a real proxy
(proxy.py, in its own process, with Basic credentials) on a loopback address that the SSRF
policy refuses, reached by a name that only the fake DNS knows; real receivers.

What the proxy was asked to reach is read from its access log.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator

import pytest
import trustme
from standardwebhooks.webhooks import Webhook

from services.fanout.deliverer import Deliverer, DeliveryResult
from tests.services.fanout.test_deliverer import (
    LoopbackReceiver,
    closed_port,
    make_endpoint,
    make_task,
)
from tests.support.fake_dns import FakeDNS
from tests.support.http_proxy import HttpProxy
from webhooks.delivery_proxy import DeliveryProxy
from webhooks.endpoints import Endpoint
from webhooks.settings import Settings
from webhooks.target_policy import TargetPolicy

# Receivers listen on 127.0.0.1, the only address the policy allows; the proxy listens on
# 127.0.0.3, which the policy refuses as it would a private address: it is trusted anyway.
RECEIVERS_ONLY = TargetPolicy.create(("127.0.0.1/32",), production=False)
PROXY_HOST = "127.0.0.3"
PROXY_NAME = "egress-proxy.test"
CREDENTIALS = ("webhooks", "s3cret/p@ss")  # '/' and '@' must be percent-encoded in the URL


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpProxy]:
    started = HttpProxy(tmp_path_factory.mktemp("proxy"), host=PROXY_HOST,
                        credentials=CREDENTIALS).start()
    yield started
    started.stop()


@pytest.fixture
def proxy_setting(proxy: HttpProxy, fake_dns: FakeDNS) -> DeliveryProxy:
    """The proxy by name: the deliverer's own resolver must look it up, unchecked."""
    fake_dns.answers[PROXY_NAME] = [[PROXY_HOST]]
    return proxy.setting(host=PROXY_NAME)


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def https_receiver(authority: trustme.CA) -> AsyncIterator[LoopbackReceiver]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("hooks.example.test").configure_cert(context)
    async with LoopbackReceiver(tls=context) as receiver:
        yield receiver


async def deliver_through(proxy: DeliveryProxy, endpoint: Endpoint,
                          authority: trustme.CA | None = None) -> DeliveryResult:
    """One delivery by a fresh deliverer, closed after it (which closes its tunnels, so
    that the proxy logs them)."""
    client_context = ssl.create_default_context()
    if authority is not None:
        authority.configure_trust(client_context)
    deliverer = Deliverer(RECEIVERS_ONLY, timeout=5.0, ssl_context=client_context, proxy=proxy)
    try:
        return await deliverer.deliver(make_task(endpoint), endpoint)
    finally:
        await deliverer.aclose()


async def test_an_https_delivery_is_tunnelled_to_the_address_that_was_checked(
        proxy: HttpProxy, proxy_setting: DeliveryProxy, fake_dns: FakeDNS,
        https_receiver: LoopbackReceiver, authority: trustme.CA) -> None:
    fake_dns.answers["hooks.example.test"] = [["127.0.0.1"]]
    endpoint = make_endpoint(url=https_receiver.url(host="hooks.example.test"))

    result = await deliver_through(proxy_setting, endpoint, authority)

    assert result.succeeded, result
    # CONNECT names the checked address, never the name: the proxy resolves nothing.
    log = proxy.wait_for_log(f"CONNECT 127.0.0.1:{https_receiver.port} ")
    assert "hooks.example.test" not in log
    assert fake_dns.lookups == {"hooks.example.test": 1, PROXY_NAME: 1}
    # Inside the tunnel: TLS verified for the name (the certificate names only it), the
    # name in Host, a signed request.
    [request] = https_receiver.requests
    assert request.headers["host"] == f"hooks.example.test:{https_receiver.port}"
    assert "proxy-authorization" not in request.headers
    assert Webhook(endpoint.secrets[0].secret).verify(request.body, request.headers)
    recorded = dict(result.request_headers or [])
    assert recorded["Host"] == f"hooks.example.test:{https_receiver.port}"
    assert not {name.lower() for name in recorded} & {"proxy-authorization"}


async def test_an_http_delivery_is_sent_to_the_proxy_in_absolute_form(
        proxy: HttpProxy, proxy_setting: DeliveryProxy) -> None:
    async with LoopbackReceiver() as receiver:
        endpoint = make_endpoint(url=receiver.url("/plain"))
        result = await deliver_through(proxy_setting, endpoint)

        assert result.succeeded, result
        proxy.wait_for_log(f"POST 127.0.0.1:{receiver.port}/plain - 204")
        [request] = receiver.requests
        assert "proxy-authorization" not in request.headers  # the proxy's, not forwarded
        assert Webhook(endpoint.secrets[0].secret).verify(request.body, request.headers)
    # The proxy's credentials went with the request, but are not in the attempt record.
    assert result.request_headers is not None
    assert "proxy-authorization" not in {name.lower() for name, _ in result.request_headers}


async def test_a_refused_target_is_never_asked_of_the_proxy(
        proxy: HttpProxy, proxy_setting: DeliveryProxy, fake_dns: FakeDNS) -> None:
    # 127.0.0.2 stands for a private address the proxy could reach (the policy refuses
    # it); a victim listens there, on the port the webhook names.
    async with LoopbackReceiver(host="127.0.0.2") as victim:
        fake_dns.answers["internal.test"] = [["127.0.0.2"]]
        refused = []
        for url in (victim.url(host="internal.test"), victim.url(),
                    victim.url(host="internal.test").replace("http:", "https:")):
            result = await deliver_through(proxy_setting, make_endpoint(url=url))
            refused.append((result.error, "127.0.0.2" in (result.response_body or "")))
        assert refused == [("refused_target", True)] * 3

        # A delivery that is allowed, then: once the proxy logged it, it had logged any
        # earlier request too.
        async with LoopbackReceiver() as allowed:
            marker = make_endpoint(url=allowed.url("/marker"))
            assert (await deliver_through(proxy_setting, marker)).succeeded
            log = proxy.wait_for_log(f"127.0.0.1:{allowed.port}/marker")
        assert victim.requests == []
    assert "127.0.0.2" not in log and "internal.test" not in log


async def test_a_dead_proxy_is_a_connect_error(fake_dns: FakeDNS) -> None:
    fake_dns.answers[PROXY_NAME] = [[PROXY_HOST]]
    dead = DeliveryProxy.parse(f"http://webhooks:pw-never-shown@{PROXY_NAME}:{closed_port()}")
    for url in ("http://127.0.0.1:9/hook", "https://127.0.0.1:9/hook"):
        result = await deliver_through(dead, make_endpoint(url=url))
        assert (result.succeeded, result.error) == (False, "connect"), result
        body = result.response_body or ""
        assert body == "cannot reach the egress proxy (Connection refused)"
        # The proxy is the operator's: attempt records (the tenant's) do not name it.
        assert PROXY_NAME not in body and PROXY_HOST not in body and "pw-never" not in body


async def test_a_proxy_whose_name_does_not_resolve_is_a_connect_error() -> None:
    lost = DeliveryProxy.parse("http://webhooks:pw-never-shown@nowhere.test:3128")
    result = await deliver_through(lost, make_endpoint(url="https://127.0.0.1:9/hook"))
    assert (result.error, result.response_body) == (
        "connect", "cannot reach the egress proxy (its name does not resolve)")


async def test_credentials_the_proxy_refuses_fail_the_connect(
        proxy: HttpProxy, fake_dns: FakeDNS) -> None:
    fake_dns.answers[PROXY_NAME] = [[PROXY_HOST]]
    wrong = DeliveryProxy.parse(f"http://webhooks:wrong@{PROXY_NAME}:{proxy.port}")
    result = await deliver_through(wrong, make_endpoint(url="https://127.0.0.1:9/hook"))
    assert (result.error, result.response_body) == (
        "connect", "the egress proxy answered 407 Proxy Authentication Required to CONNECT")


def test_the_setting_is_parsed_once_and_never_shows_the_password() -> None:
    settings = Settings(delivery_proxy="http://web%40hooks:s3cret%2Fp%40ss@Proxy.Internal:3128/")
    proxy = settings.delivery_proxy
    assert proxy == DeliveryProxy(host="proxy.internal", port=3128, username="web@hooks",
                                  password="s3cret/p@ss")
    assert proxy.url == "http://proxy.internal:3128"
    assert proxy.authorization == "Basic d2ViQGhvb2tzOnMzY3JldC9wQHNz"  # web@hooks:s3cret/p@ss
    assert "s3cret" not in repr(settings) and "s3cret" not in str(proxy)
    # Handed to a child process as it was given (percent-encoded).
    assert DeliveryProxy.parse(settings.model_dump()["delivery_proxy"]) == proxy
    assert Settings(delivery_proxy="").delivery_proxy is None
    assert Settings(delivery_proxy="http://[::1]:8080").delivery_proxy.url == "http://[::1]:8080"


@pytest.mark.parametrize("value", [
    "https://proxy.internal:3128", "socks5://proxy.internal:1080", "proxy.internal:3128",
    "http://proxy.internal:3128/path", "http://:3128", "http://user:pw/secret@proxy:3128",
    "http://proxy.internal:99999"])
def test_a_malformed_proxy_is_refused_without_quoting_it(value: str) -> None:
    with pytest.raises(ValueError, match="WEBHOOKS_DELIVERY_PROXY") as refused:
        Settings(delivery_proxy=value)
    assert "secret" not in str(refused.value)

