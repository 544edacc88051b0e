"""Object reads and writes of every bucket are in Cloud Audit Logs, enabled by the project stack."""

from tests.synth import assert_matches, one, resources


def test_the_project_stack_turns_on_data_access_logs_for_cloud_storage(project_stack):
    assert_matches(
        one(project_stack, "google_project_iam_audit_config"),
        {
            "project": "example-mlflow-project",
            "service": "storage.googleapis.com",
            "audit_log_config": [{"log_type": "DATA_READ"}, {"log_type": "DATA_WRITE"}],
        },
    )


def test_no_principal_is_exempted_from_the_audit_logs(project_stack):
    for config in one(project_stack, "google_project_iam_audit_config")["audit_log_config"]:
        assert "exempted_members" not in config


def test_only_the_project_stack_owns_the_audit_config(app):
    """The config is authoritative per service: two stacks writing it would undo each other."""
    owners = {name for name, stack in app.stacks.items() if resources(stack, "google_project_iam_audit_config")}
    assert owners == {"mlflow-example-project", "mlflow-prod-project", "mlflow-small-project", "mlflow-teams-project"}
