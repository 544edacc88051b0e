"""Keyless identities for the pull-request workflow: GitHub OIDC through Workload Identity Federation."""

from __future__ import annotations

import re
from dataclasses import dataclass

from constructs import Construct
from constructs.cdk.google.iam_workload_identity_pool import IamWorkloadIdentityPool
from constructs.cdk.google.iam_workload_identity_pool_provider import (
    IamWorkloadIdentityPoolProvider,
    IamWorkloadIdentityPoolProviderOidc,
)
from constructs.cdk.google.project_iam_member import ProjectIamMember, ProjectIamMemberCondition
from constructs.cdk.google.service_account import ServiceAccount
from constructs.cdk.google.service_account_iam_member import ServiceAccountIamMember
from constructs.cdk.google.storage_bucket_iam_member import StorageBucketIamMember

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
# The only ref whose jobs in the approved environment may apply (.github/workflows/terraform.yml).
DEPLOY_REF = "refs/heads/main"
# Plans read everything (including IAM policies) and change nothing; `terraform plan -lock=false`.
PLANNER_ROLES = ("roles/viewer", "roles/iam.securityReviewer")
# Applies run only from the approved GitHub environment and apply only the environment's MLflow stack:
# the project stack (this pool, its accounts, every service account and the bindings on them) is
# applied by a person. Every role the MLflow stack's resources may need; each environment's deployer
# gets those its stack does need (`deployer_roles`); docs/operations.md, *The roles whoever deploys needs*, says
# why each is project-wide. Acting as the server's account is granted on that account
# (ServerIdentity.grant_act_as), granting project roles below with a condition.
DEPLOYER_ROLES = (
    "roles/cloudsql.admin",
    "roles/compute.loadBalancerAdmin",
    "roles/compute.networkAdmin",
    "roles/compute.securityAdmin",
    "roles/dns.admin",
    "roles/iap.admin",
    "roles/logging.configWriter",
    "roles/monitoring.alertPolicyEditor",
    "roles/monitoring.dashboardEditor",
    "roles/monitoring.notificationChannelEditor",
    "roles/monitoring.uptimeCheckConfigEditor",
    "roles/run.admin",
    "roles/secretmanager.admin",
    "roles/servicenetworking.networksAdmin",
    "roles/serviceusage.serviceUsageConsumer",
    "roles/storage.admin",
)
# Granted only with a condition naming the roles it may add or remove (`grantable_roles`).
DEPLOYER_IAM_ADMIN_ROLE = "roles/resourcemanager.projectIamAdmin"
# Roles that administer IAM, act as or sign as an identity (or, editor, everything but IAM): the
# deployer may grant none of them, and an invariant wants a condition on any project grant of one.
IAM_ADMIN_ROLES = frozenset(
    {
        "roles/owner",
        "roles/editor",
        "roles/iam.securityAdmin",
        "roles/iam.serviceAccountAdmin",
        "roles/iam.serviceAccountKeyAdmin",
        "roles/iam.serviceAccountUser",
        "roles/iam.serviceAccountTokenCreator",
        "roles/iam.workloadIdentityPoolAdmin",
        "roles/iam.workloadIdentityUser",
        "roles/iam.roleAdmin",
        DEPLOYER_IAM_ADMIN_ROLE,
    }
)
ROLE = re.compile(r"^roles/[a-zA-Z0-9_.]+$")


def grants_only(roles: tuple[str, ...]) -> str:
    """The IAM condition under which a project IAM admin may add or remove grants of `roles` only."""
    listed = ", ".join(f"'{role}'" for role in sorted(roles))
    return f"api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', []).hasOnly([{listed}])"


@dataclass(frozen=True)
class CiIdentityProps:
    project: str
    project_number: str
    github_repository: str
    # GitHub's numeric ids, never reused: the provider refuses a token of a same-named other repository.
    repository_id: int
    repository_owner_id: int
    state_bucket: str
    # The GitHub environment whose (approved) jobs may apply, e.g. "prod".
    deploy_environment: str
    # The project roles the stack the deployer applies grants; the only ones it may grant.
    grantable_roles: tuple[str, ...]
    # default: all of DEPLOYER_ROLES. The ones the deployer's stack needs.
    deployer_roles: tuple[str, ...] = DEPLOYER_ROLES
    pool_id: str = "github"
    account_prefix: str = "ci"
    deploy_ref: str = DEPLOY_REF

    def __post_init__(self) -> None:
        owner, _, repo = self.github_repository.partition("/")
        if not owner or not repo or "/" in repo:
            raise ValueError(f"CiIdentityProps.github_repository: {self.github_repository!r} must be OWNER/REPO")
        for name in ("repository_id", "repository_owner_id"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(
                    f"CiIdentityProps.{name}: {getattr(self, name)!r} must be GitHub's numeric id (gh api repos/OWNER/REPO)"
                )
        if not self.deploy_environment:
            raise ValueError("CiIdentityProps.deploy_environment: is empty; name the approved GitHub environment")
        if not self.grantable_roles or not all(ROLE.match(r) for r in self.grantable_roles):
            raise ValueError(
                f"CiIdentityProps.grantable_roles: {self.grantable_roles!r} must list predefined roles/..."
            )
        if unknown := sorted(set(self.deployer_roles) - set(DEPLOYER_ROLES)):
            raise ValueError(
                f"CiIdentityProps.deployer_roles: {', '.join(unknown)} are not among the reviewed DEPLOYER_ROLES"
            )
        if admin := sorted(set(self.grantable_roles) & IAM_ADMIN_ROLES):
            raise ValueError(
                f"CiIdentityProps.grantable_roles: {', '.join(admin)} administer IAM; the deployer may not grant them"
            )

    @property
    def pull_request_subject(self) -> str:
        return f"repo:{self.github_repository}:pull_request"

    @property
    def deploy_subject(self) -> str:
        return f"repo:{self.github_repository}:environment:{self.deploy_environment}"

    @property
    def attribute_condition(self) -> str:
        """Which GitHub tokens the provider accepts at all: this repository and owner by id, and then
        only pull-request jobs, or jobs of the approved environment on the deploy ref."""
        return (
            f"assertion.repository_id == '{self.repository_id}' && "
            f"assertion.repository_owner_id == '{self.repository_owner_id}' && ("
            f"assertion.sub == '{self.pull_request_subject}' || "
            f"(assertion.sub == '{self.deploy_subject}' && assertion.ref == '{self.deploy_ref}'))"
        )


class CiIdentity(Construct):
    """Only two kinds of GitHub token are accepted at all (provider attribute condition): pull-request
    jobs of `github_repository`, which may plan, and its jobs in the approved GitHub environment on
    the deploy ref, which may apply. Both are bound to the repository's and owner's numeric ids.

    Nothing here is granted to either account over this pool, its provider or the accounts' own IAM
    policies: whoever signs in through them cannot widen who else may (tests/invariants.py)."""

    def __init__(self, scope: Construct, id: str, props: CiIdentityProps) -> None:
        super().__init__(scope, id)
        pool = IamWorkloadIdentityPool(
            self, "pool", project=props.project, workload_identity_pool_id=props.pool_id, display_name="GitHub Actions"
        )
        IamWorkloadIdentityPoolProvider(
            self,
            "provider",
            project=props.project,
            workload_identity_pool_id=pool.workload_identity_pool_id,
            workload_identity_pool_provider_id="github-oidc",
            display_name="GitHub OIDC",
            attribute_mapping={
                "google.subject": "assertion.sub",
                "attribute.repository": "assertion.repository",
                "attribute.repository_id": "assertion.repository_id",
                "attribute.repository_owner_id": "assertion.repository_owner_id",
            },
            attribute_condition=props.attribute_condition,
            oidc=IamWorkloadIdentityPoolProviderOidc(issuer_uri=GITHUB_ISSUER),
        )
        # From the pool's own name, so the bindings wait for the pool to exist.
        principals = f"principal://iam.googleapis.com/{pool.name}/subject"
        self._planner = self._account(props, "planner", "Terraform plan in pull requests (read-only)")
        self._deployer = self._account(props, "deployer", "Terraform apply of the MLflow stack after approval")
        for name, account, subject in (
            ("planner", self._planner, props.pull_request_subject),
            ("deployer", self._deployer, props.deploy_subject),
        ):
            ServiceAccountIamMember(
                self,
                f"{name}-federation",
                service_account_id=account.name,
                role="roles/iam.workloadIdentityUser",
                member=f"{principals}/{subject}",
            )
        self._grant_planner(props)
        self._grant_deployer(props)
        self._provider_name = f"projects/{props.project_number}/locations/global/workloadIdentityPools/{props.pool_id}/providers/github-oidc"

    def _grant_planner(self, props: CiIdentityProps) -> None:
        member = self._planner.member
        for role in PLANNER_ROLES:
            ProjectIamMember(self, f"planner-{role.split('/')[-1]}", project=props.project, role=role, member=member)
        StorageBucketIamMember(
            self, "planner-state-reader", bucket=props.state_bucket, role="roles/storage.objectViewer", member=member
        )

    def _grant_deployer(self, props: CiIdentityProps) -> None:
        member = self._deployer.member
        for role in props.deployer_roles:
            ProjectIamMember(self, f"deployer-{role.split('/')[-1]}", project=props.project, role=role, member=member)
        ProjectIamMember(
            self,
            f"deployer-{DEPLOYER_IAM_ADMIN_ROLE.split('/')[-1]}",
            project=props.project,
            role=DEPLOYER_IAM_ADMIN_ROLE,
            member=member,
            condition=ProjectIamMemberCondition(
                title="only the MLflow stack's project roles",
                description="May add or remove grants of these roles only: the ones the MLflow stack grants its server",
                expression=grants_only(props.grantable_roles),
            ),
        )
        StorageBucketIamMember(
            self, "deployer-state-writer", bucket=props.state_bucket, role="roles/storage.objectUser", member=member
        )

    def _account(self, props: CiIdentityProps, role: str, description: str) -> ServiceAccount:
        return ServiceAccount(
            self, role, project=props.project, account_id=f"{props.account_prefix}-{role}", display_name=description
        )

    @property
    def workload_identity_provider(self) -> str:
        """The value of `workload_identity_provider` in google-github-actions/auth."""
        return self._provider_name

    @property
    def planner_email(self) -> str:
        return self._planner.email

    @property
    def deployer_email(self) -> str:
        return self._deployer.email

    @property
    def deployer_member(self) -> str:
        return self._deployer.member
