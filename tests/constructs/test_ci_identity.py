"""CI identity: GitHub OIDC through WIF, only this repository's (by id) PR and approved-environment jobs."""

import re

import celpy
import pytest

from constructs.ci_identity import DEPLOYER_IAM_ADMIN_ROLE, DEPLOYER_ROLES, CiIdentityProps, grants_only
from stacks.mlflow import mlflow_stack_name
from tests.invariants import grantable_roles
from tests.synth import assert_matches, one, resources

REPO, REPO_ID, OWNER_ID = "acme/mlflow-infra", "812345678", "4123456"
DEPLOYER = "${google_service_account.ci-identity_deployer_477C7F50.member}"
PLANNER = "${google_service_account.ci-identity_planner_1B38E68C.member}"


def test_no_ci_identity_unless_a_repository_is_configured(project_stack):
    assert "google_iam_workload_identity_pool" not in project_stack["resource"]


def provider_condition(app) -> str:
    return one(app.stacks["mlflow-prod-project"], "google_iam_workload_identity_pool_provider")["attribute_condition"]


def accepts(condition: str, **claims: str) -> bool:
    """Evaluate the synthesized CEL expression on a GitHub token's claims, as STS does."""
    environment = celpy.Environment()
    program = environment.program(environment.compile(condition))
    return bool(program.evaluate({"assertion": celpy.json_to_cel(claims)}))


def github_token(sub: str, repository: str = REPO, repository_id: str = REPO_ID, owner_id: str = OWNER_ID,
                 ref: str = "refs/heads/main") -> dict:
    """The claims GitHub puts in an Actions OIDC token that matter here (ids are strings there)."""
    return {"sub": f"repo:{repository}:{sub}", "repository": repository, "repository_id": repository_id,
            "repository_owner": repository.split("/")[0], "repository_owner_id": owner_id, "ref": ref}


def test_the_provider_accepts_pull_requests_and_the_approved_environment_on_main(app):
    condition = provider_condition(app)
    assert accepts(condition, **github_token("pull_request", ref="refs/pull/7/merge"))
    assert accepts(condition, **github_token("environment:prod"))


@pytest.mark.parametrize(
    "claims, why",
    [
        (github_token("pull_request", repository_id="999999999"), "the name re-created by someone else: another repository id"),
        (github_token("environment:prod", repository_id="999999999"), "the same, in an environment of that name"),
        (github_token("pull_request", owner_id="7654321"), "the owner's name taken by another account"),
        (github_token("environment:prod", owner_id="7654321"), "the same, deploying"),
        (github_token("environment:prod", ref="refs/heads/feature"), "the approved environment from another branch"),
        (github_token("environment:dev"), "another environment of the repository"),
        (github_token("ref:refs/heads/main"), "a push job outside any environment"),
        (github_token("pull_request", repository="acme/other", repository_id="812345679"), "another repository of the owner"),
    ],
)
def test_the_provider_refuses_a_token_of_the_same_name_with_other_ids_or_refs(app, claims, why):
    assert not accepts(provider_condition(app), **claims), why


def test_the_condition_binds_the_configured_ids(app, prod_config):
    condition = provider_condition(app)
    assert f"assertion.repository_id == '{prod_config.ci.repository_id}'" in condition
    assert f"assertion.repository_owner_id == '{prod_config.ci.repository_owner_id}'" in condition


def test_the_planner_is_read_only_and_the_deployer_needs_the_environment(app):
    stack = app.stacks["mlflow-prod-project"]
    federation = {k.split("/")[-1]: v["member"] for k, v in resources(stack, "google_service_account_iam_member").items() if k.startswith("ci-identity/")}
    base = "principal://iam.googleapis.com/${google_iam_workload_identity_pool.ci-identity_pool_54C97608.name}/subject/"
    assert federation == {
        "planner-federation": base + "repo:acme/mlflow-infra:pull_request",
        "deployer-federation": base + "repo:acme/mlflow-infra:environment:prod",
    }
    roles = sorted(m["role"] for m in resources(stack, "google_project_iam_member").values() if m["member"] == PLANNER)
    assert roles == ["roles/iam.securityReviewer", "roles/viewer"]
    state = {v["member"]: v["role"] for v in resources(stack, "google_storage_bucket_iam_member").values()}
    assert state[PLANNER] == "roles/storage.objectViewer"


def deployer_project_grants(app) -> dict[str, dict]:
    stack = app.stacks["mlflow-prod-project"]
    return {m["role"]: m for m in resources(stack, "google_project_iam_member").values() if m["member"] == DEPLOYER}


def test_the_deployer_holds_its_listed_roles_and_a_conditioned_project_iam_admin_only(app):
    grants = deployer_project_grants(app)
    assert sorted(grants) == sorted(DEPLOYER_ROLES + (DEPLOYER_IAM_ADMIN_ROLE,))
    assert all("condition" not in grants[role] for role in DEPLOYER_ROLES)
    assert grants[DEPLOYER_IAM_ADMIN_ROLE]["condition"]["expression"].startswith(
        "api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', []).hasOnly(["
    )


def test_the_roles_the_deployer_may_grant_are_exactly_the_ones_the_stacks_it_applies_grant(app, example_config, prod_config, direct_iap_config):
    """Derived from the synthesized MLflow stacks of every configuration (IAM and password login), so a
    new project grant in the MLflow stack fails here until the deployer may make it, and a grant the
    stack no longer makes is not left grantable."""
    granted = {
        body["role"]
        for cfg in (example_config, prod_config, direct_iap_config)
        for body in resources(app.stacks[mlflow_stack_name(cfg)], "google_project_iam_member").values()
    }
    condition = deployer_project_grants(app)[DEPLOYER_IAM_ADMIN_ROLE]["condition"]
    assert grantable_roles(condition) == granted


def test_the_deployer_may_act_as_the_servers_account_only(app):
    stack = app.stacks["mlflow-prod-project"]
    act_as = {k: v for k, v in resources(stack, "google_service_account_iam_member").items() if v["member"] == DEPLOYER}
    assert list(act_as) == ["server-identity/deployer-acts-as"]
    assert_matches(act_as["server-identity/deployer-acts-as"], {
        "role": "roles/iam.serviceAccountUser",
        "service_account_id": "${google_service_account.server-identity_account_25E041FD.name}",
    })


def test_the_deployer_has_nothing_over_accounts_pools_apis_or_the_registry(app):
    held = set(deployer_project_grants(app))
    assert not held & {
        "roles/iam.serviceAccountAdmin", "roles/iam.serviceAccountUser", "roles/iam.workloadIdentityPoolAdmin",
        "roles/serviceusage.serviceUsageAdmin", "roles/artifactregistry.admin",
    }


def test_grants_only_lists_the_roles_sorted_and_quoted():
    assert grants_only(("roles/b", "roles/a")) == (
        "api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', []).hasOnly(['roles/a', 'roles/b'])"
    )


def test_no_service_account_key_for_ci(app):
    assert "google_service_account_key" not in app.stacks["mlflow-prod-project"]["resource"]


PROPS = dict(project="p", project_number="1", github_repository="acme/infra", repository_id=1, repository_owner_id=2,
             state_bucket="b", deploy_environment="prod", grantable_roles=("roles/logging.logWriter",))


@pytest.mark.parametrize(
    "change, message",
    [({"github_repository": "acme"}, "CiIdentityProps.github_repository: 'acme' must be OWNER/REPO"),
     ({"deploy_environment": ""}, "CiIdentityProps.deploy_environment: is empty"),
     ({"repository_id": 0}, "CiIdentityProps.repository_id: 0 must be GitHub's numeric id"),
     ({"repository_owner_id": "4123456"}, "CiIdentityProps.repository_owner_id: '4123456' must be GitHub's numeric id"),
     ({"grantable_roles": ()}, "CiIdentityProps.grantable_roles: () must list predefined roles/"),
     ({"grantable_roles": ("roles/iam.serviceAccountAdmin",)}, "roles/iam.serviceAccountAdmin administer IAM; the deployer may not grant them")],
)
def test_the_ci_identity_refuses_props_that_make_no_sense(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        CiIdentityProps(**{**PROPS, **change})
