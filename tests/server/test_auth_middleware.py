"""docker/auth_middleware.py hands a request straight to MLflow's app only where MLflow's own
permission middleware would have handed it on untouched: checked against that middleware itself,
over every route MLflow serves and every spelling the identity attack suite uses."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from tests.server.proc import image_module


@pytest.fixture(scope="module")
def middleware() -> Any:
    return image_module("auth_middleware")


def fastapi_app_with_permissions() -> Any:
    """MLflow's FastAPI app as its auth app builds it (`create_app`), without its database."""
    from mlflow.server import app as flask_app
    from mlflow.server.auth import add_fastapi_permission_middleware
    from mlflow.server.fastapi_app import create_fastapi_app

    app = create_fastapi_app(flask_app)
    add_fastapi_permission_middleware(app)
    return app


def mlflows_dispatch(app: Any) -> Any:
    (entry,) = [
        m
        for m in app.user_middleware
        if getattr(m.kwargs.get("dispatch"), "__name__", "") == "fastapi_permission_middleware"
    ]
    return entry.kwargs["dispatch"]


def sample_path(rule: str) -> str:
    """A concrete path for a route template (`<int:id>`, `{name}`, `{path:path}`)."""
    return re.sub(r"<[^>]+>|\{[^}]+\}", "x1", rule)


def spellings(path: str) -> list[str]:
    variants = [path, "/" + path, "//" + path, path + "/", path.replace("/api/", "/API/"), path.replace("/", "/%2F", 1)]
    if path.startswith("/api/"):
        variants.append("/ajax-api/" + path[len("/api/") :])
    if path.startswith("/ajax-api/"):
        variants.append("/api/" + path[len("/ajax-api/") :])
    return variants


def corpus(app: Any) -> list[tuple[str, str, str]]:
    """(method, path, host) for every route of MLflow's Flask and FastAPI apps, in every spelling,
    with its methods and GET and POST in three cases, and for paths no route serves; the canonical
    spelling from a second host too."""
    from mlflow.server import app as flask_app

    rules = image_module("route_rules")
    methods: dict[str, set[str]] = {}
    for path, route_methods, _ in [*rules.flask_routes(flask_app), *rules.fastapi_routes(app)]:
        methods.setdefault(sample_path(path), {"GET", "POST"}).update(route_methods)
    for path in ("/", "/nope", "/api/2.0/mlflow/nope", "/health", "/static-files/x"):
        methods.setdefault(path, {"GET", "POST", "DELETE"})
    found = []
    for path, verbs in sorted(methods.items()):
        cased = sorted({c for m in verbs for c in (m, m.lower(), m.title())})
        found += [(method, spelled, "localhost") for spelled in spellings(path) for method in cased]
        found += [(method, path, "evil.example") for method in sorted(verbs)]
    return found


def scope_of(method: str, path: str, host: str) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
        "server": ("localhost", 80), "headers": [(b"host", host.encode())],
    }  # fmt: skip


HANDED_ON = object()


def mlflow_hands_on(dispatch: Any, scopes: list[dict[str, Any]]) -> list[bool]:
    """Runs MLflow's middleware on each request, with a `call_next` that only records it was called."""
    from starlette.requests import Request

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def call_next(request: Any) -> Any:
        return HANDED_ON

    async def each() -> list[bool]:
        return [await dispatch(Request(dict(scope), receive), call_next) is HANDED_ON for scope in scopes]

    return asyncio.run(each())


def test_what_it_hands_straight_on_mlflows_middleware_hands_on_too(middleware: Any) -> None:
    app = fastapi_app_with_permissions()
    dispatch = mlflows_dispatch(app)
    from mlflow.server.auth import _native_fastapi_routes

    hand_on = middleware.HandOn(_native_fastapi_routes(app))
    requests = corpus(app)
    handed = [r for r in requests if hand_on(scope_of(*r))]
    verdicts = mlflow_hands_on(dispatch, [scope_of(*r) for r in handed])
    disagree = [r for r, mlflow_too in zip(handed, verdicts, strict=True) if not mlflow_too]
    assert len(handed) > 1000 and disagree == [], disagree[:20]
    # Asked again, the kept answers are the same.
    assert [r for r in requests if hand_on(scope_of(*r))] == handed


def test_mlflows_flask_routes_take_the_fast_way_and_its_gated_fastapi_routes_do_not(middleware: Any) -> None:
    app = fastapi_app_with_permissions()
    from mlflow.server.auth import _native_fastapi_routes

    hand_on = middleware.HandOn(_native_fastapi_routes(app))
    for path in ("/api/2.0/mlflow/runs/log-metric", "/ajax-api/2.0/mlflow/experiments/search", "/get-artifact"):
        assert hand_on(scope_of("POST", path, "localhost")), path
    for path in ("/gateway/x/mlflow/invocations", "/v1/traces", "/ajax-api/3.0/jobs/x"):
        assert not hand_on(scope_of("POST", path, "localhost")), path


def test_a_path_too_long_to_keep_is_decided_each_time_and_not_kept(middleware: Any) -> None:
    app = fastapi_app_with_permissions()
    from mlflow.server.auth import _native_fastapi_routes

    hand_on = middleware.HandOn(_native_fastapi_routes(app))
    long_path = "/api/2.0/mlflow/runs/log-metric" + "/x" * middleware.KEPT_PATH_LENGTH
    assert [hand_on(scope_of("POST", long_path, "localhost"))] == mlflow_hands_on(
        mlflows_dispatch(app), [scope_of("POST", long_path, "localhost")]
    )
    for i in range(middleware.KEPT_ROUTE_ANSWERS + 10):
        hand_on(scope_of("GET", f"/api/2.0/mlflow/runs/get/{i}", "localhost"))
    assert len(hand_on._kept) == middleware.KEPT_ROUTE_ANSWERS


def test_it_takes_mlflows_place_only_over_the_reviewed_mlflow(middleware: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app = fastapi_app_with_permissions()
    assert middleware.source_digest() == middleware.REVIEWED, (
        "MLflow's permission middleware changed: review docker/auth_middleware.py against it, then update REVIEWED"
    )
    assert middleware.install(app)
    assert [m.cls for m in app.user_middleware].count(middleware.PassThroughFirst) == 1
    assert not [
        m
        for m in app.user_middleware
        if m.kwargs.get("dispatch") is not None
        and m.cls is not middleware.PassThroughFirst
        and getattr(m.kwargs["dispatch"], "__name__", "") == "fastapi_permission_middleware"
    ]

    other = fastapi_app_with_permissions()
    before = list(other.user_middleware)
    monkeypatch.setattr(middleware, "REVIEWED", "0" * 64)
    assert not middleware.install(other)
    assert other.user_middleware == before
