"""Security invariants over a synthesized stack: each a pure function returning its violations.

A rule that cannot read the value it needs reports a violation; it never passes by default.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from constructs.identity.ci_identity import DEPLOYER_IAM_ADMIN_ROLE, DEPLOYER_ROLES, IAM_ADMIN_ROLES, PLANNER_ROLES
from constructs.identity.server_roles import PROJECT_ROLES
from tests.synth import all_resources

Stack = dict[str, Any]
PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")
DATA_RESOURCES = ("google_sql_database_instance", "google_storage_bucket", "google_secret_manager_secret")


def no_public_ip_on_sql(stack: Stack) -> list[str]:
    """A public IP puts the database on the internet, whatever its authorized networks say."""
    return [
        f"{path}: ipv4_enabled is not false"
        for type_, path, body in all_resources(stack)
        if type_ == "google_sql_database_instance"
        and body.get("settings", {}).get("ip_configuration", {}).get("ipv4_enabled") is not False
    ]


def no_public_members(stack: Stack) -> list[str]:
    """allUsers / allAuthenticatedUsers anywhere in IAM makes a resource public."""
    return [
        f"{path}: grants {member}"
        for _, path, body in all_resources(stack)
        for member in PUBLIC_MEMBERS
        if member in json.dumps({k: v for k, v in body.items() if k != "//"})
    ]


def no_service_account_keys(stack: Stack) -> list[str]:
    """A key is a long-lived secret that leaks; every identity here is keyless."""
    return [
        f"{path}: is a service account key"
        for type_, path, _ in all_resources(stack)
        if type_ == "google_service_account_key"
    ]


def server_account_has_no_admin_roles(stack: Stack) -> list[str]:
    """The server runs user-supplied requests; a broad role turns a bug into a project takeover."""
    servers = {
        f"serviceAccount:{body['template'].get('service_account', '')}"
        for type_, _, body in all_resources(stack)
        if type_ == "google_cloud_run_v2_service"
    }
    if servers and not all(s.endswith(".iam.gserviceaccount.com") for s in servers):
        return [f"a Cloud Run service runs as no dedicated account it names: {sorted(servers)}"]
    return [
        f"{path}: gives the server {body['role']}"
        for type_, path, body in all_resources(stack)
        if type_ == "google_project_iam_member"
        and body.get("member") in servers
        and (body.get("role") in ("roles/owner", "roles/editor") or "admin" in body.get("role", "").lower())
    ]


def cloud_run_ingress_never_all(stack: Stack) -> list[str]:
    """Ingress ALL bypasses the load balancer, and with it IAP, unless IAP is on the service itself."""
    return [
        f"{path}: ingress is {body.get('ingress', 'unset (defaults to ALL)')} without iap_enabled"
        for type_, path, body in all_resources(stack)
        if type_ == "google_cloud_run_v2_service"
        and body.get("ingress") not in ("INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER", "INGRESS_TRAFFIC_INTERNAL_ONLY")
        and body.get("iap_enabled") is not True
    ]


IAP_SERVICE_AGENT = "@gcp-sa-iap.iam.gserviceaccount.com"


def iap_enabled_service_is_invoked_only_by_iap(stack: Stack) -> list[str]:
    """With IAP on the service and ingress from everywhere, any other invoker could skip IAP's check."""
    services = {
        body["//"]["metadata"]["uniqueId"]
        for type_, _, body in all_resources(stack)
        if type_ == "google_cloud_run_v2_service" and body.get("iap_enabled") is True
    }
    problems = []
    for type_, path, body in all_resources(stack):
        if type_ != "google_cloud_run_v2_service_iam_member":
            continue
        name = body.get("name", "")
        if any(f"google_cloud_run_v2_service.{unique}." in name for unique in services) and not (
            body.get("member", "").startswith("serviceAccount:service-") and body["member"].endswith(IAP_SERVICE_AGENT)
        ):
            problems.append(
                f"{path}: {body.get('member')!r} may invoke an IAP-enabled service; only the IAP service agent may"
            )
    return problems


def data_is_protected_from_destroy(stack: Stack) -> list[str]:
    """`terraform destroy` must not take the database, the artifacts or the secret with it."""
    problems = []
    for type_, path, body in all_resources(stack):
        if type_ not in DATA_RESOURCES:
            continue
        if body.get("lifecycle", {}).get("prevent_destroy") is not True:
            problems.append(f"{path}: lifecycle.prevent_destroy is not true")
        if type_ == "google_storage_bucket" and body.get("force_destroy") is not False:
            problems.append(f"{path}: force_destroy is not false")
        if type_ == "google_sql_database_instance" and not (
            body.get("deletion_protection") is True
            and body.get("settings", {}).get("deletion_protection_enabled") is True
        ):
            problems.append(f"{path}: Terraform or API deletion protection is off")
    return problems


# The roles each kind of IAM binding may grant, and why no other. A role on one resource is as
# dangerous as a project role when it lets the grantee change that resource's policy or delete it.
ALLOWED_ROLES: dict[str, tuple[frozenset[str], str]] = {
    "google_project_iam_member": (
        frozenset((*PROJECT_ROLES, *PLANNER_ROLES, *DEPLOYER_ROLES, DEPLOYER_IAM_ADMIN_ROLE)),
        "only the reviewed lists of server_roles.py and ci_identity.py, and build_identity.py's custom role, are project-wide",
    ),
    "google_storage_bucket_iam_member": (
        frozenset({"roles/storage.objectUser", "roles/storage.objectCreator", "roles/storage.objectViewer"}),
        "objects only: storage.admin or legacyBucketOwner could change the bucket's IAM and retention",
    ),
    "google_secret_manager_secret_iam_member": (
        frozenset({"roles/secretmanager.secretAccessor"}),
        "reading the payload; never adding versions or changing who else reads",
    ),
    "google_cloud_run_v2_service_iam_member": (
        frozenset({"roles/run.invoker"}),
        "calling the service; run.developer or run.admin could deploy another image as the server",
    ),
    "google_cloud_run_v2_job_iam_member": (
        frozenset({"roles/run.invoker"}),
        "executing the migration; never changing what it runs or as whom",
    ),
    "google_service_account_iam_member": (
        frozenset(
            {"roles/iam.serviceAccountTokenCreator", "roles/iam.workloadIdentityUser", "roles/iam.serviceAccountUser"}
        ),
        "signing as, federating to or running builds or the server as that one account; never administering it",
    ),
    "google_artifact_registry_repository_iam_member": (
        frozenset({"roles/artifactregistry.reader", "roles/artifactregistry.writer"}),
        "pulling and pushing images; repoAdmin could delete the tag the service runs",
    ),
    "google_iap_web_backend_service_iam_member": (
        frozenset({"roles/iap.httpsResourceAccessor"}),
        "passing IAP; iap.admin would let a user choose who else passes",
    ),
    "google_iap_web_cloud_run_service_iam_member": (
        frozenset({"roles/iap.httpsResourceAccessor"}),
        "passing IAP on the service; iap.admin would let a user choose who else passes",
    ),
}


def iam_bindings_grant_only_allowed_roles(stack: Stack) -> list[str]:
    """Every IAM binding of every resource type, against the roles that type may grant."""
    problems = []
    for type_, path, body in all_resources(stack):
        if not type_.endswith(("_iam_member", "_iam_binding", "_iam_policy")):
            continue
        if type_.endswith(("_iam_binding", "_iam_policy")):
            problems.append(f"{path}: {type_} is authoritative and removes grants made elsewhere; use the _iam_member")
        elif type_ not in ALLOWED_ROLES:
            problems.append(f"{path}: no allowed roles are listed for {type_}; add them to ALLOWED_ROLES with a reason")
        elif body.get("role") not in ALLOWED_ROLES[type_][0] and not is_builder_role(type_, path, body):
            problems.append(f"{path}: {type_} grants {body.get('role')!r}; allowed: {ALLOWED_ROLES[type_][1]}")
        elif (
            type_ == "google_service_account_iam_member"
            and body.get("role") == "roles/iam.serviceAccountUser"
            and not any(f"/{owner}/" in f"/{path}/" for owner in ACT_AS_ACCOUNTS)
        ):
            problems.append(
                f"{path}: actAs on an account other than the build or server identity lets its holder deploy as it"
            )
    return problems


# The accounts others may act as: the build account (image builders) and the server's (the deployer).
ACT_AS_ACCOUNTS = ("build-identity", "server-identity")


def is_builder_role(type_: str, path: str, body: dict) -> bool:
    """The build identity's own custom role (create and follow builds), granted by it to its submitters."""
    return (
        type_ == "google_project_iam_member"
        and "/build-identity/submitter-" in f"/{path}"
        and bool(
            re.fullmatch(
                r"\$\{google_project_iam_custom_role\.build-identity_builder-role_\w+\.name\}", body.get("role", "")
            )
        )
    )


def no_project_level_act_as_or_token_creator(stack: Stack) -> list[str]:
    """Project-wide, either role covers every service account of the project, present and future."""
    return [
        f"{path}: grants {body['role']} on the whole project; grant it on the one service account"
        for type_, path, body in all_resources(stack)
        if type_ == "google_project_iam_member"
        and body.get("role") in ("roles/iam.serviceAccountUser", "roles/iam.serviceAccountTokenCreator")
    ]


def iam_admin_grants_carry_a_condition(stack: Stack) -> list[str]:
    """An unconditioned IAM admin can grant itself or anyone any role: it is an owner."""
    return [
        f"{path}: grants {body['role']} without a condition limiting what it may grant"
        for type_, path, body in all_resources(stack)
        if type_ == "google_project_iam_member"
        and body.get("role") in IAM_ADMIN_ROLES | {"roles/resourcemanager.projectIamAdmin"}
        and not (body.get("condition") or {}).get("expression")
    ]


GRANTS_ONLY = re.compile(
    r"^api\.getAttribute\('iam\.googleapis\.com/modifiedGrantsByRole', \[\]\)\.hasOnly\(\[((?:'roles/[\w.]+'(?:, )?)*)\]\)$"
)


def grantable_roles(condition: dict | None) -> set[str] | None:
    """The roles a conditioned IAM admin grant may add or remove, or None if the condition is not one
    this reads (which counts as 'any role')."""
    match = GRANTS_ONLY.match((condition or {}).get("expression", ""))
    return set(re.findall(r"'(roles/[\w.]+)'", match.group(1))) if match else None


# What changes a workload identity pool or who may sign in through it: project roles over pools, or
# over service accounts' IAM policies (where the federation bindings are), or over all of IAM.
WIDENS_FEDERATION = frozenset(
    {
        "roles/owner",
        "roles/editor",
        "roles/iam.workloadIdentityPoolAdmin",
        "roles/iam.serviceAccountAdmin",
        "roles/iam.securityAdmin",
        "roles/iam.roleAdmin",
        "roles/resourcemanager.projectIamAdmin",
    }
)


def no_identity_may_modify_how_it_signs_in(stack: Stack) -> list[str]:
    """Whoever signs in through a pool (a workloadIdentityUser binding) may not change the pool, its
    providers or the bindings on any account: else one approved job could let every job in."""
    federated = {
        f"${{google_service_account.{body['service_account_id'].split('.')[1]}.member}}"
        for type_, _, body in all_resources(stack)
        if type_ == "google_service_account_iam_member" and body.get("role") == "roles/iam.workloadIdentityUser"
    }
    problems = []
    for type_, path, body in all_resources(stack):
        if (
            type_ not in ("google_project_iam_member", "google_service_account_iam_member")
            or body.get("member") not in federated
        ):
            continue
        role = body.get("role")
        if type_ == "google_service_account_iam_member":
            target = f"${{google_service_account.{body.get('service_account_id', '..').split('.')[1]}.member}}"
            if role not in ("roles/iam.serviceAccountUser", "roles/iam.serviceAccountTokenCreator"):
                problems.append(
                    f"{path}: a federated identity holds {role} on a service account, which can change its bindings"
                )
            elif target in federated:
                problems.append(
                    f"{path}: a federated identity may act as another one, skipping that one's sign-in condition"
                )
        elif role in WIDENS_FEDERATION:
            allowed = grantable_roles(body.get("condition")) if role == DEPLOYER_IAM_ADMIN_ROLE else None
            if allowed is None or allowed & (WIDENS_FEDERATION | IAM_ADMIN_ROLES):
                problems.append(
                    f"{path}: a federated identity holds {role}, which can change the pool or its own bindings"
                )
    return problems


RULES: list[Callable[[Stack], list[str]]] = [
    no_public_ip_on_sql,
    no_public_members,
    no_service_account_keys,
    server_account_has_no_admin_roles,
    cloud_run_ingress_never_all,
    iap_enabled_service_is_invoked_only_by_iap,
    data_is_protected_from_destroy,
    iam_bindings_grant_only_allowed_roles,
    no_project_level_act_as_or_token_creator,
    iam_admin_grants_carry_a_condition,
    no_identity_may_modify_how_it_signs_in,
]
