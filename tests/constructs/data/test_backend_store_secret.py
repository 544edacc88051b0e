"""The backend store URI: with IAM login (the example) a plain value without any credential and no
secret at all; with a password (the prod-like environment) in Secret Manager, write-only, readable
by the server's account alone."""

import re

import pytest

from constructs.data.backend_store_secret import BackendStoreSecretProps
from tests.synth import assert_matches, env_of, one, resource, resources


def test_the_secret_holds_the_cloudsql_socket_uri_with_an_urlencoded_password(mlflow_prod):
    version = resource(mlflow_prod, "google_secret_manager_secret_version", "backend-store-uri/version")
    assert version["secret_data_wo"] == (
        "postgresql+psycopg2://${google_sql_user.database_user_9EB13DDB.name}:"
        "${urlencode(random_password.database_password_22A6A8E7.result)}@/${google_sql_database.database_7CF902CB.name}"
        "?host=/cloudsql/${google_sql_database_instance.database_instance_D7FC2283.connection_name}"
    )
    assert "secret_data" not in version, "a plain secret_data would put the URI in plan output and state"


def test_the_secret_stays_in_the_region_and_is_protected(mlflow_prod):
    assert_matches(
        resource(mlflow_prod, "google_secret_manager_secret", "backend-store-uri/secret"),
        {
            "secret_id": "mlflow-backend-store-uri",
            "replication": {"user_managed": {"replicas": [{"location": "europe-west1"}]}},
            "lifecycle": {"prevent_destroy": True},
        },
    )


def test_only_the_server_account_may_read_it(mlflow_prod):
    assert_matches(
        resource(mlflow_prod, "google_secret_manager_secret_iam_member", "backend-store-uri/server-reads-uri"),
        {
            "role": "roles/secretmanager.secretAccessor",
            "member": "serviceAccount:mlflow-server@example-mlflow-prod.iam.gserviceaccount.com",
        },
    )
    assert not [
        m for m in mlflow_prod["resource"]["google_project_iam_member"].values() if "secretmanager" in m["role"]
    ]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"revision": 0}, "BackendStoreSecretProps.revision: 0"),
        ({"secret_id": ""}, "BackendStoreSecretProps.secret_id: is empty"),
    ],
)
def test_the_secret_refuses_props_that_make_no_sense(change, message):
    props = dict(project="p", region="r", secret_id="s", user="u", password="pw", database="d", connection_name="p:r:i")
    with pytest.raises(ValueError, match=re.escape(message)):
        BackendStoreSecretProps(**{**props, **change})


def test_a_password_rotation_writes_the_new_version_before_it_disables_the_old_one(mlflow_prod):
    """`secret_data_wo_version` forces a replacement: the live version must outlive the rollout."""
    assert_matches(
        resource(mlflow_prod, "google_secret_manager_secret_version", "backend-store-uri/version"),
        {"secret_data_wo_version": "2", "lifecycle": {"create_before_destroy": True}, "deletion_policy": "DISABLE"},
    )


IAM_URI = (
    "postgresql+psycopg2://${urlencode(google_sql_user.database_iam-user_83DA0FBA.name)}@/${google_sql_database.database_7CF902CB.name}"
    "?host=/cloudsql/${google_sql_database_instance.database_instance_D7FC2283.connection_name}"
)


def test_with_iam_login_the_login_has_no_secret_so_the_gateway_key_is_the_only_one(mlflow):
    for type_ in (
        "google_secret_manager_secret",
        "google_secret_manager_secret_version",
        "google_secret_manager_secret_iam_member",
    ):
        assert all(path.startswith("gateway-key/") for path in resources(mlflow, type_)), type_


@pytest.mark.parametrize("type_", ["google_cloud_run_v2_service", "google_cloud_run_v2_job"])
def test_with_iam_login_the_service_and_job_get_a_uri_without_credential_and_the_iam_switch(mlflow, type_):
    body = one(mlflow, type_)
    container = (body["template"].get("template") or body["template"])["containers"][0]
    env = env_of(container)
    assert env["MLFLOW_BACKEND_STORE_URI"] == IAM_URI
    assert env["MLFLOW_BACKEND_STORE_AUTH"] == "iam"
    referenced = [e["name"] for e in container["env"] if "value_source" in e]
    assert referenced == (["MLFLOW_CRYPTO_KEK_PASSPHRASE"] if type_ == "google_cloud_run_v2_service" else []), (
        "no secret reference is left but the service's gateway key"
    )
