"""The tenant commands talk HTTP: no module of the CLI but the operator's imports a
service (they ship to laptops that run no service)."""

from __future__ import annotations

import ast
from pathlib import Path

CLI = Path(__file__).resolve().parents[3] / "services" / "cli"
OPERATOR_MODULES = {"operator.py"}  # serve, migrate, up, …: run the services themselves


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_tenant_modules_import_only_the_cli_and_shared_contracts() -> None:
    crossing = {
        path.name: sorted(name for name in imported_modules(path)
                          if name.startswith("services") and not name.startswith("services.cli"))
        for path in CLI.glob("*.py") if path.name not in OPERATOR_MODULES}
    assert {name: found for name, found in crossing.items() if found} == {}
    assert any(name.startswith("services.eventlog")
               for name in imported_modules(CLI / "operator.py")), "the check sees imports"
