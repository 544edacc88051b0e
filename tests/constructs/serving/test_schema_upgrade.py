"""The upgrade window of an apply that changes the image: backup, close, migrate, new revision, reopen."""

import pytest

from constructs.cdk import App, TerraformStack
from constructs.serving.schema_upgrade import SchemaUpgrade, SchemaUpgradeProps
from tests.synth import one, resource, resources

WHERE = "--project=example-mlflow-project --region=europe-west1"


def step(stack, name):
    return resource(stack, "terraform_data", f"schema-upgrade/{name}")


def address(stack, type_, path):
    """The Terraform address depends_on uses for the resource at construct path `path`."""
    (key,) = [
        k for k, body in stack["resource"][type_].items() if body["//"]["metadata"]["path"].split("/", 1)[1] == path
    ]
    return f"{type_}.{key}"


def command(body):
    return body["provisioner"][0]["local-exec"]["command"]


def test_the_backup_comes_first_and_names_the_real_instance(mlflow):
    backup = step(mlflow, "backup")
    assert not backup.get("depends_on")
    assert command(backup).startswith(
        "gcloud sql backups create --instance=${google_sql_database_instance.database_instance_"
    )
    assert "--project=example-mlflow-project" in command(backup)


def test_writers_are_stopped_after_the_backup_by_closing_the_ingress(mlflow):
    close = step(mlflow, "close")
    assert close["depends_on"] == [address(mlflow, "terraform_data", "schema-upgrade/backup")]
    assert f"gcloud run services update mlflow-server {WHERE} --quiet --ingress=internal " in command(close)
    assert "sleep 20" in command(close)


def test_closing_is_skipped_only_when_the_service_does_not_exist_yet(mlflow):
    close = command(step(mlflow, "close"))
    listing = f"gcloud run services list {WHERE} --filter=metadata.name=mlflow-server --format='value(metadata.name)'"
    assert close.startswith(f'found=$({listing}) && if [ -n "$found" ]; then ')


def test_the_migration_runs_only_once_writers_are_stopped(mlflow):
    execution = resource(mlflow, "terraform_data", "migration-job/execution")
    assert address(mlflow, "terraform_data", "schema-upgrade/close") in execution["depends_on"]
    assert address(mlflow, "google_cloud_run_v2_job", "migration-job/job") in execution["depends_on"]


def test_the_new_revision_waits_for_the_migration(mlflow):
    service = one(mlflow, "google_cloud_run_v2_service")
    assert address(mlflow, "terraform_data", "migration-job/execution") in service["depends_on"]


def test_the_ingress_reopens_after_the_new_revision(mlflow):
    reopen = step(mlflow, "reopen")
    assert address(mlflow, "google_cloud_run_v2_service", "tracking-service/service") in reopen["depends_on"]
    assert address(mlflow, "terraform_data", "schema-upgrade/close") in reopen["depends_on"]
    assert command(reopen) == (
        f"gcloud run services update mlflow-server {WHERE} --quiet --ingress=internal-and-cloud-load-balancing"
    )


def test_the_ingress_it_reopens_to_is_the_one_the_service_declares(mlflow):
    assert one(mlflow, "google_cloud_run_v2_service")["ingress"] == "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
    assert command(step(mlflow, "reopen")).endswith("--ingress=internal-and-cloud-load-balancing")


def test_nothing_before_the_new_revision_waits_for_the_service(mlflow):
    service = address(mlflow, "google_cloud_run_v2_service", "tracking-service/service")
    for name in ("backup", "close"):
        assert service not in step(mlflow, name).get("depends_on", [])
        assert "${google_cloud_run_v2_service" not in command(step(mlflow, name))


def test_every_step_runs_again_when_the_image_changes(mlflow):
    image = one(mlflow, "google_cloud_run_v2_service")["template"]["containers"][0]["image"]
    for name in ("backup", "close", "reopen"):
        assert step(mlflow, name)["triggers_replace"] == {"image": image}
    assert resource(mlflow, "terraform_data", "migration-job/execution")["triggers_replace"]["image"] == image


def test_the_reopen_command_is_an_output(mlflow):
    assert mlflow["output"]["reopen_command"]["value"] == command(step(mlflow, "reopen"))


def test_each_environment_closes_its_own_service(mlflow_prod):
    prod_service = one(mlflow_prod, "google_cloud_run_v2_service")["name"]
    assert f"gcloud run services update {prod_service} " in command(step(mlflow_prod, "close"))
    assert len([p for p in resources(mlflow_prod, "terraform_data") if p.startswith("schema-upgrade/")]) == 3


def props(**changes):
    base = dict(project="p", region="r", sql_instance_name="db", service_name="s", image="img:1")
    return SchemaUpgradeProps(**{**base, **changes})


def test_it_refuses_a_reference_to_the_service_for_its_name():
    stack = TerraformStack(App(), "s")
    token = resource_name_token(stack)
    with pytest.raises(ValueError, match="SchemaUpgradeProps.service_name: .* must be the service's plain name"):
        props(service_name=token)


def resource_name_token(stack):
    from constructs.cdk import TerraformLocal

    return TerraformLocal(stack, "name", "s").as_string


def test_it_refuses_a_drain_beyond_ten_minutes():
    with pytest.raises(ValueError, match="SchemaUpgradeProps.drain_seconds: 601 must be 0 to 600"):
        props(drain_seconds=601)


def test_the_close_step_waits_the_drain_it_is_given():
    import json

    from constructs.cdk import Testing

    stack = TerraformStack(App(), "s")
    SchemaUpgrade(stack, "u", props(drain_seconds=0))
    steps = json.loads(Testing.synth(stack))["resource"]["terraform_data"]
    (close,) = [body for key, body in steps.items() if key.startswith("u_close")]
    assert command(close).endswith("--ingress=internal && sleep 0; fi")
