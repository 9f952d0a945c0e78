"""fanout: events matched to endpoints and delivered as signed POSTs.

Reads ``<prefix>.events``, ``<prefix>.endpoints`` (all of it, into the endpoint view),
``<prefix>.deliveries`` and ``<prefix>.retry.<tier>``; writes
``<prefix>.retry.<tier>``, ``<prefix>.dlq``, ``<prefix>.attempts``, and on disabling an
endpoint ``<prefix>.endpoints`` and an ``endpoint.disabled`` event to ``<prefix>.events``.
"""
