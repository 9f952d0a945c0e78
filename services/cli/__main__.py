"""``python -m services.cli …``: the ``webhooks`` command (how tests start services)."""

from services.cli import main

main(prog_name="webhooks")
