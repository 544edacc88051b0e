"""The MLflow tracking server on Cloud Run v2, reachable only through the load balancer or, in the
direct-IAP variant, only through IAP on the service itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from constructs import Construct
from constructs.cdk import set_newer_provider_attribute
from constructs.cdk.google.cloud_run_v2_service import (
    CloudRunV2Service,
    CloudRunV2ServiceTemplate,
    CloudRunV2ServiceTemplateContainers,
    CloudRunV2ServiceTemplateContainersLivenessProbe,
    CloudRunV2ServiceTemplateContainersLivenessProbeHttpGet,
    CloudRunV2ServiceTemplateContainersPorts,
    CloudRunV2ServiceTemplateContainersResources,
    CloudRunV2ServiceTemplateContainersStartupProbe,
    CloudRunV2ServiceTemplateContainersStartupProbeHttpGet,
    CloudRunV2ServiceTemplateScaling,
)
from constructs.cdk.google.cloud_run_v2_service_iam_member import CloudRunV2ServiceIamMember
from constructs.serving.server_container import (
    SERVICE_STRUCTS,
    GatewayKeyRef,
    RunPlacement,
    RunStructs,
    ServerContainerProps,
    artifact_mount,
    artifact_volume,
    cloudsql_mount,
    cloudsql_volume,
    gateway_key_env,
    iap_audience_env,
    iap_audience_problem,
    mount_as_image_user,
    private_egress,
    server_env,
)

CONTAINER_PORT = 8080
# Startup probe period: the allowance is a whole number of these.
STARTUP_PERIOD_SECONDS = 5


@dataclass(frozen=True)
class TrackingServiceProps:
    name: str
    placement: RunPlacement
    container: ServerContainerProps
    cpu: str
    memory: str
    min_instances: int
    max_instances: int
    concurrency: int
    # Who the server believes: only requests IAP signed for this audience (the front door's
    # iap_audience); only the service gets it, the migration job serves no requests.
    iap_audience: str
    # The AI gateway's passphrase (constructs/data/gateway_key_secret.py); required, so the server never
    # encrypts stored API keys with MLflow's published default.
    gateway_key: GatewayKeyRef
    # default: 2 minutes for MLflow to start (imports, DB connection through the socket) before restart.
    startup_allowance_seconds: int = 120
    # default: False, reachable only through the load balancer (ingress internal and load balancing).
    # True: IAP on the service itself (`iap_enabled`) and ingress from everywhere, so the run.app URL
    # works; IAP checks every request first, then calls the service as its service agent.
    direct_iap: bool = False
    # default: None, everyone IAP admits may do everything. Else the variables of MLflow's own
    # permissions (constructs/identity/access_control.py: AccessControl.env), built with the service's structs.
    access_env: Callable[[RunStructs], list[Any]] | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("TrackingServiceProps.name: is empty; name the Cloud Run service")
        allowance, period = self.startup_allowance_seconds, STARTUP_PERIOD_SECONDS
        if allowance < period or allowance % period:
            raise ValueError(
                f"TrackingServiceProps.startup_allowance_seconds: {allowance} must be a positive multiple of "
                f"{period} (the probe period); it sets the probe's failure_threshold to allowance / {period}"
            )
        if not 0 <= self.min_instances <= self.max_instances or self.max_instances < 1:
            raise ValueError(
                f"TrackingServiceProps.min_instances/max_instances: {self.min_instances}/{self.max_instances} "
                "must satisfy 0 <= min <= max and max >= 1"
            )
        if self.concurrency < 1:
            raise ValueError(f"TrackingServiceProps.concurrency: {self.concurrency} must be 1 or more")
        if problem := iap_audience_problem("TrackingServiceProps.iap_audience", self.iap_audience):
            raise ValueError(problem)


class TrackingService(Construct):
    """Ingress from the internal/load-balancer path only, egress to private ranges through the VPC.

    CPU is only allocated during requests and instances scale to zero by default, so an idle server
    costs nothing; the database is reached through the Cloud SQL socket volume, artifacts land in the
    GCS volume.
    """

    def __init__(self, scope: Construct, id: str, props: TrackingServiceProps) -> None:
        super().__init__(scope, id)
        self._ingress = "INGRESS_TRAFFIC_ALL" if props.direct_iap else "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
        c = props.container
        s = SERVICE_STRUCTS
        # The Cloud SQL volume and its mount last: the API returns them last, and a list in
        # another order than the API's shows a change in every plan (Fabric does the same).
        volumes = [artifact_volume(c, s), cloudsql_volume(c, s)]
        self._service = CloudRunV2Service(
            self,
            "service",
            project=props.placement.project,
            location=props.placement.region,
            name=props.name,
            ingress=self.ingress,
            # Holds no data: a replacement is harmless, and a failed first deploy must be retryable.
            deletion_protection=False,
            template=CloudRunV2ServiceTemplate(
                service_account=props.placement.service_account_email,
                execution_environment="EXECUTION_ENVIRONMENT_GEN2",
                max_instance_request_concurrency=props.concurrency,
                timeout="900s",
                scaling=CloudRunV2ServiceTemplateScaling(
                    min_instance_count=props.min_instances, max_instance_count=props.max_instances
                ),
                vpc_access=private_egress(props.placement, s),
                volumes=volumes,
                containers=[self._server_container(props)],
            ),
        )
        mount_as_image_user(self._service, "template.volumes", volumes)
        if props.direct_iap:
            # GA in provider 8.x, not in the 6.50 binding.
            set_newer_provider_attribute(self._service, "iap_enabled", True)

    @staticmethod
    def _server_container(props: TrackingServiceProps) -> CloudRunV2ServiceTemplateContainers:
        c, s = props.container, SERVICE_STRUCTS
        period = STARTUP_PERIOD_SECONDS
        probe = {"period_seconds": period, "timeout_seconds": 3}
        return CloudRunV2ServiceTemplateContainers(
            name="mlflow",
            image=c.image,
            # h2c: end-to-end HTTP/2 lifts Cloud Run's 32 MiB HTTP/1 request limit, so
            # large models upload in MLflow's single PUT (the server speaks h2c and HTTP/1).
            ports=CloudRunV2ServiceTemplateContainersPorts(container_port=CONTAINER_PORT, name="h2c"),
            env=[
                *server_env(c, s),
                iap_audience_env(props.iap_audience, s),
                *gateway_key_env(props.gateway_key, s),
                *(props.access_env(s) if props.access_env else []),
            ],
            resources=CloudRunV2ServiceTemplateContainersResources(
                limits={"cpu": props.cpu, "memory": props.memory},
                cpu_idle=True,
                startup_cpu_boost=True,
            ),
            volume_mounts=[artifact_mount(c, s), cloudsql_mount(s)],
            startup_probe=CloudRunV2ServiceTemplateContainersStartupProbe(
                http_get=CloudRunV2ServiceTemplateContainersStartupProbeHttpGet(path="/health", port=CONTAINER_PORT),
                failure_threshold=props.startup_allowance_seconds // period,
                **probe,
            ),
            liveness_probe=CloudRunV2ServiceTemplateContainersLivenessProbe(
                http_get=CloudRunV2ServiceTemplateContainersLivenessProbeHttpGet(path="/health", port=CONTAINER_PORT),
                period_seconds=30,
                timeout_seconds=5,
                failure_threshold=3,
            ),
        )

    @property
    def service_name(self) -> str:
        return self._service.name

    @property
    def ingress(self) -> str:
        """The ingress the service declares, a plain value (what an upgrade window reopens to)."""
        return self._ingress

    @property
    def service_uri(self) -> str:
        return self._service.uri

    def grant_invoker(self, key: str, member: str) -> None:
        """Invokers are named one by one; `allUsers` is never one of them."""
        CloudRunV2ServiceIamMember(
            self,
            key,
            project=self._service.project,
            location=self._service.location,
            name=self._service.name,
            role="roles/run.invoker",
            member=member,
        )
