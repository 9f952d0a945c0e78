"""SSRF guard: which webhook URLs may be called. Shared by the API (at write time)
and the deliverer (at send time, after DNS resolution, so rebinding cannot slip by)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud metadata services that are not covered by the link-local check.
_METADATA = {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}


class TargetRefused(ValueError):
    """The URL is malformed or points somewhere webhooks must not go."""


@dataclass(frozen=True)
class TargetPolicy:
    """What a webhook target may be."""

    allowed_networks: tuple[IPNetwork, ...] = ()
    require_https: bool = False

    @classmethod
    def create(cls, allow_private: Iterable[str], production: bool) -> TargetPolicy:
        networks = tuple(ipaddress.ip_network(n, strict=False) for n in allow_private)
        return cls(allowed_networks=networks, require_https=production)

    def check_url(self, url: str) -> str:
        """Validate the URL's shape (not its address); return the host name."""
        if len(url) > 2048:
            raise TargetRefused("url is longer than 2048 characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise TargetRefused(f"url is malformed: {exc}") from exc
        if parts.scheme not in ("http", "https"):
            raise TargetRefused("url scheme must be http or https")
        if self.require_https and parts.scheme != "https":
            raise TargetRefused("url must use https in production")
        if parts.username or parts.password:
            raise TargetRefused("url must not contain credentials")
        if not parts.hostname:
            raise TargetRefused("url has no host")
        if port == 0:
            raise TargetRefused("url port must be 1-65535")
        literal = _as_address(parts.hostname)
        if literal is not None:
            self.check_address(literal)
        return parts.hostname

    def check_address(self, address: IPAddress) -> None:
        """Refuse loopback, private, link-local, multicast and metadata addresses."""
        if any(address in network for network in self.allowed_networks):
            return
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if (
            address in _METADATA
            or address.is_loopback
            or address.is_private
            or address.is_link_local
            or address.is_multicast
            or address.is_reserved
            or address.is_unspecified
            or not address.is_global
        ):
            raise TargetRefused(f"target address {address} is not public")

    def resolve(self, url: str) -> list[IPAddress]:
        """Check the URL, resolve its host and check every address it resolves to."""
        host = self.check_url(url)
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise TargetRefused(f"cannot resolve {host}: {exc.strerror}") from exc
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        for address in addresses:
            self.check_address(address)
        return addresses


def _as_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
