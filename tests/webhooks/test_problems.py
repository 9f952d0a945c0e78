"""Problem documents: every error a service answers is application/problem+json, and the
OpenAPI document describes them."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from webhooks.problems import (
    PROBLEM_JSON,
    Problem,
    ProblemDocument,
    install_problem_handlers,
    problem_responses,
)


class Widget(BaseModel):
    name: str
    size: int


def make_app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    responses = problem_responses((404, "Not found"))

    @app.get("/things", responses=responses)
    def list_things() -> list[str]:
        return []

    @app.post("/things")
    def create_thing(name: str) -> dict[str, str]:
        if name == "taken":
            raise Problem(409, "name is taken", code="taken")
        return {"name": name}

    @app.delete("/things/{thing_id}")
    def delete_thing(thing_id: int) -> None:
        raise Problem(404, f"no thing {thing_id}")

    @app.post("/widgets/{shelf}")
    def create_widget(shelf: int, widget: Widget) -> Widget:
        return widget

    return app


def test_errors_are_problem_documents() -> None:
    client = TestClient(make_app())
    conflict = client.post("/things", params={"name": "taken"})
    assert conflict.status_code == 409
    assert conflict.headers["content-type"] == PROBLEM_JSON
    assert ProblemDocument.model_validate(conflict.json()).code == "taken"
    assert client.get("/nowhere").headers["content-type"] == PROBLEM_JSON


def test_bad_parameters_answer_400_and_bad_body_fields_422() -> None:
    client = TestClient(make_app())
    missing = client.post("/things")  # a required query parameter is missing
    assert missing.status_code == 400 and missing.headers["content-type"] == PROBLEM_JSON
    problem = ProblemDocument.model_validate(missing.json())
    assert problem.code == "invalid_parameter"
    assert problem.detail == "name (query parameter): Field required"
    assert problem.errors == [{"loc": ["query", "name"], "msg": "Field required"}]
    path = client.delete("/things/seven")
    assert path.status_code == 400 and path.json()["detail"].startswith(
        "thing_id (path parameter): ")
    # Body fields stay 422, also when a parameter is wrong at the same time.
    fields = client.post("/widgets/1", json={"name": "w", "size": "big"})
    assert fields.status_code == 422 and fields.json()["detail"].startswith("size: ")
    assert fields.json().get("code") is None
    both = client.post("/widgets/one", json={"name": "w"})
    assert both.status_code == 422
    assert {tuple(e["loc"]) for e in both.json()["errors"]} == {("path", "shelf"),
                                                                ("body", "size")}
    malformed = client.post("/widgets/1", content=b"{nope",
                            headers={"content-type": "application/json"})
    assert malformed.status_code == 400


def test_method_not_allowed_lists_every_method_of_the_path() -> None:
    # Starlette's own answer names only the first matching route's methods ("GET").
    client = TestClient(make_app())
    answer = client.put("/things")
    assert answer.status_code == 405
    assert answer.headers["content-type"] == PROBLEM_JSON
    assert answer.headers["allow"] == "GET, POST"
    assert client.get("/things/7").headers["allow"] == "DELETE"


def test_openapi_publishes_the_problem_schema_the_responses_refer_to() -> None:
    schema = TestClient(make_app()).get("/openapi.json").json()
    response = schema["paths"]["/things"]["get"]["responses"]["404"]
    assert response["content"][PROBLEM_JSON]["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert schema["components"]["schemas"]["Problem"]["required"] == ["title", "status", "detail"]
    # Parameters answer 400, so 422 is documented only where a body is taken.
    assert "422" not in schema["paths"]["/things"]["post"]["responses"]
    assert "422" not in schema["paths"]["/things/{thing_id}"]["delete"]["responses"]
    widgets = schema["paths"]["/widgets/{shelf}"]["post"]["responses"]
    assert "422" in widgets
