"""Teams on one server (docker/iap_access.py): IAP's verified user is MLflow's authenticated user and
MLflow's own auth app decides. A start.sh server with [access] on a real PostgreSQL, assertions
signed by the local IAP stand-in, groups answered by a fake Cloud Identity on loopback.

Who is who: A1 is named in team A, A2 is in team A through a group, CI is team A's keyless CI
service account, B1 is team B's, BOSS is an admin, VISITOR is admitted by IAP but in no team.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.server.conftest import Database, Launcher, migrate
from tests.server.fake_cloud_identity import FakeCloudIdentity
from tests.server.fake_metadata import FakeMetadataServer
from tests.server.iap_signer import AUDIENCE, IapSigner
from tests.server.proc import ServerProcess

A1, A2, B1 = "a1@example.com", "a2@example.com", "b1@example.com"
CI = "ci-team-a@example-project.iam.gserviceaccount.com"
BOSS, VISITOR = "boss@example.com", "visitor@example.com"
TEAM_A_GROUP = "team-a-people@example.com"
IDENTITIES = [A1, A2, CI, B1, BOSS, VISITOR]
ADMIN_PASSWORD = "bootstrap-admin-secret-0123456789"
GROUPS_TTL = 3


def access_model(others: str) -> dict:
    return {
        "admins": [f"user:{BOSS}"],
        "others": others,
        "teams": [
            {"name": "team-a", "workspace": "team-a", "members": [f"user:{A1}", f"group:{TEAM_A_GROUP}", f"serviceAccount:{CI}"]},
            {"name": "team-b", "workspace": "team-b", "members": [f"user:{B1}"]},
        ],
    }


@pytest.fixture(scope="module")
def metadata() -> Iterator[FakeMetadataServer]:
    server = FakeMetadataServer(token="ya29.groups-reader").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cloud_identity(metadata: FakeMetadataServer) -> Iterator[FakeCloudIdentity]:
    fake = FakeCloudIdentity(token=metadata.token, groups={TEAM_A_GROUP: {A2}}).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def access_env(
    signer: IapSigner, metadata: FakeMetadataServer, cloud_identity: FakeCloudIdentity, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], dict[str, str]]:
    gcloud = tmp_path_factory.mktemp("gcloud")

    def env(others: str) -> dict[str, str]:
        return {
            "MLFLOW_IAP_VERIFICATION": "on",
            "MLFLOW_IAP_AUDIENCE": AUDIENCE,
            "MLFLOW_IAP_TEST_KEYS_URL": signer.keys_url,
            "MLFLOW_IAP_ACCESS": json.dumps(access_model(others)),
            "MLFLOW_IAP_ACCESS_GROUPS_TTL_SECONDS": str(GROUPS_TTL),
            "MLFLOW_IAP_TEST_CLOUD_IDENTITY_URL": cloud_identity.url,
            "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
            **metadata.environment(gcloud),
        }

    return env


@dataclass
class Caller:
    """Requests to one server as one IAP-verified identity, in one workspace."""

    server: ServerProcess
    signer: IapSigner
    email: str

    def call(self, method: str, endpoint: str, workspace: str | None, *, prefix: str = "/api", body: dict | None = None, **kw):
        headers = self.signer.headers(self.email)
        if workspace:
            headers["X-MLflow-Workspace"] = workspace
        url = f"{self.server.url}{prefix}/2.0/mlflow/{endpoint}"
        if method.upper() == "GET":
            return requests.request(method, url, params=body, headers=headers, timeout=30, **kw)
        return requests.request(method, url, json=body, headers=headers, timeout=30, **kw)

    def ok(self, method: str, endpoint: str, workspace: str | None, body: dict | None = None) -> dict:
        response = self.call(method, endpoint, workspace, body=body)
        assert response.status_code == 200, f"{self.email} {method} {endpoint}: {response.status_code} {response.text}"
        return response.json()

    def send(self, method: str, path: str, workspace: str | None, *, json_body: dict | None = None, params: dict | None = None, data: bytes | None = None):
        """`method` exactly as spelled (requests would upper-case it), to `path` exactly as written."""
        headers = self.signer.headers(self.email)
        if workspace:
            headers["X-MLflow-Workspace"] = workspace
        request = requests.Request("GET", f"{self.server.url}{path}", json=json_body, params=params, data=data, headers=headers).prepare()
        request.method = method
        with requests.Session() as session:
            return session.send(request, timeout=30)


# --- the world each matrix runs in -------------------------------------------------------------

TEAMS = {"team-a": [A1, A2, CI], "team-b": [B1]}
TEAM_OF = {member: team for team, members in TEAMS.items() for member in members}


@dataclass(frozen=True)
class TeamResources:
    """What the admin made in one team's workspace: an experiment with a run (a metric, an
    artifact), a registered model with version 1 from that run, alias champion on it."""

    workspace: str
    experiment_id: str
    run_id: str
    artifact_path: str
    model: str


@dataclass(frozen=True)
class World:
    others: str
    server: ServerProcess
    signer: IapSigner
    teams: dict[str, TeamResources]

    def caller(self, email: str) -> Caller:
        return Caller(self.server, self.signer, email)


def seed(boss: Caller, workspace: str) -> TeamResources:
    experiment_id = boss.ok("POST", "experiments/create", workspace, {"name": f"{workspace}-experiment"})["experiment_id"]
    run = boss.ok("POST", "runs/create", workspace, {"experiment_id": experiment_id})["run"]["info"]
    boss.ok("POST", "runs/log-metric", workspace, {"run_id": run["run_id"], "key": "loss", "value": 0.5, "timestamp": 1})
    # mlflow-artifacts:/workspaces/WS/EXP/RUN/artifacts: what the proxied artifact API serves under its root.
    root = run["artifact_uri"].removeprefix("mlflow-artifacts:/")
    assert root == f"workspaces/{workspace}/{experiment_id}/{run['run_id']}/artifacts", "each workspace has its own artifact prefix"
    artifact_path = f"{root}/notes.txt"
    upload = boss.send("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{artifact_path}", workspace, data=workspace.encode())
    assert upload.status_code == 200, upload.text
    model = f"{workspace}-model"
    boss.ok("POST", "registered-models/create", workspace, {"name": model})
    source = f"{run['artifact_uri']}/model"
    boss.ok("POST", "model-versions/create", workspace, {"name": model, "source": source, "run_id": run["run_id"]})
    boss.ok("POST", "registered-models/alias", workspace, {"name": model, "alias": "champion", "version": "1"})
    return TeamResources(workspace, experiment_id, run["run_id"], artifact_path, model)


@pytest.fixture(scope="module", params=["none", "read"])
def world(
    request: pytest.FixtureRequest,
    module_launcher: Launcher,
    new_database: Callable[[], Database],
    signer: IapSigner,
    access_env: Callable[[str], dict[str, str]],
) -> World:
    db = new_database()
    migrate(db)
    server = module_launcher(db, **access_env(request.param))
    server.wait_healthy(timeout=180)
    boss = Caller(server, signer, BOSS)
    return World(request.param, server, signer, {ws: seed(boss, ws) for ws in TEAMS})


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


SPELLINGS = [
    Spelling("api", "/api"),
    Spelling("ajax-api", "/ajax-api"),
    Spelling("double-slash", "//api"),
    Spelling("lower-case-method", "/api", lower_case=True),
]


def attempt(world: World, email: str, team: TeamResources, operation: str, spelling: Spelling) -> bool | str:
    """True: done; False: refused (403); a string: any other answer, which no cell expects."""
    caller, ws, how = world.caller(email), team.workspace, spelling

    def call(method: str, endpoint: str, body: dict):
        path = f"{how.prefix}/2.0/mlflow/{endpoint}"
        if method == "GET":
            return caller.send(how.method("GET"), path, ws, params=body)
        return caller.send(how.method(method), path, ws, json_body=body)

    if operation == "delete run":  # a run of its own, made by the admin, for each attempt
        victim = world.caller(BOSS).ok("POST", "runs/create", ws, {"experiment_id": team.experiment_id})["run"]["info"]["run_id"]
    response = {
        "list": lambda: call("GET", "experiments/search", {"max_results": 100}),
        "read": lambda: call("GET", "experiments/get", {"experiment_id": team.experiment_id}),
        "create run": lambda: call("POST", "runs/create", {"experiment_id": team.experiment_id}),
        "log metric": lambda: call("POST", "runs/log-metric", {"run_id": team.run_id, "key": "loss", "value": 0.1, "timestamp": 2}),
        "delete run": lambda: call("POST", "runs/delete", {"run_id": victim}),
        "register version": lambda: call(
            "POST", "model-versions/create", {"name": team.model, "source": f"mlflow-artifacts:/{team.artifact_path}", "run_id": team.run_id}
        ),
        "move alias": lambda: call("POST", "registered-models/alias", {"name": team.model, "alias": "champion", "version": "1"}),
        "change stage": lambda: call(
            "POST", "model-versions/transition-stage", {"name": team.model, "version": "1", "stage": "Staging", "archive_existing_versions": False}
        ),
        "read artifact": lambda: caller.send(how.method("GET"), f"{how.prefix}/2.0/mlflow-artifacts/artifacts/{team.artifact_path}", ws),
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


@pytest.mark.parametrize("spelling", SPELLINGS, ids=lambda s: s.name)
@pytest.mark.parametrize("email", IDENTITIES)
def test_each_identity_gets_in_each_workspace_what_the_configuration_says(world: World, email: str, spelling: Spelling) -> None:
    wrong = []
    for team in world.teams.values():
        for operation in (*READS, *WRITES):
            expected, got = allowed(world, email, team, operation), attempt(world, email, team, operation, spelling)
            if got is not expected:
                wrong.append(f"{team.workspace}/{operation}: expected {'allowed' if expected else 'refused'}, got {got}")
    assert wrong == [], f"others={world.others}, {email}, {spelling.name}:\n" + "\n".join(wrong)
