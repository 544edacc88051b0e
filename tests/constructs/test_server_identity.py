"""The server's account: dedicated, keyless, three project roles (four with IAM database login), everything else per resource."""

import pytest

from constructs.server_identity import ServerIdentityProps
from tests.synth import assert_matches, one, resources

SERVER = "${google_service_account.server-identity_account_25E041FD.member}"


def test_the_server_has_its_own_service_account(mlflow):
    assert_matches(one(mlflow, "google_service_account"), {"account_id": "mlflow-server"})


def project_roles(stack):
    return sorted(m["role"] for m in resources(stack, "google_project_iam_member").values() if m["member"] == SERVER)


def test_its_project_roles_are_exactly_sql_client_and_login_and_telemetry_writers(mlflow):
    """IAM database login (the example) adds cloudsql.instanceUser: cloudsql.instances.login."""
    assert project_roles(mlflow) == [
        "roles/cloudsql.client", "roles/cloudsql.instanceUser", "roles/logging.logWriter", "roles/monitoring.metricWriter"
    ]


def test_with_password_login_it_has_no_database_login_role(mlflow_prod):
    assert project_roles(mlflow_prod) == ["roles/cloudsql.client", "roles/logging.logWriter", "roles/monitoring.metricWriter"]


def test_it_uses_objects_of_the_artifact_bucket_only(mlflow):
    grants = [g for g in resources(mlflow, "google_storage_bucket_iam_member").values() if g["member"] == SERVER]
    assert grants == [
        {**grants[0], "bucket": "${google_storage_bucket.artifacts_bucket_A41425E9.name}", "role": "roles/storage.objectUser"}
    ]


def test_no_service_account_key_exists(app):
    for stack in app.stacks.values():
        assert "google_service_account_key" not in stack.get("resource", {})


def test_the_server_identity_refuses_an_empty_account_id():
    with pytest.raises(ValueError, match="ServerIdentityProps.account_id: is empty"):
        ServerIdentityProps("p", "")
