"""Dependencies of the ingest routes, as ``Annotated`` aliases.

Each reads the state of the app serving the request (``app.state``, set by
``create_app``), so replicas built with different settings can run side by side.
Every one is ``async`` on purpose: none does I/O, and a sync dependency would cost a
thread-pool hop per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.ingest.runtime import IngestRuntime
from webhooks.auth import Principal, authenticate
from webhooks.problems import Problem
from webhooks.registry import PUBLISH


async def get_runtime(request: Request) -> IngestRuntime:
    """The settings, metrics and pipeline of the replica serving ``request``."""
    runtime: IngestRuntime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[IngestRuntime, Depends(get_runtime)]


async def authenticate_publisher(request: Request, runtime: RuntimeDep) -> Principal:
    """The caller, by the app's API keys, holding the ``publish`` scope; 401 without a
    valid key, 403 without the scope (both counted as rejections)."""
    try:
        principal = await authenticate(request)
    except Problem:
        runtime.metrics.rejected.labels("http", "unauthorized").inc()
        raise
    if not principal.allows(PUBLISH):
        runtime.metrics.rejected.labels("http", "missing_scope").inc()
        principal.require(PUBLISH)
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate_publisher)]
