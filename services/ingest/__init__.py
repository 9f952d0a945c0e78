"""ingest: producers' events in, envelopes out.

Reads ``<prefix>.ingest`` (the Kafka intake) and ``<prefix>.idempotency`` (the ledger of
accepted ids); writes ``<prefix>.events``, ``<prefix>.ingest.rejected`` and
``<prefix>.idempotency``. HTTP: ``POST /v1/events``, ``POST /v1/events/batch``.
"""
