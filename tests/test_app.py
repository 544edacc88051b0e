"""The app: which stacks exist, where each keeps its state, and the order they are applied in."""

from __future__ import annotations


def test_synth_writes_bootstrap_and_one_project_and_mlflow_stack_per_environment(app):
    assert sorted(app.stacks) == [
        "bootstrap",
        "mlflow-example",
        "mlflow-example-project",
        "mlflow-prod",
        "mlflow-prod-project",
    ]


def test_bootstrap_keeps_its_state_locally(bootstrap):
    """Terraform runs in cdktf.out/stacks/bootstrap: the path lands beside cdktf.json, outside build output."""
    assert bootstrap["terraform"]["backend"] == {"local": {"path": "../../../terraform.bootstrap.tfstate"}}


def test_environment_stacks_keep_state_in_the_bootstrap_bucket_under_their_own_prefix(app):
    for name in ("mlflow-example", "mlflow-example-project", "mlflow-prod", "mlflow-prod-project"):
        environment = name.split("-")[1]
        assert app.stacks[name]["terraform"]["backend"] == {
            "gcs": {"bucket": "example-mlflow-project-tfstate", "prefix": f"{environment}/{name}"}
        }


def test_the_mlflow_stack_is_applied_after_the_stack_with_its_registry(app):
    """The service needs its image, the image needs its registry: never apply twice to get past it."""
    for environment in ("example", "prod"):
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


def test_random_is_required_only_where_the_password_is_generated(app):
    for name, stack in app.stacks.items():
        random = stack["terraform"]["required_providers"].get("random")
        if "random_password" in stack.get("resource", {}):
            assert random == {"source": "hashicorp/random", "version": "~> 3.9"}, name
        else:
            assert random is None, name
