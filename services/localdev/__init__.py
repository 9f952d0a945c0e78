"""Local-dev tooling behind ``make up`` and the tests: a real single-node Kafka broker
and the services as background processes. Not used by the services themselves."""
