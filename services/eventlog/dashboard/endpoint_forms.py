"""Creating, changing and deleting an endpoint: each form (GET) and its post (POST).

A post goes through the same route function as ``/v1/endpoints`` (``create_endpoint``,
``update_endpoint``, ``delete_endpoint``), and the form's fields are read into the API's
own request models (``EndpointCreate``, ``EndpointUpdate``), so the dashboard validates
a field exactly as the API does and the target URL meets the same policy. Invalid input
renders the form again, as typed, with the problem (422) and changes nothing.

Custom headers are rows of name, value and a *secret* box (the stored ones, then a few
empty rows); the payload filter is JSON in a text area. A secret header's value is never
put in the page: its row comes with an empty value, and a post that leaves a secret row's
value empty keeps the value stored for that row's header, read from the stored endpoint
(the API's PATCH replaces every header, so the form sends it again). Unticking *secret*
without typing a value gives an empty value, never the stored secret in the clear.

A new endpoint's signing secret is shown once, on the page answering the post (never in
a URL; pages are ``no-store``). Deleting asks first, on a page of its own, so that it
needs no script. The forms, like their posts, need the ``manage`` scope.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from fastapi.responses import Response
from pydantic import ValidationError

from services.eventlog.dashboard.router import (
    ChangeDep,
    ContextDep,
    FormDep,
    ManageSessionDep,
    dashboard_router,
    failure_page,
    redirect,
    render,
)
from services.eventlog.dashboard.session import Session
from services.eventlog.endpoints_api import create_endpoint, delete_endpoint, update_endpoint
from services.eventlog.models import EndpointCreate, EndpointUpdate
from webhooks.endpoints import MAX_CUSTOM_HEADERS, Endpoint
from webhooks.problems import Problem

LABELS = {"url": "URL", "events": "Event types", "description": "Description",
          "rate_limit": "Rate limit", "headers": "Custom headers", "filter": "Payload filter",
          "ordered": "Ordered delivery"}
TEXT_FIELDS = ("url", "events", "description", "rate_limit", "filter")
EMPTY_HEADER_ROWS = 3  # blank rows offered below the stored headers
_SEPARATORS = re.compile(r"[\s,]+")


class FormMistake(ValueError):
    """Input the form cannot even turn into a request (the message names the field)."""


@dataclass(frozen=True)
class HeaderRow:
    """One custom-header row of the form. ``stored``: for a row showing a stored secret
    header, its name (its value is never shown; left empty, the stored one is kept)."""

    name: str = ""
    value: str = ""
    secret: bool = False
    stored: str = ""


@dataclass(frozen=True)
class EndpointForm:
    """The form's fields as text, as typed (to fill the form again) or as stored."""

    url: str = ""
    events: str = ""
    description: str = ""
    rate_limit: str = ""
    filter: str = ""
    headers: tuple[HeaderRow, ...] = ()
    ordered: bool = False
    verify: bool = False  # a new endpoint's only

    @classmethod
    def posted(cls, form: dict[str, list[str]]) -> EndpointForm:
        def text(name: str) -> str:
            return (form.get(name) or [""])[0].strip()

        rows = tuple(HeaderRow(name=text(f"header_name_{i}"), value=text(f"header_value_{i}"),
                               secret=bool(text(f"header_secret_{i}")),
                               stored=text(f"header_stored_{i}"))
                     for i in range(MAX_CUSTOM_HEADERS))
        return cls(**{name: text(name) for name in TEXT_FIELDS},
                   headers=tuple(r for r in rows if r.name or r.value),
                   ordered=bool(text("ordered")), verify=bool(text("verify")))

    @classmethod
    def of(cls, endpoint: Endpoint) -> EndpointForm:
        return cls(url=endpoint.url, events=", ".join(endpoint.events),
                   description=endpoint.description,
                   rate_limit="" if endpoint.rate_limit is None else str(endpoint.rate_limit),
                   filter="" if endpoint.filter is None else json.dumps(endpoint.filter,
                                                                         indent=2),
                   headers=tuple(HeaderRow(h.name, "", True, h.name) if h.secret
                                 else HeaderRow(h.name, h.value) for h in endpoint.headers),
                   ordered=endpoint.ordered)

    def header_rows(self) -> list[HeaderRow]:
        """The rows to show: this form's, then empty ones (20 rows at most)."""
        blank = min(EMPTY_HEADER_ROWS, MAX_CUSTOM_HEADERS - len(self.headers))
        return [*self.headers, *[HeaderRow()] * max(blank, 0)]

    def fields(self, stored: Endpoint | None = None) -> dict[str, Any]:
        """The body the API takes: event types split at commas or spaces; an empty rate
        limit is none (the model reads a number typed as text, as the API's JSON would);
        an empty filter is none. A secret row left empty takes the value of ``stored``'s
        secret header it showed. Raises :class:`FormMistake`."""
        return {"url": self.url,
                "events": [e for e in _SEPARATORS.split(self.events) if e],
                "description": self.description,
                "rate_limit": self.rate_limit or None,
                "headers": self._headers(stored),
                "filter": self._filter(),
                "ordered": self.ordered}

    def _filter(self) -> dict[str, Any] | None:
        if not self.filter:
            return None
        try:
            document = json.loads(self.filter)
        except ValueError as exc:
            raise FormMistake(f"{LABELS['filter']}: not JSON ({exc})") from exc
        if not isinstance(document, dict):
            raise FormMistake(f"{LABELS['filter']}: must be a JSON object, e.g. "
                              '{"data.object.status": "shipped"}')
        return document

    def _headers(self, stored: Endpoint | None) -> list[dict[str, Any]]:
        kept = {h.name: h.value for h in (stored.headers if stored else []) if h.secret}
        headers = []
        for number, row in enumerate(self.headers, start=1):
            if not row.name:
                raise FormMistake(f"{LABELS['headers']}: row {number} has a value but no name")
            value = row.value
            if row.secret and not value and row.stored in kept:
                value = kept[row.stored]  # untouched: the stored secret stays
            headers.append({"name": row.name, "value": value, "secret": row.secret})
        return headers


def invalid(exc: ValidationError) -> str:
    """The model's complaints, one per field, named as the form labels them."""
    complaints = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        complaints.append(f"{LABELS.get(name, name or 'Form')}: "
                          f"{error['msg'].removeprefix('Value error, ')}")
    return "; ".join(complaints)


def _form_page(session: Session, form: EndpointForm, endpoint: Endpoint | None = None,
               error: str | None = None, status_code: int = 200) -> Response:
    return render("endpoint_form.html", session, status_code=status_code, form=form,
                  endpoint=endpoint, error=error, active="endpoints")


def _not_found(session: Session, endpoint_id: str) -> Response:
    return failure_page(session, Problem(404, f"no endpoint {endpoint_id}"))


# "/endpoints/new" is registered before pages.py's "/endpoints/{endpoint_id}" (the
# package imports this module first), so "new" is never taken for an endpoint id.
@dashboard_router.get("/endpoints/new")
def new_endpoint_page(session: ManageSessionDep) -> Response:
    """An empty form for a new endpoint."""
    return _form_page(session, EndpointForm(events="*"))


@dashboard_router.post("/endpoints/new")
def create(ctx: ContextDep, session: ChangeDep, form: FormDep) -> Response:
    """``POST /v1/endpoints``; shows the new endpoint's signing secret this once."""
    typed = EndpointForm.posted(form)
    try:
        created = create_endpoint(
            ctx, session.tenant,
            EndpointCreate.model_validate({**typed.fields(), "verify": typed.verify}), Response())
    except FormMistake as exc:
        return _form_page(session, typed, error=str(exc), status_code=422)
    except ValidationError as exc:
        return _form_page(session, typed, error=invalid(exc), status_code=422)
    except Problem as exc:
        if exc.status != 422:
            return failure_page(session, exc)
        return _form_page(session, typed, error=exc.detail, status_code=422)
    return render("secret.html", session, endpoint=created, created=True,
                  active="endpoints")


@dashboard_router.get("/endpoints/{endpoint_id}/edit")
def edit_endpoint_page(ctx: ContextDep, session: ManageSessionDep, endpoint_id: str) -> Response:
    """The endpoint's URL, event types, description, rate limit, custom headers (secret
    values not shown) and payload filter, to change."""
    endpoint = ctx.endpoints.get(session.tenant, endpoint_id)
    if endpoint is None:
        return _not_found(session, endpoint_id)
    return _form_page(session, EndpointForm.of(endpoint), endpoint)


@dashboard_router.post("/endpoints/{endpoint_id}/edit")
def edit(ctx: ContextDep, session: ChangeDep, form: FormDep, endpoint_id: str) -> Response:
    """``PATCH /v1/endpoints/{id}`` with the fields the person changed (so that a change
    made meanwhile to another field stands, and an unchanged URL is not checked again)."""
    endpoint = ctx.endpoints.get(session.tenant, endpoint_id)
    if endpoint is None:
        return _not_found(session, endpoint_id)
    typed = EndpointForm.posted(form)
    try:
        # Secret header values are stored sealed: a row left empty keeps the opened value
        # (the store seals it again), and the comparison is with what is sent.
        opened = endpoint.with_headers_opened(ctx.endpoints.keyring)
        wanted = EndpointUpdate.model_validate(typed.fields(opened)).model_dump(
            include=set(LABELS))
        now = opened.model_dump(include=set(LABELS))
        changed = {name: value for name, value in wanted.items() if value != now[name]}
        if not changed:
            return redirect(f"/endpoints/{endpoint_id}", done="unchanged")
        update_endpoint(ctx, session.tenant, endpoint_id, EndpointUpdate(**changed))
    except FormMistake as exc:
        return _form_page(session, typed, endpoint, error=str(exc), status_code=422)
    except ValidationError as exc:
        return _form_page(session, typed, endpoint, error=invalid(exc), status_code=422)
    except Problem as exc:
        if exc.status != 422:
            return failure_page(session, exc)
        return _form_page(session, typed, endpoint, error=exc.detail, status_code=422)
    return redirect(f"/endpoints/{endpoint_id}", done="updated")


@dashboard_router.get("/endpoints/{endpoint_id}/delete")
def delete_endpoint_page(ctx: ContextDep, session: ManageSessionDep, endpoint_id: str
                         ) -> Response:
    """Asks before deleting: what goes, what stays."""
    endpoint = ctx.endpoints.get(session.tenant, endpoint_id)
    if endpoint is None:
        return _not_found(session, endpoint_id)
    return render("endpoint_delete.html", session, endpoint=endpoint, active="endpoints")


@dashboard_router.post("/endpoints/{endpoint_id}/delete")
def delete(ctx: ContextDep, session: ChangeDep, endpoint_id: str) -> Response:
    """``DELETE /v1/endpoints/{id}``, posted from the confirmation page."""
    try:
        delete_endpoint(ctx, session.tenant, endpoint_id)
    except Problem as exc:
        return failure_page(session, exc)
    return redirect("/endpoints", done="deleted")
