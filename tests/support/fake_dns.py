"""A fake resolver for ``*.test`` names: ``socket.getaddrinfo`` answers from a table.

The fanout's checked resolver calls ``socket.getaddrinfo`` in its thread pool, so
patching it shows which names were looked up, how often, and lets a name answer
differently on each lookup (DNS rebinding, a moved endpoint).
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest


@dataclass
class FakeDNS:
    """``answers[name]`` is one list of addresses per lookup, the last one repeating."""

    answers: dict[str, list[list[str]]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    """Every name ``getaddrinfo`` was asked for, in order (``*.test`` or not)."""
    lookups: Counter[str] = field(default_factory=Counter)
    """Lookups of ``*.test`` names, per name."""


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDNS]:
    """Patches ``socket.getaddrinfo`` for ``*.test`` names; other names resolve for real."""
    fake = FakeDNS()
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else host
        fake.calls.append(name)
        if isinstance(name, str):
            name.encode("idna")  # as the real one does: UnicodeError for a label IDNA refuses
        if not (isinstance(name, str) and name.endswith(".test")):
            return real_getaddrinfo(host, port, *args, **kwargs)
        fake.lookups[name] += 1
        if name not in fake.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answers = fake.answers[name]
        answer = answers[min(fake.lookups[name], len(answers)) - 1]
        return [(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM,
                 socket.IPPROTO_TCP, "", (address, int(port or 0))) for address in answer]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield fake
