"""A small synchronous HTTP client of the ingest and eventlog APIs, for the CLI.

Every error answer (``application/problem+json``) becomes an :class:`ApiError`, which
click prints as one line (``Error: 404 Not Found: no endpoint ep_…``) and exits with 1;
an unreachable service is one too, naming the URL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import click
import httpx

from services.cli.config import ApiSettings, resolve

Service = Literal["ingest", "eventlog"]
USER_AGENT = "webhooks-cli/0.1"
PAGE_SIZE = 1000  # items per request of a paged listing (the APIs' largest limit)


class ApiError(click.ClickException):
    """An API answered with an error, or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @classmethod
    def of(cls, response: httpx.Response) -> ApiError:
        """A one-line message from a problem document (or whatever the body is)."""
        try:
            problem = response.json()
        except ValueError:
            problem = None
        if isinstance(problem, dict) and ("detail" in problem or "title" in problem):
            title = problem.get("title") or response.reason_phrase
            detail = problem.get("detail") or ""
            errors = problem.get("errors") or []
            if errors and isinstance(errors, list) and isinstance(errors[0], dict):
                first = errors[0]
                where = ".".join(str(part) for part in first.get("loc", []))
                detail = f"{detail} ({where}: {first.get('msg', '')})" if where else detail
        else:
            title, detail = response.reason_phrase, response.text.strip()[:200]
        message = f"{response.status_code} {title}" + (f": {detail}" if detail else "")
        return cls(" ".join(message.split()), status=response.status_code)


class ApiClient:
    """Both APIs with one key; ``tenant`` is sent as ``?tenant=`` (admin keys)."""

    def __init__(self, settings: ApiSettings, timeout: float = 30.0) -> None:
        self.settings = settings
        headers = {"Authorization": f"Bearer {settings.api_key}", "User-Agent": USER_AGENT}
        self._clients = {
            "ingest": httpx.Client(base_url=settings.ingest_url, headers=headers,
                                   timeout=timeout),
            "eventlog": httpx.Client(base_url=settings.eventlog_url, headers=headers,
                                     timeout=timeout),
        }

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    def _params(self, params: dict[str, Any] | None, service: Service = "eventlog"
                ) -> dict[str, Any]:
        merged = {k: v for k, v in (params or {}).items() if v is not None}
        if self.settings.tenant and service == "eventlog":
            merged["tenant"] = self.settings.tenant  # ingest takes it in the event body
        return merged

    def request(self, method: str, path: str, *, service: Service = "eventlog",
                params: dict[str, Any] | None = None, json: Any = None,
                headers: dict[str, str] | None = None, timeout: float | None = None) -> Any:
        """The decoded JSON answer (None for 204); :class:`ApiError` for any error.
        ``timeout`` (seconds) replaces the client's for a request known to be long."""
        client = self._clients[service]
        try:
            response = client.request(method, path, params=self._params(params, service),
                                      json=json,
                                      headers=headers,
                                      timeout=timeout or httpx.USE_CLIENT_DEFAULT)
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach {service} at {client.base_url}: {exc}") from exc
        if response.is_error:
            raise ApiError.of(response)
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=json, **kwargs)

    @contextmanager
    def open_stream(self, path: str, params: dict[str, Any],
                    last_event_id: str | None) -> Iterator[httpx.Response]:
        """An open streaming response of the eventlog (no read timeout: heartbeats come
        every few seconds, and a dead connection shows as a transport error)."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        client = self._clients["eventlog"]
        timeout = httpx.Timeout(10.0, read=60.0)
        with client.stream("GET", path, params=self._params(params), headers=headers,
                           timeout=timeout) as response:
            if response.is_error:
                response.read()
                raise ApiError.of(response)
            yield response

    def paginate(self, path: str, params: dict[str, Any], limit: int | None
                 ) -> Iterator[dict[str, Any]]:
        """Items of a cursor-paged listing, page after page, up to ``limit`` (None: all).
        A page without ``has_more`` (``/v1/tenants``) has more while it has a
        ``next_cursor``."""
        page_size = min(limit, PAGE_SIZE) if limit else PAGE_SIZE
        query = {**params, "limit": page_size}
        served = 0
        while True:
            page = self.get(path, **query)
            for item in page["data"]:
                if limit is not None and served >= limit:
                    return
                served += 1
                yield item
            more = page.get("has_more", page.get("next_cursor") is not None)
            if not more or (limit is not None and served >= limit):
                return
            # The cursor carries the listing's filters: it continues alone.
            query = {"cursor": page["next_cursor"], "limit": page_size}


class CliSession:
    """What the root command gathered (flags, environment, ``--config``); builds the
    API client on first use, so commands that need no API never read the config."""

    def __init__(self, flags: dict[str, str | None], config_path: Path | None) -> None:
        self.flags = flags
        self.config_path = config_path
        self._client: ApiClient | None = None

    def api(self) -> ApiClient:
        if self._client is None:
            self._client = ApiClient(resolve(self.flags, self.config_path))
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


pass_session = click.make_pass_decorator(CliSession)
