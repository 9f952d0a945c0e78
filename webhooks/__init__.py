"""What the services share: the records and topics they exchange, settings, signing,
matching, the retry schedule, the SSRF policy, API problems and auth, Kafka helpers,
and the producer SDK (:mod:`webhooks.publisher`). Never imports a service."""
