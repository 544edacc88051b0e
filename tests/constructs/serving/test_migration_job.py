"""The migration job: same image, secret, socket and account as the server; one task, no retries."""

import pytest

from constructs.serving.migration_job import MigrationJobProps
from tests.synth import env_of, one, resource


def test_the_job_runs_the_migration_entry_point_once(mlflow):
    job = one(mlflow, "google_cloud_run_v2_job")["template"]
    assert job["task_count"] == 1 and job["parallelism"] == 1
    assert job["template"]["max_retries"] == 0
    assert job["template"]["containers"][0]["command"] == ["/app/migrate.sh"]


def test_the_job_shares_image_secret_socket_and_account_with_the_server(mlflow):
    job = one(mlflow, "google_cloud_run_v2_job")["template"]["template"]
    server = one(mlflow, "google_cloud_run_v2_service")["template"]
    job_container, server_container = job["containers"][0], server["containers"][0]
    assert job_container["image"] == server_container["image"]
    assert env_of(job_container)["MLFLOW_BACKEND_STORE_URI"] == env_of(server_container)["MLFLOW_BACKEND_STORE_URI"]
    assert job["volumes"] == [v for v in server["volumes"] if v["name"] == "cloudsql"]
    assert job_container["volume_mounts"] == [{"name": "cloudsql", "mount_path": "/cloudsql"}]
    assert job["service_account"] == server["service_account"]
    assert job["vpc_access"] == server["vpc_access"]


def test_the_migration_command_is_an_output(mlflow):
    assert mlflow["output"]["migration_command"]["value"] == (
        "gcloud run jobs execute mlflow-migrate --project=example-mlflow-project --region=europe-west1 --wait"
    )


def test_the_apply_runs_the_job_whenever_the_image_changes(mlflow):
    execution = resource(mlflow, "terraform_data", "migration-job/execution")
    assert (
        execution["triggers_replace"]["image"]
        == one(mlflow, "google_cloud_run_v2_job")["template"]["template"]["containers"][0]["image"]
    )
    assert execution["provisioner"] == [
        {
            "local-exec": {
                "command": "gcloud run jobs execute mlflow-migrate --project=example-mlflow-project --region=europe-west1 --wait"
            }
        }
    ]
    assert "google_cloud_run_v2_job.migration-job_F6369E7C" in execution["depends_on"]


def test_the_migration_job_refuses_an_empty_name():
    from tests.constructs.serving.test_tracking_service import service_props

    with pytest.raises(ValueError, match="MigrationJobProps.name: is empty"):
        MigrationJobProps("", service_props().placement, service_props().container)
