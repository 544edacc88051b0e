"""The app: which stacks exist, where each keeps its state, and the order they are applied in."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import replace_config
from tests.invariants import DATA_RESOURCES, data_is_protected_from_destroy
from tests.synth import Synth


def test_synth_writes_bootstrap_and_one_project_and_mlflow_stack_per_environment(app):
    assert sorted(app.stacks) == [
        "bootstrap",
        "mlflow-example",
        "mlflow-example-project",
        "mlflow-prod",
        "mlflow-prod-project",
        "mlflow-small",
        "mlflow-small-project",
        "mlflow-teams",
        "mlflow-teams-project",
    ]


def test_bootstrap_keeps_its_state_locally(bootstrap):
    """Terraform runs in cdktf.out/stacks/bootstrap: the path lands beside cdktf.json, outside build output."""
    assert bootstrap["terraform"]["backend"] == {"local": {"path": "../../../terraform.bootstrap.tfstate"}}


def test_environment_stacks_keep_state_in_the_bootstrap_bucket_under_their_own_prefix(app):
    # Every stack but bootstrap (the list itself is pinned by the test above).
    for name in sorted(set(app.stacks) - {"bootstrap"}):
        environment = name.split("-")[1]
        assert app.stacks[name]["terraform"]["backend"] == {
            "gcs": {"bucket": "example-mlflow-project-tfstate", "prefix": f"{environment}/{name}"}
        }


def test_the_mlflow_stack_is_applied_after_the_stack_with_its_registry(app):
    """The service needs its image, the image needs its registry: never apply twice to get past it."""
    for environment in ("example", "prod", "small"):
        manifest = app.manifest["stacks"][f"mlflow-{environment}"]
        assert manifest["dependencies"] == [f"mlflow-{environment}-project"]
        assert app.manifest["stacks"][f"mlflow-{environment}-project"]["dependencies"] == []


def test_the_registry_lives_in_the_project_stack_not_the_mlflow_stack(app):
    assert "google_artifact_registry_repository" in app.stacks["mlflow-example-project"]["resource"]
    assert "google_artifact_registry_repository" not in app.stacks["mlflow-example"]["resource"]


def test_every_stack_requires_the_maintained_google_provider_and_terraform_1_11(app):
    """Not the 6.50 the cdktf binding would write: the Terraform targets google 8.x on both runtimes."""
    for name, stack in app.stacks.items():
        terraform = stack["terraform"]
        assert terraform["required_version"] == ">= 1.11.0", name
        assert terraform["required_providers"]["google"] == {"source": "hashicorp/google", "version": "~> 8.7"}, name


def test_random_is_required_only_where_a_password_or_key_is_generated(app):
    for name, stack in app.stacks.items():
        random = stack["terraform"]["required_providers"].get("random")
        if "random_password" in stack.get("resource", {}) | stack.get("ephemeral", {}):
            assert random == {"source": "hashicorp/random", "version": "~> 3.9"}, name
        else:
            assert random is None, name


def test_the_bootstrap_state_moves_into_the_bucket_it_created(tmp_path, example_config):
    """README *Moving the bootstrap state*: the backend `terraform init -migrate-state` moves it to."""
    moved = replace_config(example_config, state={"bootstrap_state": "bucket"})
    stacks = Synth([moved], tmp_path).stacks
    assert stacks["bootstrap"]["terraform"]["backend"] == {
        "gcs": {"bucket": "example-mlflow-project-tfstate", "prefix": "bootstrap"}
    }
    assert stacks["mlflow-example"]["terraform"]["backend"]["gcs"]["prefix"] == "example/mlflow-example"


def test_post_deploy_commands_are_outputs_with_the_real_names_project_and_region(mlflow, project_stack):
    """Each command the README asks users to run after a deploy works as pasted from `cdktf output`."""
    outputs = {name: body["value"] for name, body in mlflow["output"].items()}
    (zone,) = mlflow["resource"]["google_dns_managed_zone"]
    assert outputs["ds_record_command"] == (
        f"gcloud dns dns-keys list --zone=${{google_dns_managed_zone.{zone}.name}} --project=example-mlflow-project "
        "--filter=type=keySigning --format='value(ds_record())'"
    )
    (certificate,) = mlflow["resource"]["google_compute_managed_ssl_certificate"]
    assert outputs["certificate_status_command"].startswith(
        f"gcloud compute ssl-certificates describe ${{google_compute_managed_ssl_certificate.{certificate}.name}} "
        "--global --project=example-mlflow-project "
    )
    assert outputs["migration_command"].endswith("--project=example-mlflow-project --region=europe-west1 --wait")
    (service,) = mlflow["resource"]["google_cloud_run_v2_service"]
    assert (
        f'resource.labels.service_name="${{google_cloud_run_v2_service.{service}.name}}"'
        in outputs["server_logs_command"]
    )
    (job,) = mlflow["resource"]["google_cloud_run_v2_job"]
    assert f'resource.labels.job_name="${{google_cloud_run_v2_job.{job}.name}}"' in outputs["migration_logs_command"]
    for name in ("server_logs_command", "migration_logs_command"):
        assert "--project=example-mlflow-project" in outputs[name], outputs[name]
    build = project_stack["output"]["image_build_command"]["value"]
    assert "--project=example-mlflow-project --region=europe-west1" in build


def test_ci_outputs_are_named_like_the_workflows_repository_variables(app):
    workflow = (Path(__file__).resolve().parent.parent / ".github" / "workflows" / "terraform.yml").read_text()
    outputs = app.stacks["mlflow-prod-project"]["output"]
    for variable in ("WIF_PROVIDER", "PLANNER_SERVICE_ACCOUNT", "DEPLOYER_SERVICE_ACCOUNT"):
        assert f"vars.{variable}" in workflow
        assert outputs[variable.lower()]["description"] == f"GitHub repository variable {variable}"


def protections(stack):
    """Every guard against `terraform destroy` in a stack: prevent_destroy, deletion protection, a bucket
    that refuses to go while it holds objects."""
    found = []
    for type_, items in stack.get("resource", {}).items():
        for key, body in items.items():
            address = f"{type_}.{key}"
            if body.get("lifecycle", {}).get("prevent_destroy"):
                found.append(f"{address}: prevent_destroy")
            if body.get("deletion_protection") or body.get("settings", {}).get("deletion_protection_enabled"):
                found.append(f"{address}: deletion_protection")
    return sorted(found)


def stateful(stack):
    return sorted(f"{t}.{k}" for t, items in stack.get("resource", {}).items() if t in DATA_RESOURCES for k in items)


def test_tearing_down_lifts_every_protection_of_every_stack_and_says_so(tmp_path, app, example_config, prod_config):
    """protect_data = false is the README's first tear-down step: afterwards nothing in any stack of the
    environment refuses a destroy, the build bucket included (it is deleted with its sources and logs);
    with true, every stateful resource of every stack is guarded. The bootstrap state bucket is shared by
    all environments and deleted by hand (README: Tear-down)."""
    off = Synth([replace_config(cfg, protect_data=False) for cfg in (example_config, prod_config)], tmp_path / "off")
    environment_stacks = [name for name in off.stacks if name != "bootstrap"]
    assert len(environment_stacks) == 4
    for name in environment_stacks:
        assert stateful(off.stacks[name]), f"{name} has no stateful resource: this spec checks nothing there"
        assert protections(off.stacks[name]) == [], name
        assert not data_is_protected_from_destroy(app.stacks[name]), name
        guarded = {line.split(":")[0] for line in protections(app.stacks[name])}
        assert set(stateful(app.stacks[name])) <= guarded, name
    (build_bucket,) = [
        body
        for body in off.stacks["mlflow-example-project"]["resource"]["google_storage_bucket"].values()
        if body["name"].endswith("-build")
    ]
    assert build_bucket["force_destroy"] is True
    (instance,) = off.stacks["mlflow-example"]["resource"]["google_sql_database_instance"].values()
    assert instance["deletion_protection"] is False and instance["settings"]["deletion_protection_enabled"] is False
    warnings = [m for m in off.manifest["stacks"]["mlflow-example"]["annotations"] if m["level"].endswith("warn")]
    assert any("protect_data = false" in w["message"] for w in warnings), warnings


def test_a_restored_clone_is_adopted_by_naming_its_instance(tmp_path, example_config):
    cfg = replace_config(example_config, database={"instance_name": "mlflow-db-restored"})
    stack = Synth([cfg], tmp_path).stacks["mlflow-example"]
    (instance,) = stack["resource"]["google_sql_database_instance"].values()
    assert instance["name"] == "mlflow-db-restored"
