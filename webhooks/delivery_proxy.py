"""``WEBHOOKS_DELIVERY_PROXY``: the HTTP proxy every delivery goes through, parsed once.

``http://[user:password@]host:port``: a plain-HTTP forward proxy (Squid, tinyproxy, …)
that sends the webhooks from the company's fixed egress addresses. Credentials, if any,
are percent-decoded here and leave only as a ``Proxy-Authorization`` header; the value's
``repr`` and ``str`` mask the password, so settings can be logged. How the fanout uses it,
and how the SSRF policy still applies to the webhook's target, is in
:mod:`services.fanout.deliverer`.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

from webhooks.text_setting import TextSetting


@dataclass(frozen=True, slots=True)
class DeliveryProxy(TextSetting):
    """A forward proxy: where it listens and the credentials it wants (if any)."""

    host: str
    """A name or an IP address (IPv6 without brackets)."""
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, text: str) -> DeliveryProxy:
        """``http://[user:password@]host[:port][/]`` (port 80 by default); raises
        ValueError with a message that never quotes the credentials."""
        try:
            parts = urlsplit(text.strip())
            port = parts.port
        except ValueError:
            # Not quoted: urlsplit's message can hold a piece of the URL ("Port could not
            # be cast to integer value as '<password>'" for a '/' inside the password).
            raise ValueError("WEBHOOKS_DELIVERY_PROXY is not a valid URL (a port that is not "
                             "a number from 1 to 65535? characters of the password to "
                             "percent-encode?)") from None
        if parts.scheme != "http":
            raise ValueError("WEBHOOKS_DELIVERY_PROXY must be http://host:port (the proxy is "
                             "spoken to in plain HTTP; https targets are tunnelled with "
                             "CONNECT and stay encrypted end to end)")
        if not parts.hostname:
            raise ValueError("WEBHOOKS_DELIVERY_PROXY has no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("WEBHOOKS_DELIVERY_PROXY must be http://host:port, without a "
                             "path, query or fragment")
        username = unquote(parts.username) if parts.username is not None else None
        password = unquote(parts.password) if parts.password is not None else None
        if username is not None and ":" in username:
            raise ValueError("WEBHOOKS_DELIVERY_PROXY: the user name may not contain ':'")
        return cls(host=parts.hostname, port=port or 80, username=username, password=password)

    @property
    def url(self) -> str:
        """The proxy's URL without credentials (what the HTTP client is given)."""
        return f"http://{_host_in_url(self.host)}:{self.port}"

    @property
    def authorization(self) -> str | None:
        """The ``Proxy-Authorization`` value (Basic, UTF-8), or None without credentials."""
        if self.username is None:
            return None
        pair = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")

    def to_setting(self) -> str:
        """The ``WEBHOOKS_DELIVERY_PROXY`` value this was read from (credentials included!)."""
        if self.username is None:
            return self.url
        credentials = quote(self.username, safe="")
        if self.password is not None:
            credentials += ":" + quote(self.password, safe="")
        return f"http://{credentials}@{_host_in_url(self.host)}:{self.port}"

    def __str__(self) -> str:
        """The URL with the password masked: safe to log."""
        if self.username is None:
            return self.url
        return f"http://{quote(self.username, safe='')}:***@{_host_in_url(self.host)}:{self.port}"


def _host_in_url(host: str) -> str:
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host

