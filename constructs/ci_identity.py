"""Keyless identities for the pull-request workflow: GitHub OIDC through Workload Identity Federation."""

from __future__ import annotations

from dataclasses import dataclass

from constructs.cdk.google.iam_workload_identity_pool import IamWorkloadIdentityPool
from constructs.cdk.google.iam_workload_identity_pool_provider import (
    IamWorkloadIdentityPoolProvider,
    IamWorkloadIdentityPoolProviderOidc,
)
from constructs.cdk.google.project_iam_member import ProjectIamMember
from constructs.cdk.google.service_account import ServiceAccount
from constructs.cdk.google.service_account_iam_member import ServiceAccountIamMember
from constructs.cdk.google.storage_bucket_iam_member import StorageBucketIamMember
from constructs import Construct

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
# Plans read everything (including IAM policies) and change nothing; `terraform plan -lock=false`.
PLANNER_ROLES = ("roles/viewer", "roles/iam.securityReviewer")
# Applies run only from the approved GitHub environment; each role is scoped to what the stacks manage.
DEPLOYER_ROLES = (
    "roles/artifactregistry.admin",
    "roles/cloudsql.admin",
    "roles/compute.loadBalancerAdmin",
    "roles/compute.networkAdmin",
    "roles/compute.securityAdmin",
    "roles/dns.admin",
    "roles/iam.serviceAccountAdmin",
    "roles/iam.serviceAccountUser",
    "roles/iam.workloadIdentityPoolAdmin",
    "roles/iap.admin",
    "roles/logging.configWriter",
    "roles/monitoring.alertPolicyEditor",
    "roles/monitoring.dashboardEditor",
    "roles/monitoring.notificationChannelEditor",
    "roles/monitoring.uptimeCheckConfigEditor",
    "roles/resourcemanager.projectIamAdmin",
    "roles/run.admin",
    "roles/secretmanager.admin",
    "roles/servicenetworking.networksAdmin",
    "roles/serviceusage.serviceUsageAdmin",
    "roles/storage.admin",
)


@dataclass(frozen=True)
class CiIdentityProps:
    project: str
    project_number: str
    github_repository: str
    state_bucket: str
    # The GitHub environment whose (approved) jobs may apply, e.g. "prod".
    deploy_environment: str
    pool_id: str = "github"
    account_prefix: str = "ci"

    def __post_init__(self) -> None:
        owner, _, repo = self.github_repository.partition("/")
        if not owner or not repo or "/" in repo:
            raise ValueError(f"CiIdentityProps.github_repository: {self.github_repository!r} must be OWNER/REPO")
        if not self.deploy_environment:
            raise ValueError("CiIdentityProps.deploy_environment: is empty; name the approved GitHub environment")


class CiIdentity(Construct):
    """Only two kinds of GitHub token are accepted at all (provider attribute condition): pull-request
    jobs of `github_repository`, which may plan, and its jobs in the approved GitHub environment, which
    may apply."""

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
            },
            attribute_condition=(
                f"assertion.sub == 'repo:{props.github_repository}:pull_request' || "
                f"assertion.sub == 'repo:{props.github_repository}:environment:{props.deploy_environment}'"
            ),
            oidc=IamWorkloadIdentityPoolProviderOidc(issuer_uri=GITHUB_ISSUER),
        )
        # From the pool's own name, so the bindings wait for the pool to exist.
        principals = f"principal://iam.googleapis.com/{pool.name}"
        self._planner = self._account(props, "planner", "Terraform plan in pull requests (read-only)")
        self._deployer = self._account(props, "deployer", "Terraform apply after approval")
        ServiceAccountIamMember(
            self,
            "planner-federation",
            service_account_id=self._planner.name,
            role="roles/iam.workloadIdentityUser",
            member=f"{principals}/subject/repo:{props.github_repository}:pull_request",
        )
        ServiceAccountIamMember(
            self,
            "deployer-federation",
            service_account_id=self._deployer.name,
            role="roles/iam.workloadIdentityUser",
            member=f"{principals}/subject/repo:{props.github_repository}:environment:{props.deploy_environment}",
        )
        for role in PLANNER_ROLES:
            ProjectIamMember(self, f"planner-{role.split('/')[-1]}", project=props.project, role=role, member=self._planner.member)
        for role in DEPLOYER_ROLES:
            ProjectIamMember(self, f"deployer-{role.split('/')[-1]}", project=props.project, role=role, member=self._deployer.member)
        StorageBucketIamMember(
            self, "planner-state-reader", bucket=props.state_bucket, role="roles/storage.objectViewer", member=self._planner.member
        )
        StorageBucketIamMember(
            self, "deployer-state-writer", bucket=props.state_bucket, role="roles/storage.objectUser", member=self._deployer.member
        )
        self._provider_name = (
            f"projects/{props.project_number}/locations/global/workloadIdentityPools/{props.pool_id}/providers/github-oidc"
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
