"""Finding the Go-built tools the deploy checks run: helm and promtool.

``make helm`` and ``make promtool`` build each from its Go module into ``.cache/bin/``
(``make test`` does both first). A tool found neither there nor on PATH skips its checks
with a message where Go is absent, and fails where Go could have built it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def go_tool(name: str, repo_root: Path, checks: str) -> str:
    """Path of ``name``: ``.cache/bin/<name>`` under ``repo_root``, else on PATH; else skip
    (no Go) or fail (Go present, so ``make <name>`` would build it)."""
    cached = repo_root / ".cache" / "bin" / name
    if cached.is_file():
        return str(cached)
    on_path = shutil.which(name)
    if on_path:
        return on_path
    if shutil.which("go") is None:
        pytest.skip(f"{name} not found (.cache/bin/{name} or PATH) and Go is absent to build "
                    f"it: {checks} skipped; install Go and run `make {name}`")
    pytest.fail(f"{name} not found at .cache/bin/{name}: run `make {name}` "
                "(make test does it first)")
