"""Teams on one server, as the tests of docker/iap_access.py see it: who is who, the [access] model
they are configured with, a caller signed by the local IAP stand-in, and the world each test starts
(a start.sh server with [access] on a real PostgreSQL, one experiment, run, artifact and registered
model seeded by the admin in each team's workspace). Shared by test_iap_access.py (the permission
matrix) and test_access_ui.py (the same in MLflow's UI). Fixtures: tests/server/conftest.py.

Who is who: A1 is named in team A, A2 is in team A through a group, CI is team A's keyless CI
service account, B1 is team B's, BOSS is an admin, VISITOR is admitted by IAP but in no team.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import requests

from tests.server.iap_signer import IapSigner
from tests.server.proc import ServerProcess

if TYPE_CHECKING:  # conftest.py imports this module for its fixtures
    from tests.server.conftest import Database, Launcher

A1, A2, B1 = "a1@example.com", "a2@example.com", "b1@example.com"
CI = "ci-team-a@example-project.iam.gserviceaccount.com"
BOSS, VISITOR = "boss@example.com", "visitor@example.com"
TEAM_A_GROUP = "team-a-people@example.com"
IDENTITIES = [A1, A2, CI, B1, BOSS, VISITOR]
ADMIN_PASSWORD = "bootstrap-admin-secret-0123456789"
GROUPS_TTL = 3


def access_model(others: str, team_a_workspace: str = "team-a") -> dict:
    return {
        "admins": [f"user:{BOSS}"],
        "others": others,
        "teams": [
            {
                "name": "team-a",
                "workspace": team_a_workspace,
                "members": [f"user:{A1}", f"group:{TEAM_A_GROUP}", f"serviceAccount:{CI}"],
            },
            {"name": "team-b", "workspace": "team-b", "members": [f"user:{B1}"]},
        ],
    }


@dataclass
class Caller:
    """Requests to one server as one IAP-verified identity, in one workspace."""

    server: ServerProcess
    signer: IapSigner
    email: str

    def headers(self, workspace: str | None) -> dict[str, str]:
        """A fresh IAP assertion for this identity, and the workspace the request is in (if any)."""
        return self.signer.headers(self.email) | ({"X-MLflow-Workspace": workspace} if workspace else {})

    def call(
        self, method: str, endpoint: str, workspace: str | None, *, prefix: str = "/api", body: dict | None = None, **kw
    ):
        headers = self.headers(workspace)
        url = f"{self.server.url}{prefix}/2.0/mlflow/{endpoint}"
        if method.upper() == "GET":
            return requests.request(method, url, params=body, headers=headers, timeout=30, **kw)
        return requests.request(method, url, json=body, headers=headers, timeout=30, **kw)

    def ok(self, method: str, endpoint: str, workspace: str | None, body: dict | None = None) -> dict:
        response = self.call(method, endpoint, workspace, body=body)
        assert response.status_code == 200, f"{self.email} {method} {endpoint}: {response.status_code} {response.text}"
        return response.json()

    def send(
        self,
        method: str,
        path: str,
        workspace: str | None,
        *,
        json_body: dict | None = None,
        params: dict | None = None,
        data: bytes | None = None,
    ):
        """`method` exactly as spelled (requests would upper-case it), to `path` exactly as written."""
        request = requests.Request(
            "GET", f"{self.server.url}{path}", json=json_body, params=params, data=data, headers=self.headers(workspace)
        ).prepare()
        request.method = method
        with requests.Session() as session:
            return session.send(request, timeout=30)


# --- the world each test runs in ----------------------------------------------------------------

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
    experiment_id = boss.ok("POST", "experiments/create", workspace, {"name": f"{workspace}-experiment"})[
        "experiment_id"
    ]
    run = boss.ok("POST", "runs/create", workspace, {"experiment_id": experiment_id})["run"]["info"]
    boss.ok(
        "POST", "runs/log-metric", workspace, {"run_id": run["run_id"], "key": "loss", "value": 0.5, "timestamp": 1}
    )
    # mlflow-artifacts:/workspaces/WS/EXP/RUN/artifacts: what the proxied artifact API serves under its root.
    root = run["artifact_uri"].removeprefix("mlflow-artifacts:/")
    assert root == f"workspaces/{workspace}/{experiment_id}/{run['run_id']}/artifacts", (
        "each workspace has its own artifact prefix"
    )
    artifact_path = f"{root}/notes.txt"
    upload = boss.send(
        "PUT", f"/api/2.0/mlflow-artifacts/artifacts/{artifact_path}", workspace, data=workspace.encode()
    )
    assert upload.status_code == 200, upload.text
    model = f"{workspace}-model"
    boss.ok("POST", "registered-models/create", workspace, {"name": model})
    source = f"{run['artifact_uri']}/model"
    boss.ok("POST", "model-versions/create", workspace, {"name": model, "source": source, "run_id": run["run_id"]})
    boss.ok("POST", "registered-models/alias", workspace, {"name": model, "alias": "champion", "version": "1"})
    return TeamResources(workspace, experiment_id, run["run_id"], artifact_path, model)


def start_world(
    others: str,
    launcher: Launcher,
    new_migrated_database: Callable[[], Database],
    signer: IapSigner,
    access_env: Callable[[str], dict[str, str]],
    **extra_env: str,
) -> World:
    server = launcher(new_migrated_database(), **access_env(others), **extra_env)
    server.wait_healthy(timeout=180)
    boss = Caller(server, signer, BOSS)
    return World(others, server, signer, {ws: seed(boss, ws) for ws in TEAMS})
