"""Problem documents: every error a service answers is application/problem+json, and the
OpenAPI document describes them."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from webhooks.problems import (
    PROBLEM_JSON,
    Problem,
    ProblemDocument,
    install_problem_handlers,
    problem_responses,
)


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

    return app


def test_errors_are_problem_documents() -> None:
    client = TestClient(make_app())
    conflict = client.post("/things", params={"name": "taken"})
    assert conflict.status_code == 409
    assert conflict.headers["content-type"] == PROBLEM_JSON
    assert ProblemDocument.model_validate(conflict.json()).code == "taken"
    invalid = client.post("/things")  # missing query parameter
    assert invalid.status_code == 422
    assert ProblemDocument.model_validate(invalid.json()).errors
    assert client.get("/nowhere").headers["content-type"] == PROBLEM_JSON


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
