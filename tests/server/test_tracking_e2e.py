"""The server as Cloud Run runs it, driven by MLflow's own Python client.

One start.sh server on a migrated database, reached over the Cloud SQL-style unix socket with a
password that needs URL-encoding; artifacts proxied into a directory standing for the GCS mount;
Host header and CORS origin restricted to the service's domain, and IAP's signed header verified
(a local signer stands in for IAP), as Terraform configures them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pytest
import requests
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking.request_header.abstract_request_header_provider import RequestHeaderProvider
from mlflow.tracking.request_header.registry import _request_header_provider_registry

from tests.server.conftest import APP_PASSWORD, SERVER_DOMAIN, Database, Launcher
from tests.server.iap_signer import AUDIENCE, IapSigner
from tests.server.pg import PostgresCluster, url_password
from tests.server.proc import ServerProcess

ORIGIN = f"https://{SERVER_DOMAIN}"
CALLER = "ada@example.com"


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gcs-mount")


@pytest.fixture(scope="module")
def schema_before(postgres: PostgresCluster, migrated_database: Database) -> tuple[set[str], list[tuple]]:
    """The migrated database's tables and revision, taken before this module's server starts."""
    db = migrated_database.name
    return postgres.tables(db), postgres.query("SELECT version_num FROM alembic_version", dbname=db)


@pytest.fixture(scope="module")
def server(
    module_launcher: Launcher, migrated_database: Database, artifact_dir: Path, schema_before: object, signer: IapSigner
) -> ServerProcess:
    server = module_launcher(
        migrated_database,
        MLFLOW_ARTIFACTS_DESTINATION=str(artifact_dir),
        MLFLOW_ALLOWED_HOSTS=SERVER_DOMAIN,
        MLFLOW_CORS_ALLOWED_ORIGINS=ORIGIN,
        MLFLOW_IAP_VERIFICATION="on",
        MLFLOW_IAP_AUDIENCE=AUDIENCE,
        MLFLOW_IAP_TEST_KEYS_URL=signer.keys_url,
    )
    server.wait_healthy()
    return server


class ThroughTheFrontDoor(RequestHeaderProvider):
    """Sends the service's domain as Host and IAP's signed header, as the load balancer in front of
    Cloud Run does."""

    def __init__(self, signer: IapSigner) -> None:
        self.signer = signer

    def in_context(self) -> bool:
        return True

    def request_headers(self) -> dict[str, str]:
        return {"Host": SERVER_DOMAIN, **self.signer.headers(CALLER)}


@pytest.fixture(scope="module")
def client(server: ServerProcess, signer: IapSigner) -> Iterator[MlflowClient]:
    """MLflow's client (and fluent API) pointed at the server, every request through the front door."""
    provider = ThroughTheFrontDoor(signer)
    # MLflow merges the headers of every registered provider into each REST call it makes,
    # artifact uploads and downloads included.
    _request_header_provider_registry.register(lambda: provider)
    mlflow.set_tracking_uri(server.url)
    mlflow.set_registry_uri(server.url)
    try:
        yield MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    finally:
        _request_header_provider_registry._registry.remove(provider)
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


class Doubler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: list[int], params=None) -> list[int]:
        return [2 * x for x in model_input]


# --- who may talk to it ----------------------------------------------------------------------------


def test_health_is_answered_whatever_the_host_header(server: ServerProcess) -> None:
    for host in [SERVER_DOMAIN, "evil.example.net", f"127.0.0.1:{server.port}"]:
        response = requests.get(f"{server.url}/health", headers={"Host": host}, timeout=10)
        assert (response.status_code, response.text) == (200, "OK"), host


def test_api_answers_only_the_configured_host(server: ServerProcess, signer: IapSigner) -> None:
    search = f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    iap = signer.headers(CALLER)
    assert requests.get(search, headers={"Host": SERVER_DOMAIN, **iap}, timeout=10).status_code == 200
    for host in ["evil.example.net", f"127.0.0.1:{server.port}", f"{SERVER_DOMAIN}.evil.example.net"]:
        assert requests.get(search, headers={"Host": host, **iap}, timeout=10).status_code == 403, host


def test_the_api_needs_iaps_signed_header_and_health_does_not(server: ServerProcess) -> None:
    search = f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(search, headers={"Host": SERVER_DOMAIN}, timeout=10).status_code == 401
    assert requests.get(f"{server.url}/health", headers={"Host": SERVER_DOMAIN}, timeout=10).status_code == 200


def test_only_the_configured_origin_may_send_state_changing_requests(server: ServerProcess, signer: IapSigner) -> None:
    search = f"{server.url}/api/2.0/mlflow/experiments/search"
    headers = {"Host": SERVER_DOMAIN, **signer.headers(CALLER)}
    allowed = requests.post(search, json={"max_results": 1}, headers={**headers, "Origin": ORIGIN}, timeout=10)
    assert allowed.status_code == 200
    assert allowed.headers.get("access-control-allow-origin") == ORIGIN
    other = requests.post(
        search, json={"max_results": 1}, headers={**headers, "Origin": "https://evil.example.net"}, timeout=10
    )
    assert other.status_code == 403


# --- tracking, artifacts and the registry through MLflow's client ---------------------------------


def test_tracking_artifacts_and_registry_round_trip(client: MlflowClient, artifact_dir: Path, tmp_path: Path) -> None:
    experiment_id = client.create_experiment("e2e")
    assert client.get_experiment(experiment_id).artifact_location == f"mlflow-artifacts:/{experiment_id}"

    # A run with params, metrics and tags, the way training code logs them.
    mlflow.set_experiment(experiment_id=experiment_id)
    with mlflow.start_run(run_name="train") as run:
        run_id = run.info.run_id
        mlflow.log_params({"alpha": "0.5", "layers": "3"})
        mlflow.set_tags({"team": "ml", "stage": "e2e"})
        for step in range(10):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        client.log_batch(
            run_id, metrics=[Metric("acc", 0.9, 0, 0)], params=[Param("opt", "adam")], tags=[RunTag("git", "abc")]
        )

        blob = tmp_path / "blob.bin"
        blob.write_bytes(os.urandom(1 << 20))
        mlflow.log_artifact(str(blob), artifact_path="data")

        model_files = tmp_path / "weights"
        (model_files / "layers").mkdir(parents=True)
        for i in range(3):
            (model_files / "layers" / f"layer{i}.bin").write_bytes(os.urandom(10_000 + i))
        (model_files / "config.json").write_text('{"layers": 3}')
        mlflow.log_artifacts(str(model_files), artifact_path="weights")

        model_info = mlflow.pyfunc.log_model(name="doubler", python_model=Doubler(), pip_requirements=["mlflow"])

    logged = client.get_run(run_id)
    # Who logged it is IAP's word, not this machine's login name.
    assert (logged.info.user_id, logged.data.tags["mlflow.user"]) == (CALLER, CALLER)
    assert logged.data.params == {"alpha": "0.5", "layers": "3", "opt": "adam"}
    assert {"team": "ml", "stage": "e2e", "git": "abc"}.items() <= logged.data.tags.items()
    assert logged.data.metrics == {"loss": 0.1, "acc": 0.9}
    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(s, 1.0 / (s + 1)) for s in range(10)]

    found = client.search_runs([experiment_id], "params.alpha = '0.5' and metrics.loss < 0.2 and tags.team = 'ml'")
    assert [r.info.run_id for r in found] == [run_id]

    # Artifacts come back byte for byte...
    downloaded = Path(
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="data/blob.bin", dst_path=str(tmp_path / "dl"))
    )
    assert sha256(downloaded) == sha256(blob)
    downloaded_dir = Path(
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="weights", dst_path=str(tmp_path / "dl"))
    )
    assert tree_digests(downloaded_dir) == tree_digests(model_files)
    assert {a.path for a in client.list_artifacts(run_id)} >= {"data", "weights"}

    # ...and the server wrote them into the artifact destination (the GCS mount), under the run.
    [stored_blob] = artifact_dir.rglob("blob.bin")
    assert sha256(stored_blob) == sha256(blob)
    assert stored_blob.relative_to(artifact_dir).parts[:2] == (experiment_id, run_id)
    [stored_weights] = [p for p in artifact_dir.rglob("weights") if p.is_dir()]
    assert tree_digests(stored_weights) == tree_digests(model_files)

    # The model is registered, and the registered version loads and predicts from the server.
    version = mlflow.register_model(model_info.model_uri, "doubler")
    assert version.version == "1"
    assert client.get_model_version("doubler", "1").tags["mlflow.user"] == CALLER
    assert client.get_registered_model("doubler").latest_versions[0].run_id == run_id
    assert [m.name for m in client.search_registered_models()] == ["doubler"]
    loaded = mlflow.pyfunc.load_model("models:/doubler/1")
    assert list(loaded.predict([1, 2, 3])) == [2, 4, 6]
    model_dir = Path(mlflow.artifacts.download_artifacts("models:/doubler/1", dst_path=str(tmp_path / "model")))
    stored_model = [p for p in artifact_dir.rglob("MLmodel") if model_info.model_id in str(p)]
    assert len(stored_model) == 1
    # (Downloading a registered model adds a `registered_model_meta` file on the client side.)
    assert tree_digests(model_dir).items() >= tree_digests(stored_model[0].parent).items()
    assert set(tree_digests(model_dir)) - set(tree_digests(stored_model[0].parent)) == {"registered_model_meta"}


# --- what runs, and what it leaves alone -----------------------------------------------------------


def test_one_worker_is_one_process_and_no_job_runner(server: ServerProcess) -> None:
    [process] = server.tree()
    cmdline = " ".join(process.cmdline())
    # start.sh execs Python, which runs MLflow's CLI and then uvicorn in itself: the process Cloud
    # Run signals is the server.
    assert process.pid == server.proc.pid
    assert "serve.py" in cmdline and "--workers 1" in cmdline and "--host 0.0.0.0" in cmdline
    assert f"Started server process [{process.pid}]" in server.log()
    assert "huey" not in cmdline and "jobs" not in cmdline


def test_the_password_is_in_no_process_argument_and_no_log_line(server: ServerProcess, client: MlflowClient) -> None:
    client.search_experiments()
    secrets = [APP_PASSWORD, url_password(APP_PASSWORD)]
    arguments = " ".join(" ".join(p.cmdline()) for p in server.tree())
    assert not [s for s in secrets if s in arguments]
    assert not [s for s in secrets if s in server.log()]


def test_starting_and_serving_left_the_schema_as_migrated(
    server: ServerProcess,
    client: MlflowClient,
    postgres: PostgresCluster,
    migrated_database: Database,
    schema_before: tuple,
) -> None:
    client.search_experiments()
    db = migrated_database.name
    assert (postgres.tables(db), postgres.query("SELECT version_num FROM alembic_version", dbname=db)) == schema_before
    assert "Creating initial MLflow database tables" not in server.log()
    assert "Updating database tables" not in server.log()
