"""The tenant dashboard at ``/dashboard``: server-rendered pages over the eventlog's stores.

Importing :mod:`pages`, :mod:`actions`, :mod:`endpoint_forms` and :mod:`links` registers
their routes on :data:`dashboard_router`; ``endpoint_forms`` before ``pages``, whose
``/endpoints/{endpoint_id}`` would otherwise take ``/endpoints/new``.
"""

from services.eventlog.dashboard import (  # noqa: F401 (registers the routes, in this order)
    actions,
    endpoint_forms,
    links,
    pages,
)
from services.eventlog.dashboard.router import dashboard_router

__all__ = ["dashboard_router"]
