"""The project stack: APIs, audit logs, the image registry, its build identity and the IAP service
agent, applied before the server.

The server's image has to be pushed to the registry before a Cloud Run service can reference it, so
the registry lives here and the MLflow stack depends on this stack (README: first deploy).
"""

from __future__ import annotations

from constructs.cdk import TerraformOutput, TerraformStack
from constructs import Construct

from constructs.build_identity import BuildIdentity, BuildIdentityProps
from constructs.ci_identity import CiIdentity, CiIdentityProps
from constructs.iap_service_agent import IapServiceAgent, IapServiceAgentProps
from constructs.image_registry import ImageRegistry, ImageRegistryProps
from constructs.project_services import ProjectServices, ProjectServicesProps
from constructs.storage_audit_logs import StorageAuditLogs, StorageAuditLogsProps
from stacks.backend import use_state_bucket
from stacks.config import Config
from stacks.providers import use_google
from stacks.wiring import wait_for

# What the stacks' resources, the gcloud commands of the apply, outputs and README, and the granted
# roles call; tests/constructs/test_project_services.py derives the same set and fails on a difference.
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


class ProjectStack(TerraformStack):
    def __init__(self, scope: Construct, cfg: Config) -> None:
        name = project_stack_name(cfg)
        super().__init__(scope, name)
        use_state_bucket(self, cfg, name)
        use_google(self, cfg.project_id, cfg.region)
        # The budget's API is needed (as the quota project's) only when a budget is configured.
        budget_apis = ("billingbudgets.googleapis.com",) if cfg.budget.billing_account else ()
        apis = ProjectServices(
            self,
            "apis",
            ProjectServicesProps(cfg.project_id, APIS + (CI_APIS if cfg.ci.github_repository else ()) + budget_apis),
        )
        registry = ImageRegistry(
            self,
            "registry",
            ImageRegistryProps(project=cfg.project_id, region=cfg.region, repository_id=cfg.registry_repository),
        )
        wait_for(registry, apis.enabled)
        StorageAuditLogs(self, "storage-audit-logs", StorageAuditLogsProps(project=cfg.project_id))
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
        iap_agent = IapServiceAgent(
            self, "iap-service-agent", IapServiceAgentProps(project=cfg.project_id, project_number=cfg.project_number)
        )
        wait_for(iap_agent, apis.enabled)
        if cfg.ci.github_repository:
            ci = CiIdentity(
                self,
                "ci-identity",
                CiIdentityProps(
                    project=cfg.project_id,
                    project_number=cfg.project_number,
                    github_repository=cfg.ci.github_repository,
                    state_bucket=cfg.state.bucket,
                    deploy_environment=cfg.environment,
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
