"""CI identity: GitHub OIDC through WIF, only this repository's PR and approved-environment jobs."""

import re

import pytest

from constructs.ci_identity import CiIdentityProps
from tests.synth import assert_matches, one, resources


def test_no_ci_identity_unless_a_repository_is_configured(project_stack):
    assert "google_iam_workload_identity_pool" not in project_stack["resource"]


def test_the_provider_accepts_only_pull_requests_and_the_approved_environment(app):
    provider = one(app.stacks["mlflow-prod-project"], "google_iam_workload_identity_pool_provider")
    assert_matches(
        provider,
        {
            "oidc": {"issuer_uri": "https://token.actions.githubusercontent.com"},
            "attribute_condition": "assertion.sub == 'repo:acme/mlflow-infra:pull_request' || "
            "assertion.sub == 'repo:acme/mlflow-infra:environment:prod'",
        },
    )


def test_the_planner_is_read_only_and_the_deployer_needs_the_environment(app):
    stack = app.stacks["mlflow-prod-project"]
    federation = {k.split("/")[-1]: v["member"] for k, v in resources(stack, "google_service_account_iam_member").items() if k.startswith("ci-identity/")}
    base = "principal://iam.googleapis.com/${google_iam_workload_identity_pool.ci-identity_pool_54C97608.name}/subject/"
    assert federation == {
        "planner-federation": base + "repo:acme/mlflow-infra:pull_request",
        "deployer-federation": base + "repo:acme/mlflow-infra:environment:prod",
    }
    planner = "${google_service_account.ci-identity_planner_1B38E68C.member}"
    roles = sorted(m["role"] for m in resources(stack, "google_project_iam_member").values() if m["member"] == planner)
    assert roles == ["roles/iam.securityReviewer", "roles/viewer"]
    state = {v["member"]: v["role"] for v in resources(stack, "google_storage_bucket_iam_member").values()}
    assert state[planner] == "roles/storage.objectViewer"


def test_no_service_account_key_for_ci(app):
    assert "google_service_account_key" not in app.stacks["mlflow-prod-project"]["resource"]


@pytest.mark.parametrize(
    "change, message",
    [({"github_repository": "acme"}, "CiIdentityProps.github_repository: 'acme' must be OWNER/REPO"),
     ({"deploy_environment": ""}, "CiIdentityProps.deploy_environment: is empty")],
)
def test_the_ci_identity_refuses_props_that_make_no_sense(change, message):
    props = dict(project="p", project_number="1", github_repository="acme/infra", state_bucket="b", deploy_environment="prod")
    with pytest.raises(ValueError, match=re.escape(message)):
        CiIdentityProps(**{**props, **change})
