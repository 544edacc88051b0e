"""Every route MLflow serves has been reviewed for identity rules (docker/route_rules.py), so the
next MLflow upgrade cannot open a hole silently: a new route, or a route whose request gains a
field that could name a person, fails here until someone has read its handler and listed it.
The server refuses to start with an unreviewed route as well (iap_identity.wrap)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.server.proc import DOCKER_DIR, image_module, script_env


@pytest.fixture(scope="module")
def rules() -> Any:
    return image_module("route_rules")


@pytest.fixture(scope="module")
def apps() -> tuple[Any, Any]:
    from mlflow.server import app as flask_app
    from mlflow.server.fastapi_app import app as fastapi_app

    return fastapi_app, flask_app


def _author_like(descriptor: Any, names: frozenset[str], seen: tuple[str, ...] = ()) -> set[str]:
    """Paths of fields named like an author (or tags) anywhere in a request message."""
    found: set[str] = set()
    if descriptor.full_name in seen:
        return found
    for f in descriptor.fields:
        if f.name in names:
            found.add(f.name)
        if f.message_type is not None and not f.message_type.GetOptions().map_entry:
            found |= {
                f"{f.name}.{inner}" for inner in _author_like(f.message_type, names, (*seen, descriptor.full_name))
            }
    return found


def test_every_route_mlflow_serves_is_reviewed(rules: Any, apps: tuple[Any, Any]) -> None:
    assert rules.unreviewed(*apps) == []


def test_every_route_whose_request_could_name_a_person_has_a_treatment_or_a_reason(
    rules: Any, apps: tuple[Any, Any]
) -> None:
    unexplained = {}
    for _, _, endpoint in rules.flask_routes(apps[1]):
        message = rules.request_message(endpoint)
        if message is None:
            continue
        fields = _author_like(message.DESCRIPTOR, rules.AUTHOR_LIKE_FIELDS)
        treated = rules.FLASK.get(endpoint, rules.PASS).writes_identity
        if fields and not treated and endpoint not in rules.AUTHOR_LIKE_BUT_NOT_AN_AUTHOR:
            unexplained[endpoint] = sorted(fields)
    assert unexplained == {}


def test_the_reviewed_lists_name_only_routes_mlflow_serves(rules: Any, apps: tuple[Any, Any]) -> None:
    """A stale entry would hide that an upgrade renamed a route (and its new name is refused)."""
    flask = {endpoint for _, _, endpoint in rules.flask_routes(apps[1])}
    fastapi = {name for _, _, name in rules.fastapi_routes(apps[0])}
    listed_flask = (
        set(rules.FLASK) | rules.REVIEWED_FLASK_READS_AND_PLAIN_WRITES | set(rules.AUTHOR_LIKE_BUT_NOT_AN_AUTHOR)
    )
    assert listed_flask - flask == set()
    assert (set(rules.FASTAPI) | rules.REVIEWED_FASTAPI) - fastapi == set()
    assert set(rules.FLASK) & rules.REVIEWED_FLASK_READS_AND_PLAIN_WRITES == set()


def test_every_flask_treatment_that_rewrites_has_the_request_message_mlflow_parses(rules: Any) -> None:
    needs_message = [
        e for e, t in rules.FLASK.items() if (t.rewrite or t.before or t.after) and rules.request_message(e) is None
    ]
    assert needs_message == []


def test_an_unknown_endpoint_is_refused_and_a_known_one_is_not(rules: Any) -> None:
    assert rules.flask_treatment("_a_route_of_a_later_mlflow").refuse
    assert rules.fastapi_treatment("mlflow.server.later_api:new_route").refuse
    assert not rules.flask_treatment("_search_runs").refuse
    assert rules.flask_treatment("_create_run").rewrite is not None


# --- MLflow's auth app ([access], docker/iap_access.py) -------------------------------------------

# Run apart: MLflow's create_app adds its routes and hooks to MLflow's one Flask app for good.
AUTH_APP_ROUTES = """
import json, sys
import route_rules
from mlflow.server import app as flask_app
from mlflow.server.fastapi_app import app as plain
plain_flask = {e for _, _, e in route_rules.flask_routes(flask_app)}
plain_fastapi = {n for _, _, n in route_rules.fastapi_routes(plain)}
from mlflow.server.auth import create_app
fastapi_app = create_app()
json.dump({
    "unreviewed": route_rules.unreviewed(fastapi_app, flask_app),
    "added_flask": sorted({e for _, _, e in route_rules.flask_routes(flask_app)} - plain_flask),
    "added_fastapi": sorted({n for _, _, n in route_rules.fastapi_routes(fastapi_app)} - plain_fastapi),
}, sys.stdout)
"""


@pytest.fixture(scope="module")
def auth_app(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """What MLflow's auth app serves beyond MLflow's own routes, as the server builds it with [access]
    (its store in a throw-away SQLite database: the routes do not depend on the database)."""
    directory = tmp_path_factory.mktemp("auth-app")
    ini = directory / "auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{directory / 'auth.db'}\n"
        "admin_username = iap-bootstrap-admin\nadmin_password = route-inventory-only-0123\n"
        "authorization_function = iap_access:authenticate\ngrant_default_workspace_access = false\n"
    )
    env = script_env(
        MLFLOW_AUTH_CONFIG_PATH=str(ini),
        MLFLOW_FLASK_SERVER_SECRET_KEY="route-inventory-only",
        _MLFLOW_SGI_NAME="uvicorn",
        PYTHONPATH=str(DOCKER_DIR),
    )
    done = subprocess.run(
        [sys.executable, "-c", AUTH_APP_ROUTES], env=env, cwd=directory, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    routes: dict[str, list[str]] = json.loads(done.stdout)
    return routes


def test_every_route_mlflows_auth_app_adds_is_reviewed(auth_app: dict[str, list[str]]) -> None:
    assert auth_app["unreviewed"] == []
    assert "get_current_user" in auth_app["added_flask"], "the auth app was not built"


def test_the_auth_apps_reviewed_lists_name_only_routes_it_serves(rules: Any, auth_app: dict[str, list[str]]) -> None:
    listed = set(rules.AUTH_APP_FLASK) | rules.REVIEWED_AUTH_APP_FLASK
    assert listed - set(auth_app["added_flask"]) == set()
    assert set(auth_app["added_fastapi"]) == set(), "a FastAPI route of the auth app needs a review in route_rules.py"


def test_password_sign_up_and_password_changes_are_refused_and_the_user_apis_left_to_mlflow(rules: Any) -> None:
    """IAP is the login: MLflow's password forms are refused; its user and permission APIs run, and
    MLflow's own validators decide (admin-only where MLflow says so: tests/server/test_iap_access.py)."""
    for endpoint in ("signup", "<lambda>", "update_user_password"):
        assert rules.flask_treatment(endpoint).refuse, endpoint
    for endpoint in ("get_current_user", "list_users", "update_user_admin", "grant_user_permission"):
        assert rules.flask_treatment(endpoint) is rules.PASS, endpoint
