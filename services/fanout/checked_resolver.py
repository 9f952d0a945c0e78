"""The SSRF guard at send time: target addresses resolved, checked, cached briefly.

Every delivery's target is checked before its request (:meth:`CheckedResolver.check`),
and the HTTP client connects only to addresses that passed the check: the deliverer's
connection pool connects to the addresses :meth:`CheckedResolver.check` returns, and
aiohttp's own DNS lookups (the egress proxy's path) go through
:meth:`CheckedResolver.resolve`, which answers from the same checked answers. A name
that answers a public address to the check and a private one a moment later (DNS
rebinding) therefore cannot steer the connection; the request keeps the original
``Host`` header and TLS server name, because the URL is unchanged.

Answers are cached for :data:`CACHE_SECONDS` (at most :data:`CACHE_ENTRIES` names), so a
busy endpoint costs one lookup per interval instead of one per delivery; a DNS change
is seen within that interval. IP-literal targets are checked inline without a lookup.
Lookups run in the resolver's own small thread pool, so a resolver that hangs cannot
starve the default executor the rest of the worker uses.

Trusted hosts (the egress proxy of ``WEBHOOKS_DELIVERY_PROXY``, operator configuration)
are resolved without the policy, since a proxy usually sits on a private address: only
:meth:`CheckedResolver.resolve` (the client's own lookups) answers them so, from a cache
of their own. :meth:`CheckedResolver.check` applies the policy to every webhook target,
a target naming the proxy's host included.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from webhooks.target_policy import IPAddress, TargetPolicy, TargetRefused

CACHE_SECONDS = 10.0
CACHE_ENTRIES = 10_000
RESOLVER_THREADS = 8


class CheckedResolver(AbstractResolver):
    """Resolves and checks webhook hosts against a :class:`TargetPolicy`."""

    def __init__(self, policy: TargetPolicy, cache_seconds: float | None = None,
                 trusted_hosts: frozenset[str] = frozenset()) -> None:
        """``trusted_hosts`` are looked up without the policy when the client connects to
        them: the egress proxy (webhook targets are checked by :meth:`check` regardless)."""
        self._policy = policy
        self._trusted = trusted_hosts
        self._trusted_answers: dict[str, tuple[float, list[IPAddress]]] = {}
        self._cache_seconds = CACHE_SECONDS if cache_seconds is None else cache_seconds
        self._answers: OrderedDict[str, tuple[float, list[IPAddress]]] = OrderedDict()
        # What check() derives from a URL alone (the policy is fixed): its host, and the
        # checked address of an IP literal; refused URLs are not kept.
        self._targets: OrderedDict[str, tuple[str, IPAddress | None]] = OrderedDict()
        self._lookups = ThreadPoolExecutor(RESOLVER_THREADS, thread_name_prefix="resolve")

    async def check(self, url: str) -> list[IPAddress]:
        """The checked addresses of ``url``'s host; raises :class:`TargetRefused`."""
        target = self._targets.get(url)
        if target is None:
            target = self._check_url(url)
            self._targets[url] = target
            while len(self._targets) > CACHE_ENTRIES:
                self._targets.popitem(last=False)
        host, literal = target
        if literal is not None:
            return [literal]
        return await self._checked_answer(host)

    def _check_url(self, url: str) -> tuple[str, IPAddress | None]:
        """The URL's host, and its address if it is an IP literal (checked)."""
        self._policy.check_url(url)  # shape, scheme, credentials, literal address
        # The host as aiohttp will see it (IDNA per UTS 46, where urlsplit keeps Unicode
        # and getaddrinfo would apply IDNA 2003): the check looks up, caches and literal-
        # checks the very name whose addresses the connection asks resolve() for.
        try:
            host = URL(url).raw_host
        except ValueError as exc:
            raise TargetRefused(f"url is malformed: {exc}") from exc
        if not host:
            raise TargetRefused("url has no host")
        literal = _as_address(host)
        if literal is not None:
            self._policy.check_address(literal)
        return host, literal

    async def _checked_answer(self, host: str) -> list[IPAddress]:
        cached = self._answers.get(host)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        loop = asyncio.get_running_loop()
        addresses = await loop.run_in_executor(self._lookups, self._lookup_and_check, host)
        self._answers[host] = (time.monotonic() + self._cache_seconds, addresses)
        self._answers.move_to_end(host)
        while len(self._answers) > CACHE_ENTRIES:
            self._answers.popitem(last=False)
        return addresses

    def _lookup_and_check(self, host: str) -> list[IPAddress]:
        addresses = _lookup(host)
        for address in addresses:
            self._policy.check_address(address)
        return addresses

    # -- aiohttp's resolver interface: the client connects only to checked addresses ----

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        try:
            if host in self._trusted:
                addresses = await self._trusted_answer(host)
            else:
                addresses = await self._checked_answer(host)
        except TargetRefused as exc:
            raise OSError(str(exc)) from exc
        return [ResolveResult(hostname=host, host=str(address), port=port,
                              family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                              proto=0, flags=socket.AI_NUMERICHOST)
                for address in addresses]

    async def _trusted_answer(self, host: str) -> list[IPAddress]:
        """The addresses of a trusted host, unchecked, cached like checked answers."""
        cached = self._trusted_answers.get(host)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        loop = asyncio.get_running_loop()
        addresses = await loop.run_in_executor(self._lookups, _lookup, host)
        self._trusted_answers[host] = (time.monotonic() + self._cache_seconds, addresses)
        return addresses

    async def close(self) -> None:
        """Abandon lookups still hanging in the pool."""
        self._lookups.shutdown(wait=False, cancel_futures=True)


def _lookup(host: str) -> list[IPAddress]:
    """The host's addresses, in the system resolver's order without repeats."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:  # UnicodeError: a label IDNA refuses
        reason = getattr(exc, "strerror", None) or exc
        raise TargetRefused(f"cannot resolve {host}: {reason}") from exc
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


def _as_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
