"""End to end: `pip install ./client`, set MLFLOW_TRACKING_URI, and the normal MLflow client works through IAP.

Each test runs the installed package in a subprocess against the fakes in conftest.py: Google's token
and IAM Credentials endpoints, a metadata server, and IAP in front of a real `mlflow server`.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "client" / "examples" / "log_run.py"


def _ids(stdout: str) -> tuple[str, str]:
    found = dict(re.findall(r"^(experiment_id|run_id)=(\S+)$", stdout, re.M))
    return found["experiment_id"], found["run_id"]


def _assert_one_line_error(result, *fragments: str) -> str:
    assert result.returncode == 1, result
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def _assert_logged(world, experiment_id: str, run_id: str, steps: int) -> None:
    run = world.mlflow.api("runs/get", run_id=run_id)["run"]
    assert run["info"]["experiment_id"] == experiment_id and run["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params == {"learning_rate": "0.01", "epochs": str(steps), "optimizer": "sgd"}
    history = world.mlflow.api("metrics/get-history", run_id=run_id, metric_key="loss")["metrics"]
    assert sorted(m["step"] for m in history) == list(range(steps))
    artifacts = list(world.mlflow.root.glob(f"artifacts/{experiment_id}/{run_id}/artifacts/hello.txt"))
    assert len(artifacts) == 1 and "behind IAP" in artifacts[0].read_text()


def test_installed_package_registers_the_plugin_and_the_command(world):
    result = world.python(
        "-c",
        "import importlib.metadata as m, mlflow_iap_auth;"
        "print(mlflow_iap_auth.__file__);"
        "print([e.value for e in m.entry_points(group='mlflow.request_auth_provider')]);"
        "print([e.value for e in m.entry_points(group='mlflow.request_header_provider')])",
    )
    assert result.returncode == 0, result.stderr
    location, auth_providers, header_providers = result.stdout.splitlines()
    assert location.startswith(str(world.venv))
    assert "mlflow_iap_auth.plugin:IapRequestAuthProvider" in auth_providers
    assert "mlflow_iap_auth.plugin:IapRequestHeaderProvider" in header_providers
    assert (world.venv / "bin" / "mlflow-iap-token").exists()


def test_a_human_logs_the_example_run_by_impersonating_a_service_account(world):
    world.login_as(world.fake.ALICE)
    result = world.python(str(EXAMPLE), "--experiment", "iap-human", MLFLOW_IAP_SERVICE_ACCOUNT=world.fake.CLIENT_SA)
    assert result.returncode == 0, result.stderr
    experiment_id, run_id = _ids(result.stdout)
    _assert_logged(world, experiment_id, run_id, steps=5)

    log = world.fake.iap_log
    assert log and all(r.reason is None and r.identity == world.fake.CLIENT_SA for r in log), log
    assert any("/mlflow-artifacts/" in r.path for r in log), "the artifact upload went through IAP too"
    assert [(s.principal, s.target, s.status) for s in world.fake.sign_log] == [
        (f"user:{world.fake.ALICE}", world.fake.CLIENT_SA, 200)
    ], "one JWT, signed by Google for alice acting as the service account, served the whole run"
    assert world.fake.refused == []


# Logs a run on the tracking server, then downloads one file from each URL given, the way MLflow reads
# an `https://` artifact URI (listing, then the file), all with the client's default credentials.
LOG_THEN_DOWNLOAD = """
import sys, tempfile
import mlflow, mlflow.artifacts
mlflow.set_experiment("iap-elsewhere")
with mlflow.start_run() as run:
    mlflow.log_param("where", "tracking server")
for url in sys.argv[1:]:
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(artifact_uri=url, dst_path=tmp)
        print(open(path).read().strip())
print(f"run_id={run.info.run_id}")
"""


def test_the_token_goes_to_the_tracking_server_only_never_to_another_host_or_port(world):
    """The same MLflow process, the same credentials: the tracking server's requests carry the token,
    an artifact store on another host and the tracking host on another port get no credential."""
    world.login_as(world.fake.ALICE)
    elsewhere = [
        f"{world.fake.OTHER_HOST_URL}/mlflow-artifacts/artifacts/0/abc/artifacts/model.txt",
        f"{world.fake.OTHER_PORT_URL}/mlflow-artifacts/artifacts/0/abc/artifacts/model.txt",
    ]
    result = world.python("-c", LOG_THEN_DOWNLOAD, *elsewhere, MLFLOW_IAP_SERVICE_ACCOUNT=world.fake.CLIENT_SA)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("weights from another host") == 2

    log = world.fake.iap_log
    assert log and all(r.reason is None and r.identity == world.fake.CLIENT_SA for r in log), log
    assert any(r.path.startswith("/api/2.0/mlflow/runs/create") for r in log)
    seen = world.fake.elsewhere_log
    assert {r.origin for r in seen} == {"https://artifacts.example.test:443", "https://mlflow.example.test:8443"}
    assert len(seen) >= 4, "each download listed, then fetched the file"
    assert [
        (r.origin, r.path, r.authorization, r.proxy_authorization)
        for r in seen
        if r.authorization or r.proxy_authorization
    ] == []
    assert world.fake.refused == []


# A script that goes straight to MLflow, without the example's check() first.
LOG_A_RUN = """
import mlflow
mlflow.set_experiment("iap-unset")
with mlflow.start_run():
    mlflow.log_metric("loss", 1.0)
"""


def test_without_mlflow_tracking_auth_no_token_is_sent_and_a_warning_names_the_setting(world):
    """An install that predates the auth provider: one warning says what to set; IAP refuses (401)."""
    world.login_as(world.fake.ALICE)
    result = world.python(
        "-c", LOG_A_RUN,
        MLFLOW_TRACKING_AUTH=None, MLFLOW_IAP_SERVICE_ACCOUNT=world.fake.CLIENT_SA, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.count("mlflow-iap-auth: set MLFLOW_TRACKING_AUTH=iap to send IAP tokens to") == 1
    assert world.fake.iap_log and all(r.status == 401 and r.token is None for r in world.fake.iap_log)
    assert world.fake.sign_log == [], "nothing was signed"


def test_a_workload_signs_as_its_own_service_account_and_refreshes_expiring_tokens(world):
    world.on_gce()
    lifetime = 8
    result = world.python(
        str(EXAMPLE),
        "--experiment",
        "iap-refresh",
        "--steps",
        "5",
        "--sleep",
        "2.5",
        MLFLOW_IAP_TOKEN_LIFETIME=str(lifetime),  # renewed 2 s before expiry: room for a slow request
    )
    assert result.returncode == 0, result.stderr
    experiment_id, run_id = _ids(result.stdout)
    _assert_logged(world, experiment_id, run_id, steps=5)

    signed = [s for s in world.fake.sign_log if s.status == 200]
    assert len(signed) >= 2, "a new token was signed when the first one neared expiry"
    assert {(s.principal, s.target) for s in signed} == {
        (f"serviceAccount:{world.fake.RUNNER_SA}", world.fake.RUNNER_SA)
    }
    assert all(s.claims["exp"] - s.claims["iat"] == lifetime for s in signed)
    log = world.fake.iap_log
    assert log[-1].at - log[0].at > lifetime, "the run outlived a token's lifetime"
    assert log and all(r.reason is None and r.identity == world.fake.RUNNER_SA for r in log), [
        r for r in log if r.reason
    ]
    assert len({r.token for r in log}) >= 2
    assert world.fake.refused == []


def test_with_iap_on_cloud_run_the_tracking_uri_alone_is_enough(world):
    """front_door.mode = "direct_iap": the run.app URL is the tracking URI, its `https://HOST/*` the audience."""
    world.login_as(world.fake.ALICE)
    result = world.python(
        str(EXAMPLE),
        "--experiment",
        "iap-direct",
        "--steps",
        "2",
        MLFLOW_TRACKING_URI=world.fake.RUN_APP_URL,
        MLFLOW_IAP_SERVICE_ACCOUNT=world.fake.CLIENT_SA,
    )
    assert result.returncode == 0, result.stderr
    experiment_id, run_id = _ids(result.stdout)
    _assert_logged(world, experiment_id, run_id, steps=2)
    assert [s.claims["aud"] for s in world.fake.sign_log] == [world.fake.RUN_APP_AUDIENCE]
    assert world.fake.iap_log and all(r.reason is None for r in world.fake.iap_log), world.fake.iap_log
    assert world.fake.refused == []


def test_a_token_for_one_front_door_is_refused_at_the_other(world):
    fake = world.fake
    now = int(time.time())
    search = "/api/2.0/mlflow/experiments/search?max_results=1"

    def token(aud: str) -> dict:
        return {
            "Proxy-Authorization": "Bearer "
            + fake.sign_as(
                fake.CLIENT_SA, {"iss": fake.CLIENT_SA, "sub": fake.CLIENT_SA, "aud": aud, "iat": now, "exp": now + 600}
            )
        }

    assert world.https("GET", search, base=fake.RUN_APP_URL, headers=token(fake.RUN_APP_AUDIENCE)).status_code == 200
    assert world.https("GET", search, base=fake.RUN_APP_URL, headers=token(fake.AUDIENCE)).status_code == 401
    assert world.https("GET", search, headers=token(fake.RUN_APP_AUDIENCE)).status_code == 401


def test_the_fake_iap_rejects_what_real_iap_rejects(world):
    """Guards the test double: expired, mis-addressed, forged or unauthorised JWTs do not get through."""
    fake = world.fake
    now = int(time.time())

    def claims(sa=fake.CLIENT_SA, aud=fake.AUDIENCE, iat=now, exp=now + 600):
        return {"iss": sa, "sub": sa, "aud": aud, "iat": iat, "exp": exp}

    def status(token: str, header: str = "Proxy-Authorization") -> int:
        return world.https(
            "GET", "/api/2.0/mlflow/experiments/search?max_results=1", headers={header: f"Bearer {token}"}
        ).status_code

    assert status(fake.sign_as(fake.CLIENT_SA, claims())) == 200
    assert status(fake.sign_as(fake.CLIENT_SA, claims()), header="Authorization") == 200
    assert status(fake.sign_as(fake.CLIENT_SA, claims(iat=now - 700, exp=now - 100))) == 401
    assert status(fake.sign_as(fake.CLIENT_SA, claims(aud="https://elsewhere.example.test/*"))) == 401
    assert status(fake.sign_as(fake.RUNNER_SA, claims())) == 401  # signed with another account's key
    assert status(fake.sign_as(fake.CLIENT_SA, claims(exp=now + 7200))) == 401
    assert status(fake.sign_as(fake.OUTSIDER_SA, claims(sa=fake.OUTSIDER_SA))) == 403
    assert world.https("GET", "/health").status_code == 401


def test_the_token_command_prints_a_token_for_curl(world):
    world.login_as(world.fake.ALICE)
    result = world.token_cli(MLFLOW_IAP_SERVICE_ACCOUNT=world.fake.CLIENT_SA)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.count(".") == 2 and "\n" not in token
    response = world.https(
        "GET", "/api/2.0/mlflow/experiments/search?max_results=5", headers={"Proxy-Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200 and "experiments" in response.json()

    header = world.token_cli(
        "--header", "https://mlflow.example.test/", MLFLOW_IAP_SERVICE_ACCOUNT=world.fake.CLIENT_SA
    )
    assert header.returncode == 0 and header.stdout.startswith("Proxy-Authorization: Bearer ey")


def test_no_credentials_is_one_clear_line(world):
    line = _assert_one_line_error(
        world.token_cli(), "no Google credentials found", "gcloud auth application-default login"
    )

    # The MLflow call fails with the same line in its error, and nothing is sent without a token.
    result = world.python("-c", "import mlflow; mlflow.search_experiments()", MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    assert result.returncode != 0
    assert line in result.stderr
    assert world.fake.iap_log == []
    assert world.fake.sign_log == [] and world.fake.refused == []


def test_denied_impersonation_is_one_clear_line(world):
    world.login_as(world.fake.MALLORY)
    _assert_one_line_error(
        world.token_cli(MLFLOW_IAP_SERVICE_ACCOUNT=world.fake.CLIENT_SA),
        f"permission denied signing a JWT as {world.fake.CLIENT_SA}",
        "roles/iam.serviceAccountTokenCreator",
        "Permission 'iam.serviceAccounts.signJwt' denied",
    )
    assert [(s.principal, s.status) for s in world.fake.sign_log] == [(f"user:{world.fake.MALLORY}", 403)]


def test_user_credentials_without_a_service_account_say_which_setting_is_missing(world):
    world.login_as(world.fake.ALICE)
    _assert_one_line_error(world.token_cli(), "user's gcloud login", "MLFLOW_IAP_SERVICE_ACCOUNT")
    assert world.fake.sign_log == []


# A loose bound: MLflow's own client retries with back-off for minutes; the check answers in about a second.
FIRST_RUN_SECONDS = 20


def test_the_first_run_without_credentials_fails_in_seconds_with_one_line(world):
    """No `gcloud auth application-default login` yet: the example says so before MLflow sends anything."""
    started = time.monotonic()
    result = world.python(str(EXAMPLE), "--experiment", "iap-no-credentials")
    elapsed = time.monotonic() - started
    _assert_one_line_error(result, "no Google credentials found", "gcloud auth application-default login")
    assert elapsed < FIRST_RUN_SECONDS, elapsed
    assert world.fake.iap_log == [], "nothing is sent without a token"


def test_the_first_run_before_dns_resolves_fails_in_seconds_with_one_line(world):
    """Right after the first deploy the domain does not resolve yet: say that, not retry for minutes."""
    world.login_as(world.fake.ALICE)
    started = time.monotonic()
    result = world.python(
        # Google's endpoints through the fakes; the tracking host directly, through this machine's resolver.
        str(EXAMPLE),
        MLFLOW_TRACKING_URI="https://mlflow-first-run.invalid",
        NO_PROXY="mlflow-first-run.invalid",
        no_proxy="mlflow-first-run.invalid",
        MLFLOW_IAP_SERVICE_ACCOUNT=world.fake.CLIENT_SA,
    )
    elapsed = time.monotonic() - started
    _assert_one_line_error(result, "mlflow-first-run.invalid does not resolve (DNS)", "name_servers", "mlflow_url")
    assert elapsed < FIRST_RUN_SECONDS, elapsed
    assert [s.status for s in world.fake.sign_log] == [200] and world.fake.iap_log == []


def test_the_first_run_refused_by_iap_says_who_must_be_a_member(world):
    world.login_as(world.fake.ALICE)
    result = world.python(str(EXAMPLE), MLFLOW_IAP_SERVICE_ACCOUNT=world.fake.OUTSIDER_SA)
    _assert_one_line_error(result, "refused the token (HTTP 403", "iap_members")


def test_the_first_run_without_mlflow_tracking_auth_says_to_set_it_before_anything_is_sent(world):
    """The example's check() stops in one line instead of letting MLflow send tokenless requests."""
    world.login_as(world.fake.ALICE)
    result = world.python(
        str(EXAMPLE),
        "--experiment",
        "iap-unset",
        MLFLOW_TRACKING_AUTH=None,
        MLFLOW_IAP_SERVICE_ACCOUNT=world.fake.CLIENT_SA,
    )
    _assert_one_line_error(result, "MLFLOW_TRACKING_AUTH is not 'iap'", "export MLFLOW_TRACKING_AUTH=iap")
    assert world.fake.sign_log == [] and world.fake.iap_log == [], "nothing signed, nothing sent"
