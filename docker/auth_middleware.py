"""MLflow's FastAPI permission middleware, without its cost for the requests it only hands on.

MLflow's auth app adds `fastapi_permission_middleware` to its FastAPI app as a Starlette
BaseHTTPMiddleware. For a request to MLflow's Flask app (the REST API, the UI: nearly all traffic)
it decides nothing: the path is unprotected, or no FastAPI validator claims it and it is no native
FastAPI route, so it calls `call_next` and the auth app's Flask `before_request` hooks decide. That
hand-on cost about a fifth of a `log_metric` (bench/server.py): the match of every native route, and
BaseHTTPMiddleware's task, streams and response copy.

`install` puts `PassThroughFirst` in its place: it takes that same decision on the same inputs
(MLflow's own functions, the same snapshot of native routes) and hands such requests straight to
the inner app; every other request goes to MLflow's middleware, unchanged. The decision is kept per
(type, method, root path, path, host): all that MLflow's tests and Starlette's routing read.

It is installed only over the MLflow source it was reviewed against (REVIEWED): another MLflow's
middleware runs as MLflow wrote it. tests/server/test_auth_middleware.py checks, over every route
and spelling the route inventory knows, that MLflow's middleware hands on exactly what this does.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from kept import Recent

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

DISPATCH_NAME = "fastapi_permission_middleware"
REVIEWED = "9e465d89a77b842c83233f3832b1549fd15931fac75cf3972819d3f3209550e8"
"""sha256 of the MLflow functions the hand-on decision mirrors (see `reviewed_source`)."""
KEPT_ROUTE_ANSWERS = 4096
KEPT_PATH_LENGTH = 512
"""Longer paths are matched every time: a kept answer must not let a client grow the server."""

_log = logging.getLogger("uvicorn.error")


def reviewed_source() -> str:
    """The MLflow code whose hand-on decision PassThroughFirst takes in its place."""
    import mlflow.server.asgi_utils as asgi_utils
    import mlflow.server.auth as auth

    functions = (
        auth.add_fastapi_permission_middleware,
        auth._native_fastapi_routes,
        auth._scope_matches_native_route,
        auth.is_unprotected_route,
        auth._find_fastapi_validator,
        asgi_utils.get_routed_asgi_path,
    )
    return "\n".join(inspect.getsource(f) for f in functions)


def source_digest() -> str:
    return hashlib.sha256(reviewed_source().encode()).hexdigest()


class HandOn:
    """Whether MLflow's middleware would call `call_next` and decide nothing, kept per request key."""

    def __init__(self, native_routes: list[Any]) -> None:
        self.native_routes = native_routes
        self._kept: Recent[tuple[str, ...], bool] = Recent(None, KEPT_ROUTE_ANSWERS)

    def __call__(self, scope: Scope) -> bool:
        path = scope.get("path")
        if not isinstance(path, str) or not path:
            return False
        if len(path) > KEPT_PATH_LENGTH:
            return self.decide(scope, path)
        host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == b"host"), "")
        key = (scope["type"], scope.get("method", ""), scope.get("root_path", ""), path, host)
        return bool(self._kept.get_or(key, lambda: self.decide(scope, path)))

    def decide(self, scope: Scope, path: str) -> bool:
        """MLflow's own tests, in its middleware's order, on what it reads."""
        from mlflow.server.auth import _find_fastapi_validator, _scope_matches_native_route, is_unprotected_route

        if is_unprotected_route(path):
            return True
        if _find_fastapi_validator(path, scope.get("method", "")) is not None:
            return False
        # A copy: FastAPI's routers write their bookkeeping into the scope they match.
        return not _scope_matches_native_route(self.native_routes, dict(scope))


class PassThroughFirst:
    """In MLflow's permission middleware's place: hand-on requests straight in, the rest to it."""

    def __init__(self, app: App, dispatch: Any, hand_on: HandOn) -> None:
        from starlette.middleware.base import BaseHTTPMiddleware

        self.app, self.hand_on = app, hand_on
        self.mlflow_middleware = BaseHTTPMiddleware(app, dispatch=dispatch)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.hand_on(scope):
            await self.app(scope, receive, send)
        else:
            await self.mlflow_middleware(scope, receive, send)


def install(fastapi_app: Any) -> bool:
    """PassThroughFirst in place of MLflow's permission middleware; False (and MLflow's left) if
    MLflow is not the reviewed one or its middleware is not found once."""
    from mlflow.server.auth import _native_fastapi_routes
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware

    if source_digest() != REVIEWED:
        _log.warning("auth_middleware: MLflow's permission middleware is not the reviewed one; left as it is")
        return False
    found = [
        i
        for i, m in enumerate(fastapi_app.user_middleware)
        if m.cls is BaseHTTPMiddleware and getattr(m.kwargs.get("dispatch"), "__name__", "") == DISPATCH_NAME
    ]
    if len(found) != 1 or fastapi_app.middleware_stack is not None:
        _log.warning("auth_middleware: MLflow's permission middleware not found once before start; left as it is")
        return False
    dispatch = fastapi_app.user_middleware[found[0]].kwargs["dispatch"]
    hand_on = HandOn(_native_fastapi_routes(fastapi_app))
    fastapi_app.user_middleware[found[0]] = Middleware(PassThroughFirst, dispatch=dispatch, hand_on=hand_on)
    return True
