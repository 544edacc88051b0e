"""Teams in MLflow's own UI: each user sees what they may read, and who they are. A start.sh server with
[access] (two teams, others = "none") on a real PostgreSQL, MLflow 3.17.2's UI in Debian's headless
Chromium, and between them, on loopback, the one stand-in: IAP, a reverse proxy that adds a freshly
signed assertion for one user to every request the browser makes (one proxy, so one origin, per user).

What the UI does (MLflow 3.17.2's bundle, server/js/build/static/js/main.*.js): it asks server-info
whether workspaces are on, lists the workspaces the auth app lets the user see
(ajax-api/3.0/mlflow/workspaces, filter_list_workspaces), keeps the chosen one in the page address
(`?workspace=`) and sends it as X-MLFLOW-WORKSPACE; the experiment and model lists are
ajax-api/2.0/mlflow/experiments/search and registered-models/search, whose responses the auth app
filters to what the user may read; the sidebar's account menu shows users/current's username,
which is the IAP-verified e-mail (docker/iap_access.py). The world: tests/server/teams.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from tests.server.browser import Browser, require_browser
from tests.server.cloud_run_proxy import CloudRunProxy
from tests.server.conftest import Database, Launcher
from tests.server.iap_signer import IapSigner
from tests.server.teams import A1, B1, BOSS, TEAM_OF, VISITOR, World, start_world

pytestmark = pytest.mark.slow

EMPTY_EXPERIMENTS = "Create your first experiment"
EMPTY_MODELS = "Share and manage machine learning models"
EMPTY_WORKSPACES = "Create your first workspace"


@pytest.fixture(scope="module")
def world(
    module_launcher: Launcher,
    new_migrated_database: Callable[[], Database],
    signer: IapSigner,
    access_env: Callable[[str], dict[str, str]],
) -> World:
    return start_world("none", module_launcher, new_migrated_database, signer, access_env)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_browser()
    with Browser() as browser:
        yield browser


@contextmanager
def through_iap(world: World, email: str) -> Iterator[CloudRunProxy]:
    """The front door as `email` signs in: every request the browser sends it reaches the server
    with IAP's assertion for `email` (in place of any the browser sent)."""
    with CloudRunProxy(world.server.url, "http1", front_door=lambda: world.signer.headers(email)) as proxy:
        yield proxy


def other_team(email: str) -> str:
    return next(team for team in set(TEAM_OF.values()) if team != TEAM_OF[email])


def shows_account(browser: Browser, email: str) -> bool:
    """The sidebar's account menu (a button labelled with the user, the user's name in it)."""
    return bool(
        browser.run(
            "const b = document.querySelector(`button[aria-label='Account menu for ${arguments[0]}']`);"
            "return b !== null && b.innerText.includes(arguments[0]);",
            email,
        )
    )


def open_model_registry(browser: Browser) -> None:
    """The sidebar's Model registry link is in its "Model training" view (the UI starts in GenAI)."""
    browser.wait_for(lambda text: "Model training" in text or "Model registry" in text, "the sidebar")
    if "Model registry" not in browser.text():
        browser.click("//*[@role='button'][normalize-space(.)='Model training']")
    browser.click("//a[normalize-space(.)='Model registry']")


@pytest.mark.parametrize("email", [A1, B1])
def test_each_member_sees_their_teams_experiments_and_models_none_of_the_others_and_who_they_are(
    browser: Browser, world: World, email: str
) -> None:
    own, other = world.teams[TEAM_OF[email]], world.teams[other_team(email)]
    with through_iap(world, email) as iap:
        browser.open(f"{iap.url}/")
        home = browser.wait_for(lambda text: own.workspace in text and email in text, f"{own.workspace} and {email}")
        assert shows_account(browser, email), f"the account menu names {email}"
        assert other.workspace not in home, "the workspace list offers only the user's team's workspace"

        browser.click(f"//a[normalize-space(.)='{own.workspace}']")
        browser.click("//a[normalize-space(.)='Experiments']")
        experiments = browser.wait_for(lambda text: f"{own.workspace}-experiment" in text, "the team's experiment")
        assert f"{other.workspace}-experiment" not in experiments
        assert f"?workspace={own.workspace}" in browser.run("return location.href")

        open_model_registry(browser)
        models = browser.wait_for(lambda text: own.model in text, "the team's registered model")
        assert other.model not in models
        assert shows_account(browser, email)


@pytest.mark.parametrize("email", [A1, B1])
def test_the_other_teams_workspace_opened_by_its_address_shows_none_of_its_experiments_or_models(
    browser: Browser, world: World, email: str
) -> None:
    """A link to the other team's pages (the workspace is in the address) gets the user empty lists:
    MLflow's auth app filters the search responses to what the user may read."""
    other = world.teams[other_team(email)]
    with through_iap(world, email) as iap:
        browser.open(f"{iap.url}/#/experiments?workspace={other.workspace}")
        experiments = browser.wait_for(lambda text: EMPTY_EXPERIMENTS in text, "an empty experiment list")
        assert f"{other.workspace}-experiment" not in experiments
        assert answered(iap, "/ajax-api/2.0/mlflow/experiments/search"), "the list was asked for, and answered"

        browser.open(f"{iap.url}/#/models?workspace={other.workspace}")
        models = browser.wait_for(lambda text: EMPTY_MODELS in text, "an empty model list")
        assert other.model not in models
        assert answered(iap, "/ajax-api/2.0/mlflow/registered-models/search")
        assert shows_account(browser, email)


def answered(iap: CloudRunProxy, path: str, since: int = 0, headers: frozenset[str] = frozenset()) -> bool:
    """Whether the front door answered `path` 200 (to a request carrying `headers`), counting its
    exchanges from `since`: the proxy notes one after its answer left, so it is waited for a little."""
    deadline = time.monotonic() + 5
    while not any(
        e.target.startswith(path) and e.status == 200 and headers <= e.client_headers for e in iap.exchanges[since:]
    ):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_header_the_ui_takes_from_a_cookie_claims_no_other_identity(browser: Browser, world: World) -> None:
    """MLflow's UI sends every cookie named mlflow-request-header-NAME as header NAME; neither the
    server's verified-user header nor IAP's assertion can be claimed that way."""
    with through_iap(world, A1) as iap:
        browser.open(f"{iap.url}/")
        browser.wait_for(lambda text: A1 in text, A1)  # this page's own calls are done before the cookies
        browser.run(
            "document.cookie = 'mlflow-request-header-X-MLflow-IAP-Verified-User=' + arguments[0] + '; path=/';"
            "document.cookie = 'mlflow-request-header-X-Goog-IAP-JWT-Assertion=' + arguments[1] + '; path=/';",
            BOSS,
            world.signer.assertion(BOSS),
        )
        before = len(iap.exchanges)
        browser.open(f"{iap.url}/")
        browser.wait_for(lambda text: A1 in text, A1)
        claims = frozenset({"x-mlflow-iap-verified-user", "x-goog-iap-jwt-assertion"})
        assert answered(iap, "/ajax-api/2.0/mlflow/users/current", before, claims), "the UI sent both claims"
        assert shows_account(browser, A1)
        assert BOSS not in browser.text()
        assert world.teams["team-b"].workspace not in browser.text(), "no admin's view of every workspace"


@pytest.mark.parametrize(("email", "workspaces"), [(BOSS, {"team-a", "team-b"}), (VISITOR, set())])
def test_an_admin_is_offered_every_teams_workspace_and_someone_in_no_team_none(
    browser: Browser, world: World, email: str, workspaces: set[str]
) -> None:
    def listed(text: str) -> bool:
        return all(w in text for w in workspaces) if workspaces else EMPTY_WORKSPACES in text

    with through_iap(world, email) as iap:
        browser.open(f"{iap.url}/")
        home = browser.wait_for(lambda text: email in text and listed(text), f"{email} and the workspace list")
        assert shows_account(browser, email)
        assert {w for w in world.teams if w in home} == workspaces
