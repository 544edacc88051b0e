"""APIs: the project stack enables exactly the APIs that the deployment calls, derived from what it emits.

Every resource type of the stacks, every role granted (what its holder will call), every `gcloud`
command of the apply (local-exec), of an output and of the README, and every Google API host the
client plugin calls map to an API here; a new one that is not mapped fails, and so does an API that
is needed but not enabled, or enabled but needed by nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from constructs.project.project_services import ProjectServicesProps
from tests.synth import resources

REPO = Path(__file__).resolve().parents[3]
# The README and the reference it links to (docs/*.md).
README = "".join(p.read_text() for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])

# Resource type (or type prefix) -> the APIs creating, reading and deleting it call.
RESOURCE_APIS = {
    "google_artifact_registry_": {"artifactregistry"},
    "google_billing_budget": {"billingbudgets"},
    "google_cloud_run_v2_": {"run"},
    "google_compute_": {"compute"},
    "google_dns_": {"dns"},
    "google_iam_workload_identity_pool": {"iam"},
    "google_iap_": {"iap"},
    "google_logging_": {"logging"},
    "google_monitoring_": {"monitoring"},
    "google_project_iam_": {"cloudresourcemanager"},
    # Enabling an API calls serviceusage; reading it first checks the project (resourcemanager).
    "google_project_service": {"serviceusage", "cloudresourcemanager"},
    "google_secret_manager_": {"secretmanager"},
    "google_service_account": {"iam"},
    "google_service_networking_connection": {"servicenetworking", "compute"},
    "google_sql_": {"sqladmin"},
    "google_storage_bucket": {"storage"},
    "random_": set(),
    "terraform_data": set(),
}
# Role service -> the API the holder of the role calls with it (roles/<service>.<name>).
ROLE_APIS = {
    "artifactregistry": {"artifactregistry"},
    "cloudbuild": {"cloudbuild"},
    "cloudsql": {"sqladmin"},
    "compute": {"compute"},
    "dns": {"dns"},
    "iam": {"iam"},
    "iap": {"iap"},
    "logging": {"logging"},
    "monitoring": {"monitoring"},
    "resourcemanager": {"cloudresourcemanager"},
    "run": {"run"},
    "secretmanager": {"secretmanager"},
    "servicenetworking": {"servicenetworking"},
    "serviceusage": {"serviceusage"},
    "storage": {"storage"},
    # Basic and review roles read through every API the others name.
    "viewer": set(),
}
# Roles whose use goes through another API than their service name says.
ROLE_EXCEPTIONS = {
    # Federated tokens are exchanged by STS, then an access token is minted by IAM Credentials.
    "roles/iam.workloadIdentityUser": {"sts", "iamcredentials"},
    # The client plugin signs IAP JWTs with signJwt.
    "roles/iam.serviceAccountTokenCreator": {"iamcredentials"},
}
# gcloud command group -> API (`gcloud [beta] GROUP ...`).
GCLOUD_APIS = {
    "auth": set(),
    # Run by a person to look up the billing account id (README), against their own quota project.
    "billing": set(),
    "builds": {"cloudbuild", "storage", "artifactregistry"},
    "compute": {"compute"},
    "dns": {"dns"},
    "logging": {"logging"},
    "projects": {"cloudresourcemanager"},
    "iap": {"iap"},
    "run": {"run"},
    "secrets": {"secretmanager"},
    "sql": {"sqladmin"},
    "storage": {"storage"},
    "services": {"serviceusage"},
}
GCLOUD = re.compile(r"gcloud (?:beta |alpha )?([a-z-]+)")
# Enabled by hand before the first apply (README, first deploy step 0): the project stack cannot
# enable anything before these are on, and the bootstrap stack comes before it.
PREREQUISITE = re.compile(r"gcloud services enable ((?:[a-z]+\.googleapis\.com ?)+)")


def apis_of_resource_type(type_: str) -> set[str]:
    matches = [apis for prefix, apis in RESOURCE_APIS.items() if type_.startswith(prefix)]
    assert matches, f"map resource type {type_} to its API in RESOURCE_APIS"
    return set().union(*matches)


def apis_of_role(role: str) -> set[str]:
    if role in ROLE_EXCEPTIONS:
        return ROLE_EXCEPTIONS[role]
    service = role.removeprefix("roles/").split(".")[0]
    assert service in ROLE_APIS, f"map the role {role} to the API its holder calls in ROLE_APIS"
    return ROLE_APIS[service]


def apis_of_granted(stack: dict, role: str) -> set[str]:
    """A predefined role's APIs, or a custom role's of this stack: those its permissions name."""
    custom = re.fullmatch(r"\$\{google_project_iam_custom_role\.([\w-]+)\.name\}", role)
    if not custom:
        return apis_of_role(role)
    permissions = stack["resource"]["google_project_iam_custom_role"][custom.group(1)]["permissions"]
    return set().union(*(apis_of_role(f"roles/{permission}") for permission in permissions))


def apis_of_commands(text: str) -> set[str]:
    apis: set[str] = set()
    for group in GCLOUD.findall(text):
        assert group in GCLOUD_APIS, f"map `gcloud {group}` to its API in GCLOUD_APIS"
        apis |= GCLOUD_APIS[group]
    return apis


def commands_of(stack: dict) -> str:
    """Every command the apply runs (local-exec) and every output value, as one text."""
    texts = [str(output.get("value", "")) for output in stack.get("output", {}).values()]
    for items in stack.get("resource", {}).values():
        for body in items.values():
            for provisioner in body.get("provisioner", []):
                texts.append(provisioner.get("local-exec", {}).get("command", ""))
    return "\n".join(texts)


def needed_by(stack: dict) -> set[str]:
    apis: set[str] = set()
    for kind in ("resource", "data"):
        for type_, items in stack.get(kind, {}).items():
            apis |= apis_of_resource_type(type_)
            for body in items.values():
                if isinstance(body.get("role"), str):
                    apis |= apis_of_granted(stack, body["role"])
    return apis | apis_of_commands(commands_of(stack))


def client_plugin_apis() -> set[str]:
    hosts = set()
    for source in (REPO / "client" / "mlflow_iap_auth").glob("*.py"):
        hosts |= set(re.findall(r"\b([a-z]+)\.googleapis\.com", source.read_text()))
    return hosts - {"www"}


def enabled_in(project_stack: dict) -> set[str]:
    return {
        s["service"].removesuffix(".googleapis.com")
        for s in resources(project_stack, "google_project_service").values()
    }


def prerequisites() -> set[str]:
    [line] = PREREQUISITE.findall(README)
    return {api.removesuffix(".googleapis.com") for api in line.split()}


def test_the_project_stack_enables_every_api_the_deployment_calls_and_no_other(app):
    for env in ("example", "prod"):
        stacks = [app.stacks[f"mlflow-{env}-project"], app.stacks[f"mlflow-{env}"]]
        needed = set().union(*map(needed_by, stacks)) | apis_of_commands(README) | client_plugin_apis()
        enabled = enabled_in(app.stacks[f"mlflow-{env}-project"])
        assert not needed - enabled, f"enable these in stacks/project.py APIS: {sorted(needed - enabled)}"
        assert not enabled - needed, (
            f"nothing calls these; remove them from APIS or map their caller: {sorted(enabled - needed)}"
        )


def test_what_must_be_on_before_the_first_apply_is_enabled_by_hand_in_the_readme(app, project_stack):
    """The bootstrap stack runs first, and enabling an API needs serviceusage and resourcemanager."""
    before_project_stack = needed_by(app.stacks["bootstrap"]) | {"serviceusage", "cloudresourcemanager"}
    assert before_project_stack <= prerequisites(), sorted(before_project_stack - prerequisites())
    assert prerequisites() <= enabled_in(project_stack)


def test_the_client_plugin_calls_iam_credentials_and_a_build_calls_cloud_build(project_stack):
    """The derivation itself sees the callers the issue names."""
    assert "iamcredentials" in client_plugin_apis()
    assert {"cloudbuild", "storage", "artifactregistry"} <= apis_of_commands(
        project_stack["output"]["image_build_command"]["value"]
    )


def test_an_unmapped_resource_type_role_or_command_fails_the_derivation():
    with pytest.raises(AssertionError, match="RESOURCE_APIS"):
        apis_of_resource_type("google_bigquery_dataset")
    with pytest.raises(AssertionError, match="ROLE_APIS"):
        apis_of_role("roles/bigquery.dataEditor")
    with pytest.raises(AssertionError, match="GCLOUD_APIS"):
        apis_of_commands("gcloud pubsub topics create t")


def test_no_api_is_disabled_on_destroy(project_stack):
    for service in resources(project_stack, "google_project_service").values():
        assert service["disable_on_destroy"] is False and service["disable_dependent_services"] is False


@pytest.mark.parametrize(
    "services, message",
    [
        ((), "ProjectServicesProps.services: is empty"),
        (("run.googleapis.com", "run.googleapis.com"), "'run.googleapis.com' must be"),
        (("run",), "'run' must be a NAME.googleapis.com"),
    ],
)
def test_project_services_refuse_props_that_make_no_sense(services, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ProjectServicesProps("p", services)
