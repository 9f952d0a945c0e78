"""What an attempt record keeps of the headers of one HTTP exchange.

Request headers are kept as sent, the ``webhook-signature`` included (an HMAC of this
request, useless for signing another), except the values of the endpoint's custom
headers marked secret, which become ``[masked]``. Response headers are kept up to
:data:`MAX_RESPONSE_HEADERS` bytes, counted as they came on the wire (``name: value``
and CRLF): the header that crosses the limit is cut there, later ones are left out, and
the record says so. Both are lists of (name, value) pairs in the order sent, built once
per attempt without copying more than the pairs themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from webhooks.delivery import HeaderPairs
from webhooks.endpoints import MASKED, Endpoint

MAX_RESPONSE_HEADERS = 4096
NO_MASK: frozenset[str] = frozenset()


def secret_header_names(endpoint: Endpoint) -> frozenset[str]:
    """The lower-case names of the endpoint's custom headers whose values are secret."""
    if not endpoint.headers:
        return NO_MASK
    return frozenset(h.name.lower() for h in endpoint.headers if h.secret)


def request_headers(headers: Iterable[tuple[str, str]], mask: frozenset[str] = NO_MASK
                    ) -> HeaderPairs:
    """``headers`` as pairs, the value of every name in ``mask`` (lower-case) masked."""
    if not mask:
        return list(headers)
    return [(name, MASKED if name.lower() in mask else value) for name, value in headers]


def without_proxy_authorization(headers: HeaderPairs) -> HeaderPairs:
    """``headers`` without ``Proxy-Authorization``: the egress proxy's credentials, sent
    to the proxy with an http target's request, are the operator's and the proxy drops
    them before the receiver."""
    return [(name, value) for name, value in headers if name.lower() != "proxy-authorization"]


def response_headers(raw: Sequence[tuple[bytes, bytes]],
                     limit: int = MAX_RESPONSE_HEADERS) -> tuple[HeaderPairs, bool]:
    """The first ``limit`` bytes of raw response headers as text pairs, and whether any
    were cut. Names are tokens (Latin-1 is exact); values are decoded as UTF-8, an
    undecodable byte (or one cut in half) becoming U+FFFD."""
    if sum(len(name) + len(value) + 4 for name, value in raw) <= limit:
        return [(name.decode("latin-1"), value.decode("utf-8", "replace"))
                for name, value in raw], False
    kept: HeaderPairs = []
    room = limit
    for name, value in raw:
        size = len(name) + len(value) + 4
        if size > room:
            if room > len(name) + 4:
                kept.append((name.decode("latin-1"),
                             value[:room - len(name) - 4].decode("utf-8", "replace")))
            break
        kept.append((name.decode("latin-1"), value.decode("utf-8", "replace")))
        room -= size
    return kept, True
