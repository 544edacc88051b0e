"""The server's project roles: telemetry writers, and Cloud SQL roles on its own instance only."""

import celpy
import pytest

from constructs.identity.server_roles import ServerRolesProps, on_instance
from tests.synth import resources

SERVER = "serviceAccount:mlflow-server@example-mlflow-project.iam.gserviceaccount.com"
PROD_SERVER = "serviceAccount:mlflow-server@example-mlflow-prod.iam.gserviceaccount.com"


def project_roles(stack, member):
    return {
        m["role"]: m.get("condition")
        for m in resources(stack, "google_project_iam_member").values()
        if m["member"] == member
    }


def test_its_project_roles_are_exactly_sql_client_and_login_and_telemetry_writers(mlflow):
    """IAM database login (the example) adds cloudsql.instanceUser: cloudsql.instances.login."""
    assert sorted(project_roles(mlflow, SERVER)) == [
        "roles/cloudsql.client",
        "roles/cloudsql.instanceUser",
        "roles/logging.logWriter",
        "roles/monitoring.metricWriter",
    ]


def test_with_password_login_it_has_no_database_login_role(mlflow_prod):
    assert sorted(project_roles(mlflow_prod, PROD_SERVER)) == [
        "roles/cloudsql.client",
        "roles/logging.logWriter",
        "roles/monitoring.metricWriter",
    ]


def holds(expression: str, resource_type: str, name: str) -> bool:
    environment = celpy.Environment()
    program = environment.program(environment.compile(expression))
    return bool(program.evaluate({"resource": celpy.json_to_cel({"type": resource_type, "name": name})}))


def test_the_cloud_sql_roles_hold_on_its_own_instance_only(mlflow):
    roles = project_roles(mlflow, SERVER)
    instance = next(iter(mlflow["resource"]["google_sql_database_instance"].values()))["name"]
    for role in ("roles/cloudsql.client", "roles/cloudsql.instanceUser"):
        expression = roles[role]["expression"]
        assert holds(
            expression, "sqladmin.googleapis.com/Instance", f"projects/example-mlflow-project/instances/{instance}"
        )
        assert not holds(
            expression, "sqladmin.googleapis.com/Instance", "projects/example-mlflow-project/instances/other-db"
        )
        assert not holds(
            expression, "sqladmin.googleapis.com/Instance", f"projects/another-project/instances/{instance}"
        )
    assert roles["roles/logging.logWriter"] is None and roles["roles/monitoring.metricWriter"] is None


def test_the_conditioned_grants_are_made_before_the_ones_they_replace_are_removed(mlflow):
    """Upgrading from an unconditioned grant replaces it; the server must never be without the role."""
    for path, body in resources(mlflow, "google_project_iam_member").items():
        if body.get("condition"):
            assert body["lifecycle"] == {"create_before_destroy": True}, path


def test_the_condition_names_whatever_instance_it_is_given():
    assert on_instance("p", "mlflow-db-restored").endswith("resource.name == 'projects/p/instances/mlflow-db-restored'")


def test_it_uses_objects_of_the_artifact_bucket_only(mlflow):
    grants = [g for g in resources(mlflow, "google_storage_bucket_iam_member").values() if g["member"] == SERVER]
    assert grants == [
        {
            **grants[0],
            "bucket": "${google_storage_bucket.artifacts_bucket_A41425E9.name}",
            "role": "roles/storage.objectUser",
        }
    ]


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"member": "user:a@example.com"},
            "ServerRolesProps.member: 'user:a@example.com' must be serviceAccount:EMAIL",
        ),
        ({"sql_instance_name": ""}, "ServerRolesProps.sql_instance_name: must be the instance's name"),
    ],
)
def test_server_roles_refuse_props_that_make_no_sense(change, message):
    with pytest.raises(ValueError, match=message):
        ServerRolesProps(**{"project": "p", "member": SERVER, "sql_instance_name": "mlflow-db", **change})
