"""RFC 9457 ``application/problem+json`` errors for every FastAPI service.

Request validation errors answer 400 when the JSON is malformed or only parameters
(query, path, header, cookie) are wrong, and 422 when body fields are invalid.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

PROBLEM_JSON = "application/problem+json"


class ProblemDocument(BaseModel):
    """An RFC 9457 problem document, as published in the OpenAPI documents."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str | None = Field(default=None, description="A machine-readable reason, where "
                                                       "the service gives one.")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="Validation errors (400 for parameters, 422 for body "
                                  "fields): location and message of each.")


def problem_responses(*described: tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error statuses, each a problem document."""
    return {status: {"description": description, "content": {PROBLEM_JSON: {
        "schema": {"$ref": "#/components/schemas/Problem"}}}}
        for status, description in described}


class Problem(Exception):
    """Raise to answer with a problem document: ``raise Problem(404, "no such event")``."""

    def __init__(self, status: int, detail: str, *, title: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.headers = headers
        self.extra = extra


def problem_response(status: int, detail: str, *, title: str | None = None,
                     headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def render_problem(problem: Problem) -> JSONResponse:
    """The response answering a raised :class:`Problem`."""
    return problem_response(problem.status, problem.detail, title=problem.title,
                            headers=problem.headers, **problem.extra)


PARAMETER_LOCATIONS = ("query", "path", "header", "cookie")


def _describe(error: dict[str, Any]) -> str:
    location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    return f"{location or 'body'}: {error.get('msg', 'invalid')}"


def _describe_parameter(error: dict[str, Any]) -> str:
    """``limit (query parameter): Input should be …``."""
    where, *name = error.get("loc", ()) or ("parameter",)
    named = ".".join(str(part) for part in name) or "?"
    return f"{named} ({where} parameter): {error.get('msg', 'invalid')}"


def _validation_problem(errors: list[dict[str, Any]]) -> JSONResponse:
    """400 for malformed JSON or bad parameters only, 422 for invalid body fields."""
    listed = [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in errors]
    if any(e.get("type") == "json_invalid" for e in errors):
        return problem_response(400, "; ".join(_describe(e) for e in errors), errors=listed)
    if errors and all((e.get("loc") or ("",))[0] in PARAMETER_LOCATIONS for e in errors):
        return problem_response(400, "; ".join(_describe_parameter(e) for e in errors),
                                code="invalid_parameter", errors=listed)
    return problem_response(422, "; ".join(_describe(e) for e in errors), errors=listed)


def _allowed_methods(request: Request) -> str:
    """Every method the path takes. Starlette's own 405 names only the first route's,
    though one path may have several routes (``GET`` and ``POST /v1/endpoints``)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


def _document_422_only_with_a_body(schema: dict[str, Any]) -> None:
    """FastAPI documents 422 on every operation with parameters, but bad parameters
    answer 400 here: only an operation that takes a body can answer 422."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if "requestBody" not in operation:
                operation.get("responses", {}).pop("422", None)


def install_problem_handlers(app: FastAPI) -> None:
    """Turn Problem, HTTP errors and request validation errors into problem documents,
    and publish the ``Problem`` schema that :func:`problem_responses` refers to."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return render_problem(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = exc.headers
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed_methods(request)}
        return problem_response(exc.status_code, str(exc.detail), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_problem(list(exc.errors()))

    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build_openapi()  # also caches it on app.openapi_schema
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["Problem"] = ProblemDocument.model_json_schema()
            _document_422_only_with_a_body(schema)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
