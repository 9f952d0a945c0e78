"""The package boundary: the folder tree shows the data flow.

- ``webhooks/`` is shared: it never imports a service;
- no service imports another (each imports only ``webhooks/`` and itself);
- every module of ``webhooks/`` serves at least two services (or the producer SDK);
  code only one service uses lives in that service.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERVICES = ("ingest", "fanout", "eventlog")
SDK = "webhooks.publisher"  # the producer SDK: public, used by producers, not by a service


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports (``from a.b import c`` counts ``a.b`` and ``a.b.c``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in ("webhooks", "services")}


MODULES = {module_name(path): imports_of(path)
           for folder in ("webhooks", "services") for path in (REPO / folder).rglob("*.py")}


def test_the_shared_package_never_imports_a_service() -> None:
    upward = {name: sorted(i for i in imported if i.startswith("services"))
              for name, imported in MODULES.items() if name.startswith("webhooks")}
    assert {name: found for name, found in upward.items() if found} == {}


def test_no_service_imports_another() -> None:
    crossing = {}
    for name, imported in MODULES.items():
        parts = name.split(".")
        if parts[0] != "services" or len(parts) < 2 or parts[1] not in (*SERVICES, "localdev"):
            continue
        others = sorted(i for i in imported if i.startswith("services.")
                        and i.split(".")[1] != parts[1])
        if others:
            crossing[name] = others
    assert crossing == {}


def test_every_shared_module_serves_two_services_or_the_sdk() -> None:
    def reached_from(prefix: str) -> set[str]:
        """Every webhooks module that modules under ``prefix`` import, directly or not."""
        todo = [name for name in MODULES if name.startswith(prefix)]
        seen: set[str] = set()
        while todo:
            for imported in MODULES.get(todo.pop(), ()):
                if imported in MODULES and imported not in seen:
                    seen.add(imported)
                    todo.append(imported)
        return {name for name in seen if name.startswith("webhooks")}

    users = {service: reached_from(f"services.{service}") for service in SERVICES}
    users["sdk"] = reached_from(SDK)
    lonely = sorted(name for name in MODULES if name.startswith("webhooks.")
                    and name != SDK and sum(name in reached for reached in users.values()) < 2)
    assert lonely == []
