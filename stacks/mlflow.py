"""The MLflow stack of one environment: network, data, server, front door and DNS."""

from __future__ import annotations

from constructs.cdk import TerraformOutput, TerraformStack, TerraformVariable
from constructs.cdk.google.provider import GoogleProvider
from constructs import Construct

from constructs.backend_store_secret import BackendStoreSecret, BackendStoreSecretProps
from constructs.billing_budget import BillingBudget, BillingBudgetProps
from constructs.client_identity import ClientIdentity, ClientIdentityProps
from constructs.cloud_run_iap import CloudRunIap, CloudRunIapProps, signed_header_audience
from constructs.dns_zone import DnsZone, DnsZoneProps
from constructs.front_door import FrontDoor, FrontDoorProps
from constructs.iap_service_agent import iap_service_agent_member
from constructs.migration_job import MigrationJob, MigrationJobProps
from constructs.monitoring import AlertThresholds, Monitoring, MonitoringProps
from constructs.network import Network, NetworkProps
from constructs.private_bucket import PrivateBucket, PrivateBucketProps
from constructs.server_container import RunPlacement, ServerContainerProps
from constructs.server_identity import ServerIdentity, ServerIdentityProps
from constructs.sql_database import SqlDatabase, SqlDatabaseProps
from constructs.tracking_service import TrackingService, TrackingServiceProps
from stacks.backend import use_state_bucket
from stacks.config import Config, alert_thresholds
from stacks.providers import use_google, use_random
from stacks.wiring import wait_for


def mlflow_stack_name(cfg: Config) -> str:
    return f"mlflow-{cfg.environment}"


class MlflowStack(TerraformStack):
    def __init__(self, scope: Construct, cfg: Config) -> None:
        name = mlflow_stack_name(cfg)
        super().__init__(scope, name)
        use_state_bucket(self, cfg, name)
        use_google(self, cfg.project_id, cfg.region)
        use_random(self)
        p, prefix = cfg.project_id, cfg.name_prefix
        direct_iap = cfg.front_door.mode == "direct_iap"
        location = cfg.artifact_location or cfg.region

        network = Network(
            self,
            "network",
            NetworkProps(
                project=p,
                region=cfg.region,
                name=f"{prefix}-vpc",
                subnet_cidr=cfg.network.subnet_cidr,
                private_services_cidr=cfg.network.private_services_cidr,
            ),
        )
        database = SqlDatabase(
            self,
            "database",
            SqlDatabaseProps(
                project=p,
                region=cfg.region,
                instance_name=f"{prefix}-db",
                database_version=cfg.database.version,
                tier=cfg.database.tier,
                disk_size_gb=cfg.database.disk_size_gb,
                network_id=network.network_id,
                private_services_access=network.private_services_access,
                backup_retention_days=cfg.database.backup_retention_days,
                password_revision=cfg.database.password_revision,
            ),
        )
        artifacts = PrivateBucket(
            self,
            "artifacts",
            PrivateBucketProps(
                project=p,
                name=f"{p}-{prefix}-artifacts",
                location=location,
            ),
        )
        secret = BackendStoreSecret(
            self,
            "backend-store-uri",
            BackendStoreSecretProps(
                project=p,
                region=cfg.region,
                secret_id=f"{prefix}-backend-store-uri",
                user=database.user_name,
                password=database.password,
                database=database.database_name,
                connection_name=database.connection_name,
                revision=cfg.database.password_revision,
            ),
        )
        server = ServerIdentity(self, "server-identity", ServerIdentityProps(project=p, account_id=f"{prefix}-server"))
        server_grants = [
            secret.grant_access("server-reads-uri", server.member),
            artifacts.grant_object_user("server-object-user", server.member),
            *server.project_roles,
        ]

        # The `aud` of the signed header (x-goog-iap-jwt-assertion) IAP adds in front of the service in
        # direct_iap, known at synth; None behind the load balancer (its backend service id is known
        # only at apply). Meant for the server container's expected IAP audience (issue 20).
        self.iap_signed_header_audience: str | None = (
            signed_header_audience(cfg.server_service_name, cfg.project_number, cfg.region) if direct_iap else None
        )
        container = ServerContainerProps(
            image=cfg.server_image,
            backend_store_secret_id=secret.secret_id,
            backend_store_secret_version=secret.version,
            sql_connection_name=database.connection_name,
            artifact_bucket=artifacts.bucket_name,
            artifact_mount_path=cfg.server.artifact_mount_path,
            domain=cfg.domain,
            workers=cfg.server.workers,
            pool_size=cfg.server.pool_size,
            max_overflow=cfg.server.max_overflow,
        )
        placement = RunPlacement(
            project=p,
            region=cfg.region,
            service_account_email=server.email,
            network_name=network.network_name,
            subnet_name=network.subnet_name,
        )
        service = TrackingService(
            self,
            "tracking-service",
            TrackingServiceProps(
                name=cfg.server_service_name,
                placement=placement,
                container=container,
                cpu=cfg.server.cpu,
                memory=cfg.server.memory,
                min_instances=cfg.server.min_instances,
                max_instances=cfg.server.max_instances,
                concurrency=cfg.server.concurrency,
                direct_iap=direct_iap,
            ),
        )
        migration = MigrationJob(
            self,
            "migration-job",
            MigrationJobProps(name=f"{prefix}-migrate", placement=placement, container=container),
        )
        # Cloud Run checks the secret, the bucket mount and the SQL role when a revision starts, and
        # a new image only starts once the migration job has run with it.
        wait_for(migration, server_grants)
        wait_for(service, [*server_grants, migration.execution])
        # Created by the project stack, which is applied first.
        service.grant_invoker("iap-service-agent", iap_service_agent_member(cfg.project_number))
        iap_accounts = {}
        if cfg.client_impersonators:
            client = ClientIdentity(
                self,
                "client-identity",
                ClientIdentityProps(project=p, account_id=f"{prefix}-client", impersonators=cfg.client_impersonators),
            )
            iap_accounts["client-identity"] = client.member
            TerraformOutput(
                self,
                "client_service_account",
                value=client.email,
                description="export MLFLOW_IAP_SERVICE_ACCOUNT=<this> for scripts run by people (client/README.md)",
            )
        oauth_secret = ""
        if cfg.iap_oauth_client.client_id:
            # Ephemeral (Terraform >= 1.10): read from TF_VAR_iap_oauth_client_secret at plan and apply,
            # kept out of cdktf.out, the plan file and state; only ever passed to a write-only argument.
            secret_variable = TerraformVariable(
                self,
                "iap_oauth_client_secret",
                type="string",
                sensitive=True,
                nullable=False,
                description="Secret of the custom IAP OAuth client; set TF_VAR_iap_oauth_client_secret",
            )
            secret_variable.add_override("ephemeral", True)
            oauth_secret = secret_variable.string_value
        front_door = dns = None
        if direct_iap:
            cloud_run_iap = CloudRunIap(
                self,
                "cloud-run-iap",
                CloudRunIapProps(
                    project=p,
                    project_number=cfg.project_number,
                    region=cfg.region,
                    service_name=service.service_name,
                    iap_members=cfg.iap_members,
                    iap_accounts=iap_accounts,
                ),
            )
        else:
            front_door = FrontDoor(
                self,
                "front-door",
                FrontDoorProps(
                    project=p,
                    project_number=cfg.project_number,
                    region=cfg.region,
                    name=prefix,
                    domain=cfg.domain,
                    cloud_run_service=service.service_name,
                    iap_members=cfg.iap_members,
                    iap_accounts=iap_accounts,
                    iap_programmatic_clients=cfg.iap_programmatic_clients,
                    oauth_client_id=cfg.iap_oauth_client.client_id,
                    oauth_client_secret=oauth_secret,
                    oauth_client_secret_version=cfg.iap_oauth_client.secret_version,
                ),
            )
            dns = DnsZone(
                self,
                "dns",
                DnsZoneProps(
                    project=p,
                    zone_name=f"{prefix}-zone",
                    domain=cfg.domain,
                    ip_address=front_door.ip_address,
                    existing_zone=cfg.dns.existing_zone,
                ),
            )

        channels: tuple[str, ...] = ()
        if cfg.alerts.enabled:
            monitoring = Monitoring(
                self,
                "monitoring",
                MonitoringProps(
                    project=p,
                    name=prefix,
                    emails=cfg.alerts.emails,
                    service_name=service.service_name,
                    migration_job_name=migration.job_name,
                    sql_instance_name=database.instance_name,
                    artifact_bucket=artifacts.bucket_name,
                    thresholds=AlertThresholds(**alert_thresholds(cfg)),
                    # The front door serves the Google-managed certificate for the domain; direct_iap's
                    # domain is the run.app host, with Google's certificate.
                    public_host=cfg.domain,
                ),
            )
            channels = monitoring.channel_ids[:5]
        if cfg.budget.billing_account:
            # The Billing Budgets API refuses user credentials without a quota project; only the
            # budget uses this provider, so nothing else is billed to or needs serviceusage on it.
            billing = GoogleProvider(
                self, "google-billing", alias="billing", project=p, billing_project=p, user_project_override=True
            )
            BillingBudget(
                self,
                "budget",
                BillingBudgetProps(
                    billing_account=cfg.budget.billing_account,
                    project_number=cfg.project_number,
                    display_name=f"{prefix}-{cfg.environment} monthly",
                    monthly_usd=cfg.budget.monthly_usd,
                    notification_channels=channels,
                    provider=billing,
                ),
            )

        TerraformOutput(self, "mlflow_url", value=f"https://{cfg.domain}", description="Open in a browser (IAP login)")
        if front_door is not None:
            TerraformOutput(self, "static_ip", value=front_door.ip_address, description="The load balancer's address")
        if dns is not None and dns.name_servers is not None:
            TerraformOutput(
                self, "name_servers", value=dns.name_servers, description=f"Delegate {cfg.domain} to these at the registrar"
            )
            TerraformOutput(
                self,
                "ds_record_command",
                value=f"gcloud dns dns-keys list --zone={dns.zone_name} --project={p} --filter=type=keySigning "
                "--format='value(ds_record())'",
                description="Prints the DS record to add at the parent zone (the zone is DNSSEC-signed)",
            )
        if front_door is not None:
            TerraformOutput(
                self,
                "certificate_status_command",
                value=f"gcloud compute ssl-certificates describe {front_door.certificate_name} --global --project={p} "
                "--format='value(managed.status,managed.domainStatus)'",
                description="ACTIVE once the domain resolves to static_ip; HTTPS fails with a TLS error until then",
            )
        TerraformOutput(
            self,
            "server_logs_command",
            value=f"gcloud logging read 'resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"{service.service_name}\"' "
            f"--project={p} --freshness=1h --limit=100",
            description="The server's recent logs (start-up refusals, errors)",
        )
        TerraformOutput(
            self,
            "migration_command",
            value=migration.execute_command,
            description="Runs the migration by hand; every apply that changes the image already runs it",
        )
        TerraformOutput(
            self,
            "migration_logs_command",
            value=f"gcloud logging read 'resource.type=\"cloud_run_job\" AND resource.labels.job_name=\"{migration.job_name}\"' "
            f"--project={p} --freshness=1d --limit=100",
            description="The migration job's logs, when an apply stops at the migration",
        )
        TerraformOutput(self, "sql_connection_name", value=database.connection_name)
