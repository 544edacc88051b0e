"""IAP's signed header, verified by the server, is who MLflow records: a start.sh server with
verification on, its key set served by a local signer standing in for IAP, on its own database.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator

import mlflow
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.tracking.request_header.abstract_request_header_provider import RequestHeaderProvider
from mlflow.tracking.request_header.registry import _request_header_provider_registry

from tests.server.conftest import Database, Launcher, migrate
from tests.server.iap_signer import AUDIENCE, IapSigner
from tests.server.proc import ServerProcess

ALICE = "alice@example.com"
CLIENT_SA = "mlflow-client@example-mlflow-project.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def server(module_launcher: Launcher, new_database: Callable[[], Database], signer: IapSigner) -> ServerProcess:
    db = new_database()
    migrate(db)
    server = module_launcher(
        db, MLFLOW_IAP_VERIFICATION="on", MLFLOW_IAP_AUDIENCE=AUDIENCE, MLFLOW_IAP_TEST_KEYS_URL=signer.keys_url
    )
    server.wait_healthy()
    return server


class SignedByIap(RequestHeaderProvider):
    """Adds a fresh assertion for `email` to each of MLflow's client requests, as IAP does."""

    def __init__(self, signer: IapSigner) -> None:
        self.signer, self.email = signer, ALICE

    def in_context(self) -> bool:
        return True

    def request_headers(self) -> dict[str, str]:
        return self.signer.headers(self.email)


@pytest.fixture(scope="module")
def iap(server: ServerProcess, signer: IapSigner) -> Iterator[SignedByIap]:
    """MLflow's client pointed at the server through the stand-in IAP; set `.email` to switch caller."""
    provider = SignedByIap(signer)
    _request_header_provider_registry.register(lambda: provider)
    try:
        yield provider
    finally:
        _request_header_provider_registry._registry.remove(provider)


@pytest.fixture(scope="module")
def client(server: ServerProcess, iap: SignedByIap) -> MlflowClient:
    return MlflowClient(tracking_uri=server.url, registry_uri=server.url)


def api(server: ServerProcess, endpoint: str, ajax: bool = False) -> str:
    return f"{server.url}/{'ajax-api' if ajax else 'api'}/2.0/mlflow/{endpoint}"


# --- what gets in ------------------------------------------------------------------------------


def test_health_is_answered_without_an_assertion(server: ServerProcess) -> None:
    response = requests.get(f"{server.url}/health", timeout=10)
    assert (response.status_code, response.text) == (200, "OK")


def test_a_request_without_an_assertion_is_refused_401(server: ServerProcess) -> None:
    for path in ["api/2.0/mlflow/experiments/search?max_results=1", "", "ajax-api/2.0/mlflow/users/current"]:
        response = requests.get(f"{server.url}/{path}", timeout=10)
        assert response.status_code == 401, path
        assert response.json()["message"].startswith("no IAP assertion (x-goog-iap-jwt-assertion)")


OTHER_KEY = ec.generate_private_key(ec.SECP256R1())


def unsigned(signer: IapSigner) -> str:
    """A valid assertion's claims under an `alg: none` header, without its signature."""
    _, claims, _ = signer.assertion(ALICE).split(".")
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none"}).encode()).rstrip(b"=").decode()
    return f"{header}.{claims}."


@pytest.mark.parametrize(
    ("case", "make", "reason"),
    [
        ("forged", lambda s: s.assertion(ALICE, key=OTHER_KEY), "bad signature"),
        (
            "signed by an unpublished key",
            lambda s: s.assertion(ALICE, kid="stolen", key=OTHER_KEY),
            "signed with a key that is not IAP's",
        ),
        ("expired", lambda s: s.assertion(ALICE, issued=time.time() - 3600), "expired"),
        ("issued in the future", lambda s: s.assertion(ALICE, issued=time.time() + 600), "issued in the future"),
        (
            "wrong audience",
            lambda s: s.assertion(ALICE, audience="/projects/123456789012/global/backendServices/1"),
            "made for another audience",
        ),
        ("wrong issuer", lambda s: s.assertion(ALICE, issuer="https://accounts.google.com"), "not issued by IAP"),
        ("no e-mail", lambda s: s.assertion(None), "no e-mail claim"),
        ("not a JWT", lambda s: "not-a-jwt", "not a JWT"),
        ("unsigned", unsigned, "not signed with ES256 and a key id"),
    ],
)
def test_an_assertion_that_is_not_iaps_for_this_server_now_is_refused_403(
    server: ServerProcess, signer: IapSigner, case: str, make, reason: str
) -> None:
    response = requests.get(
        api(server, "experiments/search?max_results=1"), headers={"x-goog-iap-jwt-assertion": make(signer)}, timeout=10
    )
    assert response.status_code == 403, case
    assert response.json() == {"error_code": "PERMISSION_DENIED", "message": f"IAP assertion refused: {reason}"}, case


def test_a_valid_assertion_gets_through_and_the_keys_are_fetched_once(server: ServerProcess, signer: IapSigner) -> None:
    for n in range(20):
        kid = f"local-iap-{n % 2}"
        response = requests.get(
            api(server, "experiments/search?max_results=1"), headers=signer.headers(ALICE, kid=kid), timeout=10
        )
        assert response.status_code == 200, response.text
    # Once for the whole module so far: the refusals above used the same cached set.
    assert signer.fetches == 1


# --- who is recorded ---------------------------------------------------------------------------


@pytest.mark.parametrize("caller", [ALICE, CLIENT_SA])
def test_a_run_records_the_verified_caller_though_the_client_claimed_another(
    client: MlflowClient, iap: SignedByIap, caller: str
) -> None:
    iap.email = caller
    experiment_id = client.create_experiment(f"runs-of-{caller}")
    run = client.create_run(experiment_id, tags={"mlflow.user": "root", "team": "ml"})

    stored = client.get_run(run.info.run_id)
    assert stored.info.user_id == caller
    assert stored.data.tags["mlflow.user"] == caller
    assert stored.data.tags["mlflow.user.client_claimed"] == "root"
    assert stored.data.tags["team"] == "ml"


def test_the_fluent_api_run_records_the_caller_not_the_os_user(
    server: ServerProcess, client: MlflowClient, iap: SignedByIap
) -> None:
    iap.email = ALICE
    mlflow.set_tracking_uri(server.url)
    try:
        mlflow.set_experiment("fluent")
        with mlflow.start_run() as run:
            mlflow.log_metric("loss", 0.5)
    finally:
        mlflow.set_tracking_uri(None)
    tags = client.get_run(run.info.run_id).data.tags
    assert tags["mlflow.user"] == ALICE
    assert tags["mlflow.user.client_claimed"] not in ("", ALICE)  # this machine's login name


@pytest.mark.parametrize(
    "encode",
    [
        lambda body: json.dumps(body),
        # MLflow also reads camelCase field names and, from old clients, JSON sent as a JSON string.
        lambda body: json.dumps(
            json.dumps({**{k: v for k, v in body.items() if k != "user_id"}, "userId": body["user_id"]})
        ),
    ],
    ids=["user_id", "userId, double-encoded"],
)
def test_the_ui_path_records_the_caller_over_a_claimed_user_id(
    server: ServerProcess, signer: IapSigner, client: MlflowClient, encode
) -> None:
    experiment_id = client.create_experiment(f"ajax-{time.monotonic_ns()}")
    body = encode({"experiment_id": experiment_id, "user_id": "mallory"})
    headers = {**signer.headers(ALICE), "Content-Type": "application/json"}
    response = requests.post(api(server, "runs/create", ajax=True), data=body, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    run = response.json()["run"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert run["info"]["user_id"] == ALICE
    assert run["info"]["experiment_id"] == experiment_id
    assert (tags["mlflow.user"], tags["mlflow.user.client_claimed"]) == (ALICE, "mallory")


def test_no_client_can_set_or_delete_the_recorded_user_afterwards(client: MlflowClient, iap: SignedByIap) -> None:
    iap.email = ALICE
    run = client.create_run(client.create_experiment("rewrite-history"))
    run_id = run.info.run_id
    attempts = [
        lambda: client.set_tag(run_id, "mlflow.user", "mallory"),
        lambda: client.set_tag(run_id, "mlflow.user.client_claimed", "nobody"),
        lambda: client.delete_tag(run_id, "mlflow.user"),
        lambda: client.log_batch(run_id, tags=[mlflow.entities.RunTag("mlflow.user", "mallory")]),
    ]
    for attempt in attempts:
        with pytest.raises(MlflowException, match="tag mlflow.user(.client_claimed)? is recorded by the server"):
            attempt()
    assert client.get_run(run_id).data.tags["mlflow.user"] == ALICE
    client.set_tag(run_id, "note", "other tags are the client's")


def test_model_versions_aliases_and_stages_record_who_changed_them(client: MlflowClient, iap: SignedByIap) -> None:
    iap.email = ALICE
    run = client.create_run(client.create_experiment("registry"))
    client.create_registered_model("classifier")

    iap.email = "bob@example.com"
    version = client.create_model_version(
        "classifier", f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags={"mlflow.user": "root"}
    )
    iap.email = "carol@example.com"
    client.set_registered_model_alias("classifier", "champion", version.version)
    iap.email = CLIENT_SA
    client.transition_model_version_stage("classifier", version.version, "Staging")

    stored = client.get_model_version("classifier", version.version)
    assert stored.tags["mlflow.user"] == "bob@example.com"
    assert stored.tags["mlflow.user.client_claimed"] == "root"
    assert stored.tags["mlflow.stage.changed_by"] == CLIENT_SA
    assert stored.current_stage == "Staging"
    model = client.get_registered_model("classifier")
    assert model.aliases == {"champion": version.version}
    assert model.tags["mlflow.alias.champion.changed_by"] == "carol@example.com"

    iap.email = "dave@example.com"
    client.delete_registered_model_alias("classifier", "champion")
    model = client.get_registered_model("classifier")
    assert model.aliases == {}
    assert model.tags["mlflow.alias.champion.changed_by"] == "dave@example.com"

    for attempt in [
        lambda: client.set_registered_model_tag("classifier", "mlflow.alias.champion.changed_by", "mallory"),
        lambda: client.delete_registered_model_tag("classifier", "mlflow.alias.champion.changed_by"),
        lambda: client.set_model_version_tag("classifier", version.version, "mlflow.stage.changed_by", "mallory"),
        lambda: client.delete_model_version_tag("classifier", version.version, "mlflow.user"),
    ]:
        with pytest.raises(MlflowException, match="is recorded by the server from IAP's verified identity"):
            attempt()


def test_a_failed_alias_change_records_nothing(client: MlflowClient, iap: SignedByIap) -> None:
    client.create_registered_model("empty")
    with pytest.raises(MlflowException):
        client.set_registered_model_alias("empty", "champion", "7")
    assert "mlflow.alias.champion.changed_by" not in client.get_registered_model("empty").tags


@pytest.mark.parametrize("ajax", [True, False], ids=["ui path", "api path"])
def test_users_current_answers_with_the_verified_caller(server: ServerProcess, signer: IapSigner, ajax: bool) -> None:
    """The path MLflow 3.17's UI asks (its bundle: ajax-api/2.0/mlflow/users/current), in the shape
    of MLflow's own auth app, so the UI shows the account; not an admin, not basic auth (no logout,
    no password change)."""
    response = requests.get(api(server, "users/current", ajax), headers=signer.headers(CLIENT_SA), timeout=10)
    assert response.status_code == 200
    assert response.json() == {"user": {"username": CLIENT_SA, "is_admin": False}, "is_basic_auth": False}


# --- the second line: one spelling only ----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/2.0/mlflow/runs/search"),
        ("Post", "/api/2.0/mlflow/runs/search"),
        ("POST", "//api/2.0/mlflow/runs/search"),
        ("POST", "///ajax-api/2.0/mlflow/runs/search"),
        ("POST", "/api/2.0/mlflow/../mlflow/runs/search"),
        ("GET", "/api/2.0/./mlflow/experiments/search"),
    ],
)
def test_a_non_canonical_request_is_refused_400_up_front(
    server: ServerProcess, signer: IapSigner, method: str, path: str
) -> None:
    """Before verification or routing: the identity rules hold for every spelling (test_identity_attacks.py),
    and a deployed server does not take the others at all."""
    from tests.server.raw_http import TRANSPORTS

    for send in TRANSPORTS.values():
        answer = send(server.port, method, path, {**signer.headers(ALICE), "Content-Type": "application/json"}, b"{}")
        assert answer.status == 400, (method, path, answer.body)
        assert answer.json()["error_code"] == "BAD_REQUEST"


def test_mlflows_own_client_records_the_caller_on_logged_models_and_traces(
    server: ServerProcess, client: MlflowClient, iap: SignedByIap
) -> None:
    """The rewrites keep MLflow's client working: what it sends still parses, and what it claims is kept."""
    iap.email = CLIENT_SA
    experiment_id = client.create_experiment(f"client-{time.monotonic_ns()}")
    model = client.create_logged_model(experiment_id, tags={"mlflow.user": "root"})
    tags = client.get_logged_model(model.model_id).tags
    assert (tags["mlflow.user"], tags["mlflow.user.client_claimed"]) == (CLIENT_SA, "root")

    mlflow.set_tracking_uri(server.url)
    try:
        mlflow.set_experiment(experiment_id=experiment_id)

        @mlflow.trace
        def answer(question: str) -> str:
            mlflow.update_current_trace(metadata={"mlflow.trace.user": "root"})
            return question.upper()

        answer("who?")
        trace_id = mlflow.get_last_active_trace_id()
        mlflow.flush_trace_async_logging()
    finally:
        mlflow.set_tracking_uri(None)
    metadata = client.get_trace(trace_id).info.trace_metadata
    assert (metadata["mlflow.trace.user"], metadata["mlflow.trace.user.client_claimed"]) == (CLIENT_SA, "root")
