"""CI identity: GitHub OIDC through WIF, only this repository's (by id) PR and approved-environment jobs."""

import re

import celpy
import pytest
from celpy import celtypes

from constructs.identity.ci_identity import DEPLOYER_IAM_ADMIN_ROLE, DEPLOYER_ROLES, CiIdentityProps, grants_only
from stacks.project import deployer_roles
from tests.conftest import replace_config
from tests.invariants import grantable_roles
from tests.synth import Synth, assert_matches, one, resources

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


def github_token(
    sub: str,
    repository: str = REPO,
    repository_id: str = REPO_ID,
    owner_id: str = OWNER_ID,
    ref: str = "refs/heads/main",
) -> dict:
    """The claims GitHub puts in an Actions OIDC token that matter here (ids are strings there)."""
    return {
        "sub": f"repo:{repository}:{sub}",
        "repository": repository,
        "repository_id": repository_id,
        "repository_owner": repository.split("/")[0],
        "repository_owner_id": owner_id,
        "ref": ref,
    }


def test_the_provider_accepts_pull_requests_and_the_approved_environment_on_main(app):
    condition = provider_condition(app)
    assert accepts(condition, **github_token("pull_request", ref="refs/pull/7/merge"))
    assert accepts(condition, **github_token("environment:prod"))


@pytest.mark.parametrize(
    "claims, why",
    [
        (
            github_token("pull_request", repository_id="999999999"),
            "the name re-created by someone else: another repository id",
        ),
        (github_token("environment:prod", repository_id="999999999"), "the same, in an environment of that name"),
        (github_token("pull_request", owner_id="7654321"), "the owner's name taken by another account"),
        (github_token("environment:prod", owner_id="7654321"), "the same, deploying"),
        (github_token("environment:prod", ref="refs/heads/feature"), "the approved environment from another branch"),
        (github_token("environment:dev"), "another environment of the repository"),
        (github_token("ref:refs/heads/main"), "a push job outside any environment"),
        (
            github_token("pull_request", repository="acme/other", repository_id="812345679"),
            "another repository of the owner",
        ),
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
    federation = {
        k.split("/")[-1]: v["member"]
        for k, v in resources(stack, "google_service_account_iam_member").items()
        if k.startswith("ci-identity/")
    }
    base = "principal://iam.googleapis.com/${google_iam_workload_identity_pool.ci-identity_pool_54C97608.name}/subject/"
    assert federation == {
        "planner-federation": base + "repo:acme/mlflow-infra:pull_request",
        "deployer-federation": base + "repo:acme/mlflow-infra:environment:prod",
    }
    roles = sorted(m["role"] for m in resources(stack, "google_project_iam_member").values() if m["member"] == PLANNER)
    assert roles == ["roles/iam.securityReviewer", "roles/viewer"]
    state = {v["member"]: v["role"] for v in resources(stack, "google_storage_bucket_iam_member").values()}
    assert state[PLANNER] == "roles/storage.objectViewer"


def deployer_project_grants(stack) -> dict[str, dict]:
    deployer = next(
        f"${{google_service_account.{name}.member}}"
        for name, body in stack["resource"]["google_service_account"].items()
        if body["//"]["metadata"]["path"].endswith("ci-identity/deployer")
    )
    return {m["role"]: m for m in resources(stack, "google_project_iam_member").values() if m["member"] == deployer}


@pytest.fixture(scope="module")
def ci_envs(app, tmp_path_factory, example_config, prod_config, direct_iap_config):
    """{MLflow stack: its project stack} for three environments with CI: the prod-like one (password
    login, alerts, budget, load balancer) and the example and direct-IAP ones (IAM login, no alerts)
    given a [ci] table, synthesized apart."""
    ci = {"github_repository": "acme/mlflow-infra", "repository_id": 1, "repository_owner_id": 2}
    others = Synth(
        [replace_config(c, ci=ci) for c in (example_config, direct_iap_config)], tmp_path_factory.mktemp("ci")
    )
    return {
        "mlflow-prod": (app.stacks["mlflow-prod"], app.stacks["mlflow-prod-project"]),
        "mlflow-example": (others.stacks["mlflow-example"], others.stacks["mlflow-example-project"]),
        "mlflow-small": (others.stacks["mlflow-small"], others.stacks["mlflow-small-project"]),
    }


def test_the_deployer_holds_its_needed_roles_and_a_conditioned_project_iam_admin_only(app, prod_config):
    grants = deployer_project_grants(app.stacks["mlflow-prod-project"])
    assert sorted(grants) == sorted((*deployer_roles(prod_config), DEPLOYER_IAM_ADMIN_ROLE))
    assert set(deployer_roles(prod_config)) <= set(DEPLOYER_ROLES)
    assert all("condition" not in grants[role] for role in DEPLOYER_ROLES if role in grants)
    assert grants[DEPLOYER_IAM_ADMIN_ROLE]["condition"]["expression"].startswith(
        "api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', []).hasOnly(["
    )


# What applying each resource type of an MLflow stack takes (the deployer's view), and the gcloud
# groups its apply-time commands use. A new type fails below until it is mapped to a role here.
ROLE_FOR_RESOURCE = {
    "google_sql_": "roles/cloudsql.admin",
    "google_compute_network": "roles/compute.networkAdmin",
    "google_compute_subnetwork": "roles/compute.networkAdmin",
    "google_compute_global_address": "roles/compute.networkAdmin",
    "google_compute_firewall": "roles/compute.securityAdmin",
    "google_compute_ssl_policy": "roles/compute.securityAdmin",
    "google_compute_backend_service": "roles/compute.loadBalancerAdmin",
    "google_compute_region_network_endpoint_group": "roles/compute.loadBalancerAdmin",
    "google_compute_url_map": "roles/compute.loadBalancerAdmin",
    "google_compute_target_": "roles/compute.loadBalancerAdmin",
    "google_compute_global_forwarding_rule": "roles/compute.loadBalancerAdmin",
    "google_compute_managed_ssl_certificate": "roles/compute.loadBalancerAdmin",
    "google_service_networking_connection": "roles/servicenetworking.networksAdmin",
    "google_dns_": "roles/dns.admin",
    "google_iap_": "roles/iap.admin",
    "google_logging_metric": "roles/logging.configWriter",
    "google_monitoring_alert_policy": "roles/monitoring.alertPolicyEditor",
    "google_monitoring_dashboard": "roles/monitoring.dashboardEditor",
    "google_monitoring_notification_channel": "roles/monitoring.notificationChannelEditor",
    "google_monitoring_uptime_check_config": "roles/monitoring.uptimeCheckConfigEditor",
    "google_cloud_run_v2_": "roles/run.admin",
    "google_secret_manager_": "roles/secretmanager.admin",
    "google_storage_bucket": "roles/storage.admin",
    "google_project_iam_member": DEPLOYER_IAM_ADMIN_ROLE,
    # Billed to the billing account (roles/billing.costsManager there, granted by a billing admin).
    "google_billing_budget": None,
    "random_password": None,
    "terraform_data": None,
}
ROLE_FOR_GCLOUD = {"sql": "roles/cloudsql.admin", "run": "roles/run.admin"}


def roles_needed_by(stack: dict) -> set[str]:
    needed = set()
    for type_, items in stack["resource"].items():
        matches = [role for prefix, role in ROLE_FOR_RESOURCE.items() if type_.startswith(prefix)]
        assert len(matches) == 1, f"map {type_} to the deployer role that applies it in ROLE_FOR_RESOURCE"
        needed |= {matches[0]} - {None}
        for body in items.values():
            for provisioner in body.get("provisioner", []):
                for group in re.findall(
                    r"gcloud (?:beta )?(\w+)", provisioner.get("local-exec", {}).get("command", "")
                ):
                    needed.add(ROLE_FOR_GCLOUD[group])
    # A provider billing its calls to the project (quota project) needs serviceusage.services.use.
    if any(p.get("user_project_override") for p in stack.get("provider", {}).get("google", [])):
        needed.add("roles/serviceusage.serviceUsageConsumer")
    return needed


def test_each_deployer_holds_exactly_the_roles_its_mlflow_stack_needs(ci_envs):
    for name, (mlflow_stack, project) in ci_envs.items():
        assert set(deployer_project_grants(project)) == roles_needed_by(mlflow_stack), name


def test_the_roles_each_deployer_may_grant_are_exactly_the_ones_its_mlflow_stack_grants(ci_envs):
    """Derived from the synthesized MLflow stacks (IAM and password login), so a new project grant in
    the MLflow stack fails here until the deployer may make it, and one no longer made is not left
    grantable."""
    for name, (mlflow_stack, project) in ci_envs.items():
        granted = {body["role"] for body in resources(mlflow_stack, "google_project_iam_member").values()}
        assert grantable_roles(deployer_project_grants(project)[DEPLOYER_IAM_ADMIN_ROLE]["condition"]) == granted, name
    assert {len(g) for g in (resources(m, "google_project_iam_member") for m, _ in ci_envs.values())} == {3, 4}


def may_modify(condition: str, roles: list[str]) -> bool:
    """Evaluate the synthesized IAM condition on a setIamPolicy request modifying grants of `roles`,
    with IAM's two extensions as Google documents them: `api.getAttribute(name, default)` and
    `list.hasOnly(allowed)` (true when every element is allowed)."""
    environment = celpy.Environment()
    program = environment.program(
        environment.compile(condition),
        functions={
            "getAttribute": lambda api, name, default: api.get(name, default),
            "hasOnly": lambda values, allowed: celtypes.BoolType(all(v in allowed for v in values)),
        },
    )
    request = {"api": celpy.json_to_cel({"iam.googleapis.com/modifiedGrantsByRole": roles})}
    return bool(program.evaluate(request))


@pytest.mark.parametrize(
    "roles, allowed",
    [
        (["roles/cloudsql.client"], True),
        (["roles/logging.logWriter", "roles/monitoring.metricWriter"], True),
        (["roles/owner"], False),
        (["roles/iam.serviceAccountAdmin"], False),
        (["roles/iam.workloadIdentityPoolAdmin"], False),
        (["roles/resourcemanager.projectIamAdmin"], False),
        (["roles/cloudsql.client", "roles/editor"], False),
        # Password login (prod): the MLflow stack never grants the IAM database login role.
        (["roles/cloudsql.instanceUser"], False),
    ],
)
def test_the_deployer_may_add_or_remove_grants_of_the_servers_roles_only(app, roles, allowed):
    condition = deployer_project_grants(app.stacks["mlflow-prod-project"])[DEPLOYER_IAM_ADMIN_ROLE]["condition"][
        "expression"
    ]
    assert may_modify(condition, roles) is allowed


def test_the_deployer_may_act_as_the_servers_account_only(app):
    stack = app.stacks["mlflow-prod-project"]
    act_as = {k: v for k, v in resources(stack, "google_service_account_iam_member").items() if v["member"] == DEPLOYER}
    assert list(act_as) == ["server-identity/deployer-acts-as"]
    assert_matches(
        act_as["server-identity/deployer-acts-as"],
        {
            "role": "roles/iam.serviceAccountUser",
            "service_account_id": "${google_service_account.server-identity_account_25E041FD.name}",
        },
    )


def test_the_deployer_has_nothing_over_accounts_pools_apis_or_the_registry(app):
    held = set(deployer_project_grants(app.stacks["mlflow-prod-project"]))
    assert not held & {
        "roles/iam.serviceAccountAdmin",
        "roles/iam.serviceAccountUser",
        "roles/iam.workloadIdentityPoolAdmin",
        "roles/serviceusage.serviceUsageAdmin",
        "roles/artifactregistry.admin",
    }


def test_grants_only_lists_the_roles_sorted_and_quoted():
    assert grants_only(("roles/b", "roles/a")) == (
        "api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', []).hasOnly(['roles/a', 'roles/b'])"
    )


def test_no_service_account_key_for_ci(app):
    assert "google_service_account_key" not in app.stacks["mlflow-prod-project"]["resource"]


PROPS = dict(
    project="p",
    project_number="1",
    github_repository="acme/infra",
    repository_id=1,
    repository_owner_id=2,
    state_bucket="b",
    deploy_environment="prod",
    grantable_roles=("roles/logging.logWriter",),
)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"github_repository": "acme"}, "CiIdentityProps.github_repository: 'acme' must be OWNER/REPO"),
        ({"deploy_environment": ""}, "CiIdentityProps.deploy_environment: is empty"),
        ({"repository_id": 0}, "CiIdentityProps.repository_id: 0 must be GitHub's numeric id"),
        (
            {"repository_owner_id": "4123456"},
            "CiIdentityProps.repository_owner_id: '4123456' must be GitHub's numeric id",
        ),
        ({"grantable_roles": ()}, "CiIdentityProps.grantable_roles: () must list predefined roles/"),
        (
            {"grantable_roles": ("roles/iam.serviceAccountAdmin",)},
            "roles/iam.serviceAccountAdmin administer IAM; the deployer may not grant them",
        ),
        (
            {"deployer_roles": ("roles/owner",)},
            "CiIdentityProps.deployer_roles: roles/owner are not among the reviewed DEPLOYER_ROLES",
        ),
    ],
)
def test_the_ci_identity_refuses_props_that_make_no_sense(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        CiIdentityProps(**{**PROPS, **change})
