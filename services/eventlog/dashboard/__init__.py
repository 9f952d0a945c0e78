"""The tenant dashboard at ``/dashboard``: server-rendered pages over the eventlog's stores.

Importing :mod:`pages` and :mod:`actions` registers their routes on :data:`dashboard_router`.
"""

from services.eventlog.dashboard import actions, pages  # noqa: F401 (registers the routes)
from services.eventlog.dashboard.router import dashboard_router

__all__ = ["dashboard_router"]
