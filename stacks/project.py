"""The project stack: APIs, the image registry and the IAP service agent, applied before the server.

The server's image has to be pushed to the registry before a Cloud Run service can reference it, so
the registry lives here and the MLflow stack depends on this stack (README: first deploy).
"""

from __future__ import annotations

from constructs.cdk import TerraformOutput, TerraformStack
from constructs import Construct

from constructs.ci_identity import CiIdentity, CiIdentityProps
from constructs.iap_service_agent import IapServiceAgent, IapServiceAgentProps
from constructs.image_registry import ImageRegistry, ImageRegistryProps
from constructs.project_services import ProjectServices, ProjectServicesProps
from stacks.backend import use_state_bucket
from stacks.config import Config
from stacks.providers import use_google
from stacks.wiring import wait_for

APIS = (
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
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
    "sqladmin.googleapis.com",
    "sts.googleapis.com",
)


def project_stack_name(cfg: Config) -> str:
    return f"mlflow-{cfg.environment}-project"


class ProjectStack(TerraformStack):
    def __init__(self, scope: Construct, cfg: Config) -> None:
        name = project_stack_name(cfg)
        super().__init__(scope, name)
        use_state_bucket(self, cfg, name)
        use_google(self, cfg.project_id, cfg.region)
        apis = ProjectServices(self, "apis", ProjectServicesProps(cfg.project_id, APIS))
        registry = ImageRegistry(
            self,
            "registry",
            ImageRegistryProps(project=cfg.project_id, region=cfg.region, repository_id=cfg.registry_repository),
        )
        wait_for(registry, apis.enabled)
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
            TerraformOutput(self, "ci_workload_identity_provider", value=ci.workload_identity_provider)
            TerraformOutput(self, "ci_planner_service_account", value=ci.planner_email)
            TerraformOutput(self, "ci_deployer_service_account", value=ci.deployer_email)
        TerraformOutput(
            self,
            "image_build_command",
            value=f"gcloud builds submit docker --project={cfg.project_id} --region={cfg.region} --tag={cfg.server_image}",
            description="Builds the server image from docker/ and pushes it to this environment's registry",
        )
