"""The project stack: APIs, audit logs, the image registry, its build identity, the IAP service agent
and every service account with the bindings on it, applied by a person before the server.

It holds what would let an identity widen its own access (service accounts and who may act as them,
the CI pool and the deployer's roles): the CI deployer applies only the MLflow stack.

The server's image has to be pushed to the registry before a Cloud Run service can reference it, so
the registry lives here and the MLflow stack depends on this stack (README: first deploy).
"""

from __future__ import annotations

from collections.abc import Callable

from constructs import Construct
from constructs.cdk import TerraformOutput, TerraformStack
from constructs.identity.build_identity import BuildIdentity, BuildIdentityProps
from constructs.identity.ci_identity import DEPLOYER_ROLES, CiIdentity, CiIdentityProps
from constructs.identity.client_identity import ClientIdentity, ClientIdentityProps
from constructs.identity.iap_service_agent import IapServiceAgent, IapServiceAgentProps
from constructs.identity.server_identity import ServerIdentity, ServerIdentityProps
from constructs.identity.server_roles import DATABASE_LOGIN_ROLE, PROJECT_ROLES as SERVER_PROJECT_ROLES
from constructs.operations.storage_audit_logs import StorageAuditLogs, StorageAuditLogsProps
from constructs.project.image_registry import ImageRegistry, ImageRegistryProps
from constructs.project.project_services import ProjectServices, ProjectServicesProps
from stacks.backend import use_state_bucket
from stacks.config import Config
from stacks.providers import use_google
from stacks.wiring import wait_for

# What the stacks' resources, the gcloud commands of the apply, outputs and README, and the granted
# roles call; tests/constructs/project/test_project_services.py derives the same set and fails on a difference.
# serviceusage and cloudresourcemanager must already be on before this stack can enable anything
# (README: first deploy, step 0); listing them keeps them on.
APIS = (
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "compute.googleapis.com",
    "dns.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "iap.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "servicenetworking.googleapis.com",
    "serviceusage.googleapis.com",
    "sqladmin.googleapis.com",
    "storage.googleapis.com",
)
# Workload Identity Federation exchanges GitHub's tokens through STS: only with `[ci]`.
CI_APIS = ("sts.googleapis.com",)


def project_stack_name(cfg: Config) -> str:
    return f"mlflow-{cfg.environment}-project"


def server_account_id(cfg: Config) -> str:
    return f"{cfg.name_prefix}-server"


def server_project_roles(cfg: Config) -> tuple[str, ...]:
    """The project roles this environment's MLflow stack grants its server (ServerRoles)."""
    return tuple(r for r in SERVER_PROJECT_ROLES if r != DATABASE_LOGIN_ROLE or cfg.database.auth == "iam")


# DEPLOYER_ROLES needed only for parts of the MLflow stack that a setting turns on.
OPTIONAL_DEPLOYER_ROLES: dict[str, Callable[[Config], bool]] = {
    "roles/compute.loadBalancerAdmin": lambda cfg: cfg.front_door.mode == "load_balancer",
    "roles/dns.admin": lambda cfg: cfg.front_door.mode == "load_balancer",
    "roles/logging.configWriter": lambda cfg: cfg.alerts.enabled,
    "roles/monitoring.alertPolicyEditor": lambda cfg: cfg.alerts.enabled,
    "roles/monitoring.dashboardEditor": lambda cfg: cfg.alerts.enabled,
    "roles/monitoring.notificationChannelEditor": lambda cfg: cfg.alerts.enabled,
    "roles/monitoring.uptimeCheckConfigEditor": lambda cfg: cfg.alerts.enabled,
    "roles/serviceusage.serviceUsageConsumer": lambda cfg: bool(cfg.budget.billing_account),
}


def deployer_roles(cfg: Config) -> tuple[str, ...]:
    """The DEPLOYER_ROLES this environment's MLflow stack needs; tests/constructs/identity/test_ci_identity.py
    derives the same set from the stack's resources."""
    return tuple(r for r in DEPLOYER_ROLES if r not in OPTIONAL_DEPLOYER_ROLES or OPTIONAL_DEPLOYER_ROLES[r](cfg))


class ProjectStack(TerraformStack):
    def __init__(self, scope: Construct, cfg: Config) -> None:
        name = project_stack_name(cfg)
        super().__init__(scope, name)
        use_state_bucket(self, cfg, name)
        use_google(self, cfg.project_id, cfg.region)
        apis = self._apis(cfg)
        self._image_build(cfg, apis)
        StorageAuditLogs(self, "storage-audit-logs", StorageAuditLogsProps(project=cfg.project_id))
        iap_agent = IapServiceAgent(
            self, "iap-service-agent", IapServiceAgentProps(project=cfg.project_id, project_number=cfg.project_number)
        )
        wait_for(iap_agent, apis.enabled)
        server = ServerIdentity(
            self, "server-identity", ServerIdentityProps(project=cfg.project_id, account_id=server_account_id(cfg))
        )
        wait_for(server, apis.enabled)
        self._client_identities(cfg, apis)
        if cfg.ci.github_repository:
            ci = self._ci_identity(cfg, apis)
            # Deploying the service and the migration job, which run as the server's account.
            server.grant_act_as("deployer-acts-as", ci.deployer_member)

    def _apis(self, cfg: Config) -> ProjectServices:
        # The budget's API is needed (as the quota project's) only when a budget is configured.
        budget_apis = ("billingbudgets.googleapis.com",) if cfg.budget.billing_account else ()
        # The server resolves [access] groups with the Cloud Identity Groups API.
        access_apis = ("cloudidentity.googleapis.com",) if cfg.access and cfg.access.groups else ()
        return ProjectServices(
            self,
            "apis",
            ProjectServicesProps(
                cfg.project_id, APIS + (CI_APIS if cfg.ci.github_repository else ()) + budget_apis + access_apis
            ),
        )

    def _image_build(self, cfg: Config, apis: ProjectServices) -> None:
        """The image registry and the identity that builds the server image into it."""
        registry = ImageRegistry(
            self,
            "registry",
            ImageRegistryProps(project=cfg.project_id, region=cfg.region, repository_id=cfg.registry_repository),
        )
        wait_for(registry, apis.enabled)
        build = BuildIdentity(
            self,
            "build-identity",
            BuildIdentityProps(
                project=cfg.project_id,
                region=cfg.region,
                account_id=f"{cfg.name_prefix}-build",
                bucket_name=f"{cfg.project_id}-{cfg.name_prefix}-build",
                submitters=cfg.image_builders,
                protect_from_destroy=cfg.protect_data,
            ),
        )
        registry.grant_writer("build-writer", build.member)
        wait_for(build, apis.enabled)
        TerraformOutput(
            self,
            "image_build_command",
            value=build.build_command("docker", cfg.server_image),
            description=(
                "Builds the server image from docker/ as the build account and pushes it to this environment's "
                "registry; run it from the repository root as someone who may act as that account "
                "(owners, editors, or image_builders)"
            ),
        )
        TerraformOutput(self, "build_service_account", value=build.email)

    def _client_identities(self, cfg: Config, apis: ProjectServices) -> None:
        if not cfg.client_impersonators:
            return
        clients = ClientIdentity(
            self,
            "client-identity",
            ClientIdentityProps(
                project=cfg.project_id, name_prefix=cfg.name_prefix, impersonators=cfg.client_impersonators
            ),
        )
        wait_for(clients, apis.enabled)
        TerraformOutput(
            self,
            "client_service_accounts",
            value=clients.emails,
            description="{member: client service account}: export MLFLOW_IAP_SERVICE_ACCOUNTS='<this, as JSON>' for "
            "people's scripts; the plugin signs as the caller's own (client/README.md)",
        )

    def _ci_identity(self, cfg: Config, apis: ProjectServices) -> CiIdentity:
        ci = CiIdentity(
            self,
            "ci-identity",
            CiIdentityProps(
                project=cfg.project_id,
                project_number=cfg.project_number,
                github_repository=cfg.ci.github_repository,
                repository_id=cfg.ci.repository_id,
                repository_owner_id=cfg.ci.repository_owner_id,
                state_bucket=cfg.state.bucket,
                deploy_environment=cfg.environment,
                grantable_roles=server_project_roles(cfg),
                deployer_roles=deployer_roles(cfg),
                pool_id=f"{cfg.name_prefix}-github",
                account_prefix=f"{cfg.name_prefix}-ci",
            ),
        )
        wait_for(ci, apis.enabled)
        # Named like the repository variables of .github/workflows/terraform.yml they go into.
        for name, value in (
            ("WIF_PROVIDER", ci.workload_identity_provider),
            ("PLANNER_SERVICE_ACCOUNT", ci.planner_email),
            ("DEPLOYER_SERVICE_ACCOUNT", ci.deployer_email),
        ):
            TerraformOutput(self, name.lower(), value=value, description=f"GitHub repository variable {name}")
        return ci
