"""The AI gateway's key: one per deployment, generated ephemeral (in no plan or state), kept in Secret
Manager, read by the server's account alone and given to the service, never MLflow's default."""

import re

import pytest

from constructs.data.gateway_key_secret import GatewayKeySecretProps
from constructs.serving.server_container import GatewayKeyRef
from tests.synth import assert_matches, env_of, one, resource, resources

KEY_SECRET = "${google_secret_manager_secret.gateway-key_secret_A9250518.secret_id}"
KEY_VERSION = "${google_secret_manager_secret_version.gateway-key_version_50259F23.version}"


def service_env(stack):
    return env_of(one(stack, "google_cloud_run_v2_service")["template"]["containers"][0])


def test_the_key_is_an_ephemeral_random_password_so_no_plan_or_state_holds_it(mlflow):
    assert mlflow["ephemeral"]["random_password"]["gateway-key_passphrase"] | {"//": None} == {
        "length": 64,
        "special": False,
        "//": None,
    }
    assert "random_password" not in mlflow["resource"], "a managed random_password would keep the key in state"
    assert mlflow["terraform"]["required_providers"]["random"] == {"source": "hashicorp/random", "version": "~> 3.9"}


def test_the_key_goes_only_write_only_into_its_secret(mlflow):
    version = resource(mlflow, "google_secret_manager_secret_version", "gateway-key/version")
    assert version["secret_data_wo"] == "${ephemeral.random_password.gateway-key_passphrase.result}"
    assert "secret_data" not in version
    assert version["secret_data_wo_version"] == "1"


def test_the_secret_stays_in_the_region_and_is_protected(mlflow):
    assert_matches(
        resource(mlflow, "google_secret_manager_secret", "gateway-key/secret"),
        {
            "secret_id": "mlflow-gateway-key",
            "replication": {"user_managed": {"replicas": [{"location": "europe-west1"}]}},
            "lifecycle": {"prevent_destroy": True},
        },
    )


def test_only_the_server_account_may_read_it(mlflow):
    readers = resources(mlflow, "google_secret_manager_secret_iam_member")
    assert list(readers) == ["gateway-key/server-reads-key"]
    assert_matches(
        readers["gateway-key/server-reads-key"],
        {
            "secret_id": KEY_SECRET,
            "role": "roles/secretmanager.secretAccessor",
            "member": "serviceAccount:mlflow-server@example-mlflow-project.iam.gserviceaccount.com",
        },
    )
    assert not [m for m in mlflow["resource"]["google_project_iam_member"].values() if "secretmanager" in m["role"]]


@pytest.mark.parametrize("stack", ["mlflow", "mlflow_prod", "mlflow_direct_iap"])
def test_the_service_reads_the_key_pinned_to_its_version_and_never_as_a_plain_value(stack, request):
    env = service_env(request.getfixturevalue(stack))
    assert env["MLFLOW_CRYPTO_KEK_PASSPHRASE"] == {"secret_key_ref": {"secret": KEY_SECRET, "version": KEY_VERSION}}
    assert "MLFLOW_ENABLE_AI_GATEWAY" not in env, "the gateway stays on, as MLflow ships it, with this key"


def test_the_migration_job_gets_no_key(mlflow):
    job = one(mlflow, "google_cloud_run_v2_job")["template"]["template"]["containers"][0]
    assert not [name for name in env_of(job) if name.startswith("MLFLOW_CRYPTO_")]


def test_a_rotation_writes_a_new_version_before_it_disables_the_old_and_moves_mlflows_kek_version(mlflow, mlflow_prod):
    """The prod-like environment has `gateway_key_revision = 2`: `mlflow crypto rotate-kek` re-wraps 1 -> 2."""
    assert service_env(mlflow)["MLFLOW_CRYPTO_KEK_VERSION"] == "1"
    assert service_env(mlflow_prod)["MLFLOW_CRYPTO_KEK_VERSION"] == "2"
    assert_matches(
        resource(mlflow_prod, "google_secret_manager_secret_version", "gateway-key/version"),
        {"secret_data_wo_version": "2", "lifecycle": {"create_before_destroy": True}, "deletion_policy": "DISABLE"},
    )


@pytest.mark.parametrize(
    "change, message",
    [
        ({"revision": 0}, "GatewayKeySecretProps.revision: 0"),
        ({"secret_id": ""}, "GatewayKeySecretProps.secret_id: is empty"),
    ],
)
def test_the_secret_refuses_props_that_make_no_sense(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        GatewayKeySecretProps(**{**dict(project="p", region="r", secret_id="s"), **change})


@pytest.mark.parametrize(
    "args, message",
    [
        (("", "1", 1), "GatewayKeyRef: give secret_id and secret_version"),
        (("s", "", 1), "GatewayKeyRef: give secret_id"),
        (("s", "1", 0), "GatewayKeyRef.kek_version: 0"),
    ],
)
def test_the_service_refuses_a_key_reference_without_a_secret(args, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        GatewayKeyRef(*args)
