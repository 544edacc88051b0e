"""The server's account: dedicated, keyless, made by the project stack; only the deployer may act as it."""

import pytest

from constructs.identity.server_identity import ServerIdentityProps
from tests.synth import assert_matches, resource, resources

SERVER_EMAIL = "mlflow-server@example-mlflow-project.iam.gserviceaccount.com"


def test_the_project_stack_makes_the_servers_own_service_account(project_stack):
    assert_matches(
        resource(project_stack, "google_service_account", "server-identity/account"),
        {"account_id": "mlflow-server", "project": "example-mlflow-project", "display_name": "MLflow tracking server"},
    )


def test_the_mlflow_stack_makes_no_service_account_and_runs_as_the_projects(mlflow):
    assert "google_service_account" not in mlflow["resource"]
    service = resources(mlflow, "google_cloud_run_v2_service")["tracking-service/service"]
    job = resources(mlflow, "google_cloud_run_v2_job")["migration-job/job"]
    assert service["template"]["service_account"] == job["template"]["template"]["service_account"] == SERVER_EMAIL


def test_the_mlflow_stack_forgets_the_account_it_made_before_without_deleting_it(app):
    """Environments deployed before the move have the account in the MLflow stack's state at the same
    address the project stack now gives it: `removed` drops it there, the project stack adopts it."""
    for env in ("example", "prod", "small"):
        removed = app.stacks[f"mlflow-{env}"]["removed"]
        kept = {
            f"google_service_account.{name}"
            for name in app.stacks[f"mlflow-{env}-project"]["resource"]["google_service_account"]
        }
        assert removed == [
            {"from": "google_service_account.server-identity_account_25E041FD", "lifecycle": {"destroy": False}}
        ]
        assert removed[0]["from"] in kept
    assert (
        resource(app.stacks["mlflow-example-project"], "google_service_account", "server-identity/account")[
            "create_ignore_already_exists"
        ]
        is True
    )


def test_without_ci_nobody_is_granted_anything_on_it(project_stack):
    assert not resources(project_stack, "google_service_account_iam_member")


def test_no_service_account_key_exists(app):
    for stack in app.stacks.values():
        assert "google_service_account_key" not in stack.get("resource", {})


def test_the_server_identity_refuses_an_empty_account_id():
    with pytest.raises(ValueError, match="ServerIdentityProps.account_id: is empty"):
        ServerIdentityProps("p", "")
