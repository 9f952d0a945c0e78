"""Running the real ``promtool`` (Prometheus's rule checker and rule unit-test runner).

promtool is the binary ``make promtool`` builds from its Go module into
``.cache/bin/promtool`` (or one on PATH). Without it and without Go its checks are skipped
with a message; with Go present a missing promtool is a failure, because ``make test``
builds it first.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.deploy.go_tools import go_tool

REPO_ROOT = Path(__file__).resolve().parents[2]


def promtool_binary() -> str:
    """Path of promtool, or skip (no Go) / fail (Go present: `make promtool` builds it)."""
    return go_tool("promtool", REPO_ROOT, "promtool checks of the rules and board")


def run_promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run promtool with ``args``; the caller checks the return code and output."""
    return subprocess.run([promtool_binary(), *map(str, args)], capture_output=True,
                          text=True, timeout=120)
