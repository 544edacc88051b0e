"""The image registry: a regional Docker repository with immutable tags, in the project stack."""

import re

import pytest

from constructs.project.image_registry import ImageRegistryProps
from tests.synth import assert_matches, one


def test_the_registry_is_a_regional_docker_repository_with_immutable_tags(project_stack):
    assert_matches(
        one(project_stack, "google_artifact_registry_repository"),
        {
            "repository_id": "mlflow-images",
            "location": "europe-west1",
            "format": "DOCKER",
            "docker_config": {"immutable_tags": True},
        },
    )


def test_the_registry_waits_for_its_api(project_stack):
    deps = one(project_stack, "google_artifact_registry_repository")["depends_on"]
    assert "google_project_service.apis_artifactregistry_451C969A" in deps


def test_old_untagged_images_are_cleaned_up(project_stack):
    policies = {p["id"]: p for p in one(project_stack, "google_artifact_registry_repository")["cleanup_policies"]}
    assert policies["keep-recent"]["most_recent_versions"]["keep_count"] == 10
    assert policies["delete-old-untagged"]["condition"]["tag_state"] == "UNTAGGED"


def test_the_service_runs_an_image_from_this_registry(project_stack, mlflow):
    registry = one(project_stack, "google_artifact_registry_repository")
    image = one(mlflow, "google_cloud_run_v2_service")["template"]["containers"][0]["image"]
    host, project, repository, _ = image.split("/", 3)
    assert (host, project, repository) == (
        f"{registry['location']}-docker.pkg.dev",
        registry["project"],
        registry["repository_id"],
    )


def test_the_build_command_pushes_the_tag_the_service_runs(project_stack, mlflow):
    command = project_stack["output"]["image_build_command"]["value"]
    image = one(mlflow, "google_cloud_run_v2_service")["template"]["containers"][0]["image"]
    assert command.startswith("gcloud builds submit docker ") and command.split("--tag=")[1] == image


@pytest.mark.parametrize(
    "change, message",
    [
        ({"keep_recent_versions": 0}, "ImageRegistryProps.keep_recent_versions: 0"),
        ({"repository_id": ""}, "ImageRegistryProps.repository_id: is empty"),
    ],
)
def test_the_registry_refuses_props_that_make_no_sense(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ImageRegistryProps(**{**dict(project="p", region="r", repository_id="images"), **change})
