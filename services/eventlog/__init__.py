"""eventlog: the ClickHouse event log and the tenant-facing API.

Reads ``<prefix>.events``, ``<prefix>.attempts`` and ``<prefix>.endpoints`` into
ClickHouse (the sink); writes ``<prefix>.endpoints`` (the endpoints API) and
``<prefix>.deliveries`` (redeliver, recover, test).
"""
