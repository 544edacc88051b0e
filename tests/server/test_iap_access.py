"""Teams on one server (docker/iap_access.py): IAP's verified user is MLflow's authenticated user and
MLflow's own auth app decides. A start.sh server with [access] on a real PostgreSQL, assertions
signed by the local IAP stand-in, groups answered by a fake Cloud Identity on loopback.

Who is who, and the world each test starts: tests/server/teams.py.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow import MlflowClient
from mlflow.tracking.request_header.abstract_request_header_provider import RequestHeaderProvider
from mlflow.tracking.request_header.registry import _request_header_provider_registry

from tests.server import upgrade_data
from tests.server.conftest import Database, Launcher, migrate
from tests.server.fake_cloud_identity import FakeCloudIdentity
from tests.server.iap_signer import IapSigner
from tests.server.proc import START_SH, VENV_BIN, ServerProcess, run_script, script_env
from tests.server.teams import (
    A1,
    A2,
    B1,
    BOSS,
    CI,
    GROUPS_TTL,
    IDENTITIES,
    TEAM_A_GROUP,
    TEAM_OF,
    TEAMS,
    VISITOR,
    Caller,
    TeamResources,
    World,
    access_model,
    start_world,
)


@pytest.fixture(scope="module", params=["none", "read"])
def world(
    request: pytest.FixtureRequest,
    module_launcher: Launcher,
    new_migrated_database: Callable[[], Database],
    signer: IapSigner,
    access_env: Callable[[str], dict[str, str]],
) -> World:
    return start_world(request.param, module_launcher, new_migrated_database, signer, access_env)


@pytest.fixture(scope="module")
def accepting_world(
    module_launcher: Launcher,
    new_migrated_database: Callable[[], Database],
    signer: IapSigner,
    access_env: Callable[[str], dict[str, str]],
) -> World:
    """A server that lets non-canonical spellings through to routing (the test-only switch), so that
    MLflow's permission validators, looked up by path text, are shown to deny them after routing too."""
    return start_world(
        "read", module_launcher, new_migrated_database, signer, access_env, MLFLOW_IAP_TEST_NON_CANONICAL="accept"
    )


# --- the matrix --------------------------------------------------------------------------------

READS = ("list", "read", "read artifact")
WRITES = ("create run", "log metric", "delete run", "register version", "move alias", "change stage")


@dataclass(frozen=True)
class Spelling:
    """How a client may write the request: MLflow must decide the same for all of them."""

    name: str
    prefix: str
    lower_case: bool = False

    def method(self, method: str) -> str:
        return method.lower() if self.lower_case else method

    @property
    def canonical(self) -> bool:
        return not self.lower_case and not self.prefix.startswith("//")


CANONICAL_SPELLINGS = [Spelling("api", "/api"), Spelling("ajax-api", "/ajax-api")]
NON_CANONICAL_SPELLINGS = [
    Spelling("double-slash", "//api"),
    Spelling("triple-slash-ajax", "///ajax-api"),
    Spelling("lower-case-method", "/api", lower_case=True),
]
SPELLINGS = CANONICAL_SPELLINGS + NON_CANONICAL_SPELLINGS


def attempt(world: World, email: str, team: TeamResources, operation: str, spelling: Spelling) -> bool | str:
    """True: done; False: refused (403); a string: any other answer, which no cell expects."""
    caller, ws, how = world.caller(email), team.workspace, spelling

    def call(method: str, endpoint: str, body: dict):
        path = f"{how.prefix}/2.0/mlflow/{endpoint}"
        if method == "GET":
            return caller.send(how.method("GET"), path, ws, params=body)
        return caller.send(how.method(method), path, ws, json_body=body)

    if operation == "delete run":  # a run of its own, made by the admin, for each attempt
        victim = world.caller(BOSS).ok("POST", "runs/create", ws, {"experiment_id": team.experiment_id})["run"]["info"][
            "run_id"
        ]
    response = {
        "list": lambda: call("GET", "experiments/search", {"max_results": 100}),
        "read": lambda: call("GET", "experiments/get", {"experiment_id": team.experiment_id}),
        "create run": lambda: call("POST", "runs/create", {"experiment_id": team.experiment_id}),
        "log metric": lambda: call(
            "POST", "runs/log-metric", {"run_id": team.run_id, "key": "loss", "value": 0.1, "timestamp": 2}
        ),
        "delete run": lambda: call("POST", "runs/delete", {"run_id": victim}),
        "register version": lambda: call(
            "POST",
            "model-versions/create",
            {"name": team.model, "source": f"mlflow-artifacts:/{team.artifact_path}", "run_id": team.run_id},
        ),
        "move alias": lambda: call(
            "POST", "registered-models/alias", {"name": team.model, "alias": "champion", "version": "1"}
        ),
        "change stage": lambda: call(
            "POST",
            "model-versions/transition-stage",
            {"name": team.model, "version": "1", "stage": "Staging", "archive_existing_versions": False},
        ),
        "read artifact": lambda: caller.send(
            how.method("GET"), f"{how.prefix}/2.0/mlflow-artifacts/artifacts/{team.artifact_path}", ws
        ),
    }[operation]()
    if response.status_code == 403:
        return False
    if response.status_code != 200:
        return f"{response.status_code} {response.text[:120]}"
    if operation == "list":
        return team.experiment_id in [e["experiment_id"] for e in response.json().get("experiments", [])]
    if operation == "read artifact":
        return response.content == team.workspace.encode() or f"artifact body {response.content[:40]!r}"
    return True


def allowed(world: World, email: str, team: TeamResources, operation: str) -> bool:
    """What the configuration says: admins everything; a team's members everything in its workspace;
    with others = read, members of other teams read it; nobody else anything."""
    if email == BOSS or TEAM_OF.get(email) == team.workspace:
        return True
    return world.others == "read" and email in TEAM_OF and operation in READS


def wrong_cells(world: World, email: str, spelling: Spelling) -> list[str]:
    wrong = []
    for team in world.teams.values():
        for operation in (*READS, *WRITES):
            expected, got = allowed(world, email, team, operation), attempt(world, email, team, operation, spelling)
            if got is not expected:
                wrong.append(
                    f"{team.workspace}/{operation}: expected {'allowed' if expected else 'refused'}, got {got}"
                )
    return wrong


@pytest.mark.parametrize("spelling", SPELLINGS, ids=lambda s: s.name)
@pytest.mark.parametrize("email", IDENTITIES)
def test_each_identity_gets_in_each_workspace_what_the_configuration_says(
    world: World, email: str, spelling: Spelling
) -> None:
    """Canonical spellings: each cell as the configuration says. Any other spelling of the method or
    path is refused 400 up front, before identity or permissions (iap_identity.py's first line)."""
    if spelling.canonical:
        wrong = wrong_cells(world, email, spelling)
    else:
        wrong = []
        for team in world.teams.values():
            for operation in (*READS, *WRITES):
                got = attempt(world, email, team, operation, spelling)
                if not (isinstance(got, str) and got.startswith("400 ") and "BAD_REQUEST" in got):
                    wrong.append(f"{team.workspace}/{operation}: expected 400 BAD_REQUEST up front, got {got}")
    assert wrong == [], f"others={world.others}, {email}, {spelling.name}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("spelling", NON_CANONICAL_SPELLINGS, ids=lambda s: s.name)
@pytest.mark.parametrize("email", [A2, B1, VISITOR])
def test_behind_the_up_front_refusal_mlflows_permissions_still_hold_for_every_spelling(
    accepting_world: World, email: str, spelling: Spelling
) -> None:
    """With non-canonical spellings let through (test-only switch), MLflow's validators and its
    fail-closed net still decide each cell as the configuration says, after routing."""
    wrong = wrong_cells(accepting_world, email, spelling)
    assert wrong == [], f"others={accepting_world.others}, {email}, {spelling.name}:\n" + "\n".join(wrong)


# --- who the user is ---------------------------------------------------------------------------


def test_mlflow_knows_each_caller_as_iaps_verified_user_and_no_client_can_claim_another(world: World) -> None:
    """users/current (what MLflow's UI shows) is the verified e-mail; the server's own header,
    sent by a client in any spelling WSGI would read alike, changes nothing."""
    for email in (BOSS, A1, VISITOR):
        caller = world.caller(email)
        headers = {
            **world.signer.headers(email),
            "x-mlflow-iap-verified-user": BOSS,
            "X_MLFLOW_IAP_VERIFIED_USER": BOSS,
        }
        me = requests.get(f"{world.server.url}/ajax-api/2.0/mlflow/users/current", headers=headers, timeout=30).json()[
            "user"
        ]
        assert (me["username"], me["is_admin"]) == (email, email == BOSS)
        team_a = world.teams["team-a"]
        logged = requests.post(
            f"{world.server.url}/api/2.0/mlflow/runs/log-metric",
            json={"run_id": team_a.run_id, "key": "loss", "value": 9.0, "timestamp": 3},
            headers={**headers, "X-MLflow-Workspace": team_a.workspace},
            timeout=30,
        )
        assert logged.status_code == (200 if email in (BOSS, A1) else 403), caller.email


def test_mlflows_user_and_role_apis_are_for_admins_only(world: World) -> None:
    for email, status in ((A1, 403), (VISITOR, 403), (BOSS, 200)):
        listed = world.caller(email).call("GET", "users/list", None)
        assert listed.status_code == status, email
    users = {u["username"] for u in world.caller(BOSS).ok("GET", "users/list", None)["users"]}
    assert {BOSS, "iap-bootstrap-admin"} <= users


def test_only_an_admin_may_create_a_workspace_the_ui_offers_everyone_to_create(world: World) -> None:
    """MLflow's UI shows every user a "Create workspace" button; MLflow's auth app refuses all but admins."""
    for prefix in ("/api", "/ajax-api"):
        for email in (A1, CI, B1, VISITOR):
            made = world.caller(email).send(
                "POST", f"{prefix}/3.0/mlflow/workspaces", None, json_body={"name": "rogue"}
            )
            assert made.status_code == 403, (email, prefix, made.status_code, made.text)
    boss, name = world.caller(BOSS), f"admin-made-{world.others}"
    listed = boss.send("GET", "/api/3.0/mlflow/workspaces", None)
    assert listed.status_code == 200 and {"team-a", "team-b"} <= {w["name"] for w in listed.json()["workspaces"]}
    assert "rogue" not in {w["name"] for w in listed.json()["workspaces"]}
    made = boss.send("POST", "/api/3.0/mlflow/workspaces", None, json_body={"name": name})
    assert made.status_code == 201, made.text
    assert boss.send("DELETE", f"/api/3.0/mlflow/workspaces/{name}", None).status_code == 204


def test_a_role_an_admin_assigns_or_unassigns_through_mlflow_holds_from_the_next_request(world: World) -> None:
    """The server keeps users and grants for a few seconds (iap_access.LOOKUP_CACHE_SECONDS), but a
    write through MLflow's own APIs empties what this process keeps: no window after a revocation."""
    boss, a1, b = world.caller(BOSS), world.caller(A1), world.teams["team-b"]
    roles = "/api/3.0/mlflow/roles"

    def log_metric() -> int:
        body = {"run_id": b.run_id, "key": "by-hand", "value": 1.0, "timestamp": 1}
        return a1.call("POST", "runs/log-metric", b.workspace, body=body).status_code

    created = boss.send("POST", f"{roles}/create", None, json_body={"name": "by-hand", "workspace": b.workspace})
    assert created.status_code == 200, created.text
    role_id = created.json()["role"]["id"]
    try:
        grant = {"role_id": role_id, "resource_type": "experiment", "resource_pattern": "*", "permission": "EDIT"}
        assert boss.send("POST", f"{roles}/permissions/add", None, json_body=grant).status_code == 200
        assert log_metric() == 403  # and A1's grants in team-b are now kept by the server
        assignment = {"username": A1, "role_id": role_id}
        assert boss.send("POST", f"{roles}/assign", None, json_body=assignment).status_code == 200
        assert log_metric() == 200
        assert boss.send("DELETE", f"{roles}/unassign", None, json_body=assignment).status_code == 200
        assert log_metric() == 403
    finally:
        assert boss.send("DELETE", f"{roles}/delete", None, json_body={"role_id": role_id}).status_code == 200


# --- groups ------------------------------------------------------------------------------------


GroupServer = Callable[[dict[str, str]], tuple[ServerProcess, dict[str, str]]]


@pytest.fixture
def group_server(
    start_server: Launcher, new_migrated_database: Callable[[], Database], signer: IapSigner
) -> GroupServer:
    """Starts a server with [access] (the environment it is given), and returns it with a run the
    admin made in each team's workspace."""

    def start(env: dict[str, str]) -> tuple[ServerProcess, dict[str, str]]:
        server = start_server(new_migrated_database(), **env)
        server.wait_healthy(timeout=180)
        boss, runs = Caller(server, signer, BOSS), {}
        for workspace in TEAMS:
            experiment_id = boss.ok("POST", "experiments/create", workspace, {"name": "groups"})["experiment_id"]
            run = boss.ok("POST", "runs/create", workspace, {"experiment_id": experiment_id})
            runs[workspace] = run["run"]["info"]["run_id"]
        return server, runs

    return start


def log_metric(caller: Caller, run_id: str, workspace: str) -> tuple[int, float]:
    """The status of logging a metric to `run_id`, and when (time.monotonic()) it came."""
    body = {"run_id": run_id, "key": "loss", "value": 0.3, "timestamp": 5}
    status = caller.call("POST", "runs/log-metric", workspace, body=body).status_code
    return status, time.monotonic()


def wait_for_answer(caller: Caller, run_id: str, workspace: str, status: int, timeout: float) -> float:
    """Seconds until logging a metric to `run_id` answers `status`."""
    start = time.monotonic()
    while True:
        got, done = log_metric(caller, run_id, workspace)
        if got == status:
            return done - start
        assert time.monotonic() - start < timeout, f"{caller.email}: still {got} after {timeout} s, expected {status}"
        time.sleep(0.2)


def test_group_membership_changed_while_the_server_runs_takes_effect_within_the_ttl(
    group_server: GroupServer,
    signer: IapSigner,
    cloud_identity: FakeCloudIdentity,
    access_env: Callable[..., dict[str, str]],
) -> None:
    model = access_model("none")
    model["teams"].append({"name": "hidden", "workspace": "hidden", "members": ["group:secret-team@example.com"]})
    cloud_identity.groups |= {TEAM_A_GROUP: {A2}, "secret-team@example.com": {VISITOR}}
    cloud_identity.unreadable = {"secret-team@example.com"}
    server, runs = group_server(access_env("none", model))
    assert (
        "start.sh: cannot read group secret-team@example.com (403 Forbidden); its members get nothing until the server's "
        "service account may read its memberships (docs/security.md: Teams and permissions)" in server.log()
    )
    run_id = runs["team-a"]
    visitor, a2 = Caller(server, signer, VISITOR), Caller(server, signer, A2)
    try:
        since = time.monotonic()
        for _ in range(6):
            wait_for_answer(a2, run_id, "team-a", 200, 0)
        received = [r for r, _ in sorted(cloud_identity.spans[(TEAM_A_GROUP, A2)]) if r >= since]
        # six requests take well under a second; a refresh (at half the TTL) may add a check, no more
        assert all(b - a >= GROUPS_TTL / 3 for a, b in itertools.pairwise(received)), (
            "memberships are looked up per request"
        )
        wait_for_answer(visitor, run_id, "team-a", 403, 0)

        cloud_identity.groups[TEAM_A_GROUP] = {A2, VISITOR}
        assert wait_for_answer(visitor, run_id, "team-a", 200, timeout=GROUPS_TTL + 2) <= GROUPS_TTL + 1
        cloud_identity.groups[TEAM_A_GROUP] = {VISITOR}
        assert wait_for_answer(a2, run_id, "team-a", 403, timeout=GROUPS_TTL + 2) <= GROUPS_TTL + 1
    finally:
        cloud_identity.groups[TEAM_A_GROUP] = {A2}
        cloud_identity.unreadable = set()


def test_a_slow_cloud_identity_holds_up_neither_a_known_users_requests_nor_another_users_first_one(
    group_server: GroupServer,
    signer: IapSigner,
    cloud_identity: FakeCloudIdentity,
    access_env: Callable[..., dict[str, str]],
) -> None:
    """A known user is answered from what the server holds while a refresh asks in the background;
    a user seen for the first time waits for their own lookup only, made once however many requests
    they send at once."""
    known, slow, fast, twin = (f"{who}@example.com" for who in ("known", "slow", "fast", "twin"))
    cloud_identity.groups[TEAM_A_GROUP] = {A2, known, slow, fast, twin}
    server, runs = group_server(access_env("none"))
    run, ws = runs["team-a"], "team-a"
    try:
        assert log_metric(Caller(server, signer, known), run, ws)[0] == 200
        known_checks = cloud_identity.spans[(TEAM_A_GROUP, known)]
        first_asked = known_checks[0][0]
        cloud_identity.delay = 2.5
        took: list[tuple[float, int, float]] = []
        while len(known_checks) == 1 and time.monotonic() < first_asked + 2 * GROUPS_TTL + 1:
            start = time.monotonic()
            status, done = log_metric(Caller(server, signer, known), run, ws)
            took.append((round(start - first_asked, 2), status, round(done - start, 2)))
            time.sleep(0.2)
        assert len(known_checks) > 1, "its answers were refreshed in the background"
        assert any(start > GROUPS_TTL for start, _, _ in took), "served past the TTL while the refresh asked"
        assert all(status == 200 for _, status, _ in took) and max(s for _, _, s in took) < 2.0, took  # a wait: 2.5

        cloud_identity.delay, cloud_identity.member_delay = 0.0, {slow: 2.5, twin: 1.0}
        with ThreadPoolExecutor(4) as pool:
            slow_first = pool.submit(log_metric, Caller(server, signer, slow), run, ws)
            time.sleep(0.5)
            status, done = log_metric(Caller(server, signer, fast), run, ws)
            assert status == 200 and slow_first.result()[0] == 200
            slow_answered = cloud_identity.spans[(TEAM_A_GROUP, slow)][0][1]
            assert done < slow_answered, "the new user's request was held up by another user's lookup"
            statuses = list(pool.map(lambda _: log_metric(Caller(server, signer, twin), run, ws)[0], range(4)))
        twin_checks = sorted(cloud_identity.spans[(TEAM_A_GROUP, twin)])
        first_answered = twin_checks[0][1]
        assert statuses == [200] * 4
        assert [r for r, _ in twin_checks if r < first_answered] == [twin_checks[0][0]], "one lookup for four requests"
    finally:
        cloud_identity.delay, cloud_identity.member_delay = 0.0, {}
        cloud_identity.groups[TEAM_A_GROUP] = {A2}


@pytest.mark.parametrize("outage", [503, "drop"], ids=["503", "connection-dropped"])
def test_in_a_cloud_identity_outage_members_keep_their_rights_one_more_ttl_and_newcomers_get_nothing_from_groups(
    group_server: GroupServer,
    signer: IapSigner,
    cloud_identity: FakeCloudIdentity,
    access_env: Callable[..., dict[str, str]],
    outage: int | str,
) -> None:
    """The last answer is kept until it is 2 TTL old, then the member gets nothing from the group
    (fail closed); one log line says so for the group, one when it answers again. A user first seen
    in the outage gets what their user: membership grants, and nothing from groups."""
    member, newcomer, named = (f"{who}-{outage}@example.com" for who in ("member", "newcomer", "named"))
    model = access_model("none")
    model["teams"][1]["members"].append(f"user:{named}")
    cloud_identity.groups[TEAM_A_GROUP] = {A2, member, newcomer, named}
    server, runs = group_server(access_env("none", model))
    team_a, team_b = runs["team-a"], runs["team-b"]
    try:
        asked = time.monotonic()
        assert log_metric(Caller(server, signer, member), team_a, "team-a")[0] == 200
        cloud_identity.outage = outage
        assert log_metric(Caller(server, signer, newcomer), team_a, "team-a")[0] == 403
        assert log_metric(Caller(server, signer, named), team_b, "team-b")[0] == 200
        assert log_metric(Caller(server, signer, named), team_a, "team-a")[0] == 403

        seen: list[tuple[int, float]] = []
        while not seen or seen[-1][0] != 403:
            seen.append(log_metric(Caller(server, signer, member), team_a, "team-a"))
            assert seen[-1][1] - asked < 2 * GROUPS_TTL + 2, f"still {seen[-1][0]} 2 TTL after the last answer"
            time.sleep(0.2)
        assert {status for status, _ in seen[:-1]} == {200} and seen[-1][1] - asked >= 2 * GROUPS_TTL, seen
        said = [line for line in server.log().splitlines() if f"iap_access: cannot read group {TEAM_A_GROUP} (" in line]
        assert len(said) == 1 and f"keep what they had for at most {GROUPS_TTL} s more" in said[0], said

        cloud_identity.outage = None
        wait_for_answer(Caller(server, signer, member), team_a, "team-a", 200, timeout=GROUPS_TTL + 1)
        wait_for_answer(Caller(server, signer, newcomer), team_a, "team-a", 200, timeout=GROUPS_TTL + 1)
        assert f"iap_access: group {TEAM_A_GROUP} answers again" in server.log()
    finally:
        cloud_identity.outage = None
        cloud_identity.groups[TEAM_A_GROUP] = {A2}


# --- applied at start, refused at start --------------------------------------------------------


def test_a_restart_with_another_model_adds_and_removes_grants_to_match(
    start_server: Launcher,
    new_database: Callable[[], Database],
    signer: IapSigner,
    access_env: Callable[..., dict[str, str]],
) -> None:
    db = new_database()
    migrate(db)
    server = start_server(db, **access_env("read"))
    server.wait_healthy(timeout=180)
    boss, b1 = Caller(server, signer, BOSS), Caller(server, signer, B1)
    experiment_id = boss.ok("POST", "experiments/create", "team-a", {"name": "shared"})["experiment_id"]
    assert b1.call("GET", "experiments/get", "team-a", body={"experiment_id": experiment_id}).status_code == 200
    server.terminate(timeout=30)

    for others, status in (("none", 403), ("read", 200)):
        server = start_server(db, **access_env(others))
        server.wait_healthy(timeout=180)
        assert (
            Caller(server, signer, B1)
            .call("GET", "experiments/get", "team-a", body={"experiment_id": experiment_id})
            .status_code
            == status
        ), others
        server.terminate(timeout=30)


def refused_start(
    db: Database, access_env: Callable[..., dict[str, str]], tmp_path: Path, **change: str
) -> subprocess.CompletedProcess[str]:
    """start.sh with [access] (`others = "none"`) on `db`, `change` on top: it must refuse (exit 1)."""
    env = {
        **access_env("none"),
        "MLFLOW_BACKEND_STORE_URI": db.uri,
        "PORT": "1",
        "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path),
        **change,
    }
    result = run_script(START_SH, script_env(**env))
    assert result.returncode == 1, result.stderr
    return result


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"MLFLOW_IAP_ACCESS": "{"}, "start.sh: MLFLOW_IAP_ACCESS is not JSON: "),
        (
            {"MLFLOW_IAP_ACCESS": json.dumps({"teams": [{"name": "A", "workspace": "a", "members": []}]})},
            "start.sh: MLFLOW_IAP_ACCESS: teams[0].name must be 2-63 lower-case letters",
        ),
        (
            {"MLFLOW_IAP_ACCESS": json.dumps({"others": "write"})},
            "start.sh: MLFLOW_IAP_ACCESS: others must be none or read, got 'write'",
        ),
        (
            {"MLFLOW_IAP_ACCESS": json.dumps({"admins": ["alice@example.com"]})},
            "start.sh: MLFLOW_IAP_ACCESS: admins has 'alice@example.com'; write user:EMAIL, group:EMAIL or serviceAccount:EMAIL",
        ),
        (
            {"MLFLOW_IAP_VERIFICATION": "off", "MLFLOW_IAP_AUDIENCE": ""},
            "start.sh: MLFLOW_IAP_ACCESS needs MLFLOW_IAP_VERIFICATION=on: the user is the IAP-verified e-mail",
        ),
        (
            {"MLFLOW_AUTH_ADMIN_PASSWORD": "short"},
            "start.sh: MLFLOW_AUTH_ADMIN_PASSWORD must be set (12 characters or more)",
        ),
        (
            {"MLFLOW_BASIC_AUTH_FAIL_CLOSED": "false"},
            "start.sh: MLFLOW_BASIC_AUTH_FAIL_CLOSED must stay on with MLFLOW_IAP_ACCESS",
        ),
        (
            {"MLFLOW_IAP_ACCESS_GROUPS_TTL_SECONDS": "600"},
            "start.sh: MLFLOW_IAP_ACCESS_GROUPS_TTL_SECONDS must be a whole number of seconds from 1 to 300, got '600'",
        ),
    ],
    ids=[
        "not-json",
        "bad-team-name",
        "bad-others",
        "bare-email",
        "verification-off",
        "short-admin-password",
        "fail-open",
        "ttl-over-5-min",
    ],
)
def test_a_malformed_access_setting_stops_the_start_with_one_line_and_writes_nothing(
    postgres,
    new_database: Callable[[], Database],
    access_env: Callable[..., dict[str, str]],
    tmp_path: Path,
    change: dict,
    message: str,
) -> None:
    db = new_database()
    migrate(db)
    result = refused_start(db, access_env, tmp_path, **change)
    lines = [line for line in result.stderr.splitlines() if line.startswith("start.sh:")]
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    # migrate.sh made MLflow's auth tables; the refused start put nothing in them, and made no workspace.
    written = "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM roles) + (SELECT count(*) FROM workspaces WHERE name <> 'default')"
    assert postgres.query(written, dbname=db.name)[0][0] == 0


# --- upgrade -----------------------------------------------------------------------------------


class SignedAs(RequestHeaderProvider):
    """MLflow's client through the IAP stand-in, as `email`."""

    def __init__(self, signer: IapSigner, email: str) -> None:
        self.signer, self.email = signer, email

    def in_context(self) -> bool:
        return True

    def request_headers(self) -> dict[str, str]:
        return self.signer.headers(self.email)


def test_a_single_team_database_reads_back_whole_once_teams_are_configured(
    start_server: Launcher,
    new_database: Callable[[], Database],
    signer: IapSigner,
    access_env: Callable[..., dict[str, str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a server without [access] holds is MLflow's default workspace; the team given workspace
    "default" reads it all back, through the same artifact paths; another team sees none of it."""
    db = new_database()
    migrate(db)
    artifacts = str(tmp_path / "artifacts")
    no_access = {k: v for k, v in access_env("none").items() if not k.startswith(("MLFLOW_IAP_ACCESS", "MLFLOW_AUTH"))}
    provider = SignedAs(signer, A1)
    _request_header_provider_registry.register(lambda: provider)
    try:
        server = start_server(db, MLFLOW_ARTIFACTS_DESTINATION=artifacts, **no_access)
        server.wait_healthy(timeout=180)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        mlflow.set_tracking_uri(server.url)
        upgrade_data.populate()
        before = upgrade_data.snapshot()
        server.terminate(timeout=30)

        server = start_server(
            db, MLFLOW_ARTIFACTS_DESTINATION=artifacts, **access_env("none", access_model("none", "default"))
        )
        server.wait_healthy(timeout=180)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        mlflow.set_tracking_uri(server.url)
        after = upgrade_data.snapshot()
        provider.email = B1
        assert MlflowClient(server.url).search_experiments() == [], "team B sees nothing of the default workspace"
    finally:
        _request_header_provider_registry._registry.remove(provider)
        mlflow.set_tracking_uri(None)
    assert after == before
    runs = [run for e in before["experiments"] for run in e["runs"]]
    assert len(runs) == 6 and all(run["artifacts"] for run in runs if run["tags"].get("kind") == "parent")
    assert [v["version"] for v in before["model"]["versions"]] == ["1", "2"] and before["model"]["champion"] == "2"


def test_the_author_rules_keep_working_under_mlflows_permissions(world: World) -> None:
    """Who created a run, and who moved an alias, is still the verified caller (iap_identity.py)."""
    team = world.teams["team-a"]
    for email in (A1, CI):
        caller = world.caller(email)
        run = caller.ok(
            "POST", "runs/create", team.workspace, {"experiment_id": team.experiment_id, "user_id": "someone-else"}
        )
        tags = {t["key"]: t["value"] for t in run["run"]["data"]["tags"]}
        assert (run["run"]["info"]["user_id"], tags["mlflow.user"], tags["mlflow.user.client_claimed"]) == (
            email,
            email,
            "someone-else",
        )
        caller.ok(
            "POST", "registered-models/alias", team.workspace, {"name": team.model, "alias": "champion", "version": "1"}
        )
        model = caller.ok("GET", "registered-models/get", team.workspace, {"name": team.model})["registered_model"]
        assert {t["key"]: t["value"] for t in model["tags"]}["mlflow.alias.champion.changed_by"] == email


def test_without_mlflows_auth_tables_the_server_refuses_to_make_them_itself(
    postgres, new_database: Callable[[], Database], access_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    """migrate.sh makes them (the migration job); a database only `mlflow db upgrade` brought up has none."""
    db = new_database()
    upgraded = subprocess.run(
        [str(VENV_BIN / "mlflow"), "db", "upgrade", db.tcp_uri], env=script_env(), capture_output=True, text=True
    )
    assert upgraded.returncode == 0, upgraded.stderr
    result = refused_start(db, access_env, tmp_path)
    assert (
        "start.sh: MLflow's auth tables (alembic_version_auth) are missing, this MLflow needs revision "
        in result.stderr
    )
    assert postgres.query("SELECT to_regclass('public.users') IS NULL", dbname=db.name)[0][0]
    migrate(db)
    assert not postgres.query("SELECT to_regclass('public.users') IS NULL", dbname=db.name)[0][0], (
        "migrate.sh makes them"
    )
