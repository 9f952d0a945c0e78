"""The SSRF guard at send time: what is looked up, what is cached, what aiohttp is told.

``socket.getaddrinfo`` is replaced by a table for ``*.test`` names and records every
call, so each test counts the lookups the resolver made."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from services.fanout import checked_resolver
from services.fanout.checked_resolver import CheckedResolver
from tests.support.fake_dns import FakeDNS
from webhooks.target_policy import TargetPolicy, TargetRefused

PUBLIC = TargetPolicy.create((), production=False)
V4, V6 = "93.184.215.14", "2606:4700:4700::1111"




@asynccontextmanager
async def checked(policy: TargetPolicy = PUBLIC, cache_seconds: float | None = None
                  ) -> AsyncIterator[CheckedResolver]:
    resolver = CheckedResolver(policy, cache_seconds)
    try:
        yield resolver
    finally:
        await resolver.close()


def ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(address)


@pytest.mark.parametrize(("url", "expected"), [
    (f"http://{V4}/hook", V4),
    (f"https://[{V6}]:8443/hook", V6),
    ("http://１２７.０.０.１/hook", "127.0.0.1"),  # an address once IDNA-mapped, as aiohttp does
])
async def test_an_ip_literal_is_checked_without_a_lookup(fake_dns: FakeDNS, url: str,
                                                         expected: str) -> None:
    async with checked(TargetPolicy.create(("127.0.0.1/32",), production=False)) as resolver:
        assert await resolver.check(url) == [ip(expected)]
    assert fake_dns.calls == []


@pytest.mark.parametrize("url", ["http://10.0.0.7/hook", "http://[::ffff:10.0.0.7]/",
                                 "http://１２７.０.０.１/hook", "http://169.254.169.254/"])
async def test_a_refused_ip_literal_is_refused_without_a_lookup(fake_dns: FakeDNS,
                                                                url: str) -> None:
    async with checked() as resolver:
        with pytest.raises(TargetRefused, match="is not public"):
            await resolver.check(url)
    assert fake_dns.calls == []


async def test_a_name_is_looked_up_once_per_cache_interval(fake_dns: FakeDNS) -> None:
    fake_dns.answers["hooks.test"] = [[V4], [V6]]
    async with checked(cache_seconds=0.3) as resolver:
        for path in ("/a", "/b", "/c"):
            assert await resolver.check(f"https://hooks.test{path}") == [ip(V4)]
        [answer] = await resolver.resolve("hooks.test", 443)  # aiohttp's lookup: cached
        assert answer["host"] == V4
        assert fake_dns.lookups["hooks.test"] == 1

        await asyncio.sleep(0.35)
        assert await resolver.check("https://hooks.test/a") == [ip(V6)]
        assert fake_dns.lookups["hooks.test"] == 2


async def test_the_cache_interval_defaults_to_cache_seconds(
        fake_dns: FakeDNS, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checked_resolver, "CACHE_SECONDS", 0.2)
    fake_dns.answers["hooks.test"] = [[V4]]
    async with checked() as resolver:
        await resolver.check("https://hooks.test/")
        await asyncio.sleep(0.25)
        await resolver.check("https://hooks.test/")
    assert fake_dns.lookups["hooks.test"] == 2


async def test_the_cache_is_bounded_and_evicts_the_oldest_name(
        fake_dns: FakeDNS, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checked_resolver, "CACHE_ENTRIES", 2)
    for name in ("a.test", "b.test", "c.test"):
        fake_dns.answers[name] = [[V4]]
    async with checked() as resolver:
        for name in ("a", "b", "c"):
            await resolver.check(f"https://{name}.test/")
        assert len(fake_dns.calls) == 3
        await resolver.check("https://b.test/")
        await resolver.check("https://c.test/")
        assert len(fake_dns.calls) == 3  # the two newest are cached
        await resolver.check("https://a.test/")
        assert fake_dns.calls[3:] == ["a.test"]  # the oldest was evicted; now b is the oldest
        await resolver.check("https://c.test/")
        await resolver.check("https://b.test/")
        assert fake_dns.calls[3:] == ["a.test", "b.test"]


async def test_a_refused_answer_is_not_cached(fake_dns: FakeDNS) -> None:
    fake_dns.answers["flip.test"] = [["10.0.0.7"], [V4]]
    async with checked() as resolver:
        with pytest.raises(TargetRefused, match="10.0.0.7"):
            await resolver.check("https://flip.test/")
        assert await resolver.check("https://flip.test/") == [ip(V4)]  # looked up again
    assert fake_dns.lookups["flip.test"] == 2


async def test_an_expired_allowed_answer_is_not_served_once_the_name_turns_private(
        fake_dns: FakeDNS) -> None:
    fake_dns.answers["turns.test"] = [[V4], ["10.0.0.7"]]
    async with checked(cache_seconds=0.2) as resolver:
        assert await resolver.check("https://turns.test/") == [ip(V4)]
        await asyncio.sleep(0.25)
        with pytest.raises(TargetRefused, match="10.0.0.7"):
            await resolver.check("https://turns.test/")
        with pytest.raises(OSError, match="10.0.0.7"):
            await resolver.resolve("turns.test", 443)
        with pytest.raises(TargetRefused, match="10.0.0.7"):
            await resolver.check("https://turns.test/")
    assert fake_dns.lookups["turns.test"] == 4  # every refused answer was looked up afresh


async def test_one_private_address_refuses_the_whole_answer(fake_dns: FakeDNS) -> None:
    fake_dns.answers["mixed.test"] = [[V4, "127.0.0.1"]]
    async with checked() as resolver:
        with pytest.raises(TargetRefused, match="127.0.0.1"):
            await resolver.check("https://mixed.test/")
        with pytest.raises(OSError, match="127.0.0.1"):
            await resolver.resolve("mixed.test", 443)


async def test_resolve_answers_the_checked_addresses_for_aiohttp(fake_dns: FakeDNS) -> None:
    fake_dns.answers["dual.test"] = [[V4, V6, V4], ["10.0.0.7"]]
    async with checked() as resolver:
        assert await resolver.check("https://dual.test/hook") == [ip(V4), ip(V6)]
        answers = await resolver.resolve("dual.test", 8443, family=socket.AF_UNSPEC)
    assert [(a["hostname"], a["host"], a["port"], a["family"], a["flags"]) for a in answers] == [
        ("dual.test", V4, 8443, socket.AF_INET, socket.AI_NUMERICHOST),
        ("dual.test", V6, 8443, socket.AF_INET6, socket.AI_NUMERICHOST)]
    assert fake_dns.lookups["dual.test"] == 1


async def test_resolve_checks_a_name_it_was_not_asked_to_check_before(fake_dns: FakeDNS) -> None:
    fake_dns.answers["fresh.test"] = [[V4]]
    fake_dns.answers["private.test"] = [["192.168.1.1"]]
    async with checked() as resolver:
        [answer] = await resolver.resolve("fresh.test", 80)
        assert answer["host"] == V4
        with pytest.raises(OSError, match="192.168.1.1 is not public"):
            await resolver.resolve("private.test", 80)


@pytest.mark.parametrize("url", [
    "https://nowhere.test/",
    "https://" + "a" * 64 + ".test/",  # IDNA refuses a 64-character label
    "https://a..test/",  # and an empty one
])
async def test_a_name_that_cannot_be_resolved_is_refused(fake_dns: FakeDNS, url: str) -> None:
    async with checked() as resolver:
        with pytest.raises(TargetRefused, match="cannot resolve"):
            await resolver.check(url)
        host = url.removeprefix("https://").removesuffix("/")
        with pytest.raises(OSError, match="cannot resolve"):
            await resolver.resolve(host, 443)


async def test_an_international_name_is_looked_up_as_aiohttp_spells_it(fake_dns: FakeDNS) -> None:
    # urlsplit keeps "faß", getaddrinfo would make it "fass" (IDNA 2003); aiohttp asks for
    # "xn--fa-hia" (UTS 46). The check must cache the name the connection will ask for.
    fake_dns.answers["xn--fa-hia.test"] = [[V4]]
    fake_dns.answers["fass.test"] = [["10.0.0.7"]]
    async with checked() as resolver:
        assert await resolver.check("https://faß.test/hook") == [ip(V4)]
        [answer] = await resolver.resolve("xn--fa-hia.test", 443)
        assert answer["host"] == V4
    assert fake_dns.calls == ["xn--fa-hia.test"]
