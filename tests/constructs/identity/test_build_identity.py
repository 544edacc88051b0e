"""The build identity: `gcloud builds submit` as an account of our own, with only what a build needs."""

from __future__ import annotations

import shlex

import pytest

from constructs.identity.build_identity import BuildIdentityProps
from tests.synth import assert_matches, resource, resources

ACCOUNT = "${google_service_account.build-identity_account_2C7A9AB2.member}"
BUCKET = "${google_storage_bucket.build-identity_bucket_FB188A51.name}"
BUILDER_ROLE = "${google_project_iam_custom_role.build-identity_builder-role_24231E0A.name}"


def grants_to(stack: dict, member: str) -> dict[str, str]:
    """Every IAM binding of `member` in the stack: construct path -> role."""
    return {
        body["//"]["metadata"]["path"].split("/", 1)[1]: body["role"]
        for type_, items in stack.get("resource", {}).items()
        if type_.endswith("_iam_member")
        for body in items.values()
        if body.get("member") == member
    }


def test_the_build_account_is_a_dedicated_service_account(project_stack):
    assert_matches(
        resource(project_stack, "google_service_account", "build-identity/account"),
        {"account_id": "mlflow-build", "project": "example-mlflow-project"},
    )


def test_it_may_write_logs_its_own_bucket_and_our_registry_and_nothing_else(project_stack, mlflow):
    assert grants_to(project_stack, ACCOUNT) == {
        "build-identity/logWriter": "roles/logging.logWriter",
        "build-identity/bucket/bucket-object-user": "roles/storage.objectUser",
        "registry/build-writer": "roles/artifactregistry.writer",
    }
    assert (
        resource(project_stack, "google_storage_bucket_iam_member", "build-identity/bucket/bucket-object-user")[
            "bucket"
        ]
        == BUCKET
    )
    writer = resource(project_stack, "google_artifact_registry_repository_iam_member", "registry/build-writer")
    assert writer["repository"] == "${google_artifact_registry_repository.registry_repository_BAFE171E.name}"
    assert not grants_to(mlflow, ACCOUNT)


def test_its_bucket_is_private_and_in_the_region(project_stack):
    assert_matches(
        resource(project_stack, "google_storage_bucket", "build-identity/bucket/bucket"),
        {
            "name": "example-mlflow-project-mlflow-build",
            "location": "europe-west1",
            "uniform_bucket_level_access": True,
            "public_access_prevention": "enforced",
        },
    )


def test_the_build_command_output_is_complete(project_stack, mlflow):
    """README step 3 works as pasted: every flag a build as our account needs, in our bucket."""
    command = shlex.split(project_stack["output"]["image_build_command"]["value"])
    assert command[:4] == ["gcloud", "builds", "submit", "docker"]
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in command[4:])
    image = resources(mlflow, "google_cloud_run_v2_service")["tracking-service/service"]["template"]["containers"][0][
        "image"
    ]
    assert flags == {
        "project": "example-mlflow-project",
        "region": "europe-west1",
        "service-account": "projects/example-mlflow-project/serviceAccounts/${google_service_account.build-identity_account_2C7A9AB2.email}",
        "gcs-source-staging-dir": f"gs://{BUCKET}/source",
        "gcs-log-dir": f"gs://{BUCKET}/logs",
        "tag": image,
    }


def test_the_build_identity_waits_for_the_apis(project_stack):
    deps = resource(project_stack, "google_service_account", "build-identity/account")["depends_on"]
    assert any(d.startswith("google_project_service.apis_iam_") for d in deps), deps


def test_no_one_else_may_submit_builds_as_it_unless_configured(app):
    example = app.stacks["mlflow-example-project"]
    assert not resources(example, "google_service_account_iam_member")
    prod = app.stacks["mlflow-prod-project"]
    assert grants_to(prod, "group:ml-platform@example.com") == {
        "build-identity/submitter-group-ml-platform-example-com-acts-as": "roles/iam.serviceAccountUser",
        "build-identity/submitter-group-ml-platform-example-com-builds": BUILDER_ROLE,
        "build-identity/bucket/submitter-group-ml-platform-example-com-bucket": "roles/storage.objectUser",
    }


def test_builders_may_create_and_follow_builds_and_nothing_more_of_cloud_build(app):
    """Not cloudbuild.builds.editor: no updating, cancelling or approving other people's builds."""
    role = resource(app.stacks["mlflow-prod-project"], "google_project_iam_custom_role", "build-identity/builder-role")
    assert_matches(
        role,
        {
            "role_id": "mlflow_build_submitter",
            "project": "example-mlflow-prod",
            "permissions": ["cloudbuild.builds.create", "cloudbuild.builds.get"],
        },
    )
    assert "google_project_iam_custom_role" not in app.stacks["mlflow-example-project"]["resource"]


@pytest.mark.parametrize(
    ("change", "message"),
    [({"account_id": "a-very-long-name-prefix-build-x"}, "6-30"), ({"bucket_name": "Not_A_Bucket"}, "bucket name")],
)
def test_names_over_their_limits_are_refused(change, message):
    props = dict(project="p", region="europe-west1", account_id="mlflow-build", bucket_name="p-mlflow-build")
    with pytest.raises(ValueError, match=message):
        BuildIdentityProps(**{**props, **change})
