"""The three services (``ingest``, ``fanout``, ``eventlog``), the ``webhooks`` command
(:mod:`services.cli`) and the local stack (:mod:`services.localdev`).

A service imports only :mod:`webhooks` and itself; the services talk through Kafka.
"""
