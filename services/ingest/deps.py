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


async def get_runtime(request: Request) -> IngestRuntime:
    """The settings, metrics and pipeline of the replica serving ``request``."""
    runtime: IngestRuntime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[IngestRuntime, Depends(get_runtime)]


async def authenticate_counted(request: Request, runtime: RuntimeDep) -> Principal:
    """The caller, by the app's API keys; 401 (counted as a rejection) without a valid one."""
    try:
        return await authenticate(request)
    except Problem:
        runtime.metrics.rejected.labels("http", "unauthorized").inc()
        raise


PrincipalDep = Annotated[Principal, Depends(authenticate_counted)]
