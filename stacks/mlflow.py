"""The MLflow stack of one environment: network, data, server, front door and DNS."""

from __future__ import annotations

from constructs.cdk import Annotations, TerraformOutput, TerraformStack, TerraformVariable
from constructs.cdk.google.provider import GoogleProvider
from constructs import Construct

from constructs.backend_store_secret import BackendStoreSecret, BackendStoreSecretProps, iam_backend_store_uri
from constructs.billing_budget import BillingBudget, BillingBudgetProps
from constructs.client_identity import ClientIdentity, ClientIdentityProps
from constructs.cloud_run_iap import CloudRunIap, CloudRunIapProps
from constructs.dns_zone import DnsZone, DnsZoneProps
from constructs.front_door import FrontDoor, FrontDoorProps
from constructs.iap_service_agent import iap_service_agent_member
from constructs.migration_job import MigrationJob, MigrationJobProps
from constructs.monitoring import AlertThresholds, Monitoring, MonitoringProps
from constructs.network import Network, NetworkProps
from constructs.private_bucket import PrivateBucket, PrivateBucketProps
from constructs.run_url import signed_header_audience
from constructs.schema_upgrade import SchemaUpgrade, SchemaUpgradeProps
from constructs.server_container import RunPlacement, ServerContainerProps
from constructs.server_identity import ServerIdentity, ServerIdentityProps
from constructs.sql_database import SqlDatabase, SqlDatabaseProps
from constructs.tracking_service import TrackingService, TrackingServiceProps
from stacks.backend import use_state_bucket
from stacks.config import Config, alert_thresholds
from stacks.providers import use_google, use_random
from stacks.runbook import add_runbook_outputs
from stacks.wiring import wait_for


def mlflow_stack_name(cfg: Config) -> str:
    return f"mlflow-{cfg.environment}"


class MlflowStack(TerraformStack):
    def __init__(self, scope: Construct, cfg: Config) -> None:
        name = mlflow_stack_name(cfg)
        super().__init__(scope, name)
        use_state_bucket(self, cfg, name)
        use_google(self, cfg.project_id, cfg.region)
        iam_login = cfg.database.auth == "iam"
        if not iam_login:
            use_random(self)
        p, prefix = cfg.project_id, cfg.name_prefix
        direct_iap = cfg.front_door.mode == "direct_iap"
        location = cfg.artifact_location or cfg.region
        if not cfg.protect_data:
            Annotations.of(self).add_warning(
                f"protect_data = false: {name}'s database, artifact bucket and secret can be destroyed by the next "
                "apply; set it back to true unless you are tearing this environment down (README: Tear-down)"
            )

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
        server = ServerIdentity(
            self,
            "server-identity",
            ServerIdentityProps(project=p, account_id=f"{prefix}-server", database_login=iam_login),
        )
        database = SqlDatabase(
            self,
            "database",
            SqlDatabaseProps(
                project=p,
                region=cfg.region,
                instance_name=cfg.database.instance_name or f"{prefix}-db",
                database_version=cfg.database.version,
                tier=cfg.database.tier,
                disk_size_gb=cfg.database.disk_size_gb,
                network_id=network.network_id,
                private_services_access=network.private_services_access,
                backup_retention_days=cfg.database.backup_retention_days,
                password_revision=cfg.database.password_revision,
                protect_from_destroy=cfg.protect_data,
                iam_service_account_email=server.email if iam_login else "",
            ),
        )
        artifacts = PrivateBucket(
            self,
            "artifacts",
            PrivateBucketProps(
                project=p,
                name=f"{p}-{prefix}-artifacts",
                location=location,
                protect_from_destroy=cfg.protect_data,
            ),
        )
        server_grants = [artifacts.grant_object_user("server-object-user", server.member), *server.project_roles]
        if iam_login:
            # Nothing secret: the URI names the IAM user, each connection's token comes from the metadata server.
            backend_store = {
                "iam_backend_store_uri": iam_backend_store_uri(
                    database.user_name, database.database_name, database.connection_name
                )
            }
        else:
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
                    protect_from_destroy=cfg.protect_data,
                ),
            )
            server_grants.insert(0, secret.grant_access("server-reads-uri", server.member))
            backend_store = {"backend_store_secret_id": secret.secret_id, "backend_store_secret_version": secret.version}

        container = ServerContainerProps(
            image=cfg.server_image,
            sql_connection_name=database.connection_name,
            artifact_bucket=artifacts.bucket_name,
            artifact_mount_path=cfg.server.artifact_mount_path,
            domain=cfg.domain,
            workers=cfg.server.workers,
            pool_size=cfg.server.pool_size,
            max_overflow=cfg.server.max_overflow,
            **backend_store,
        )
        placement = RunPlacement(
            project=p,
            region=cfg.region,
            service_account_email=server.email,
            network_name=network.network_name,
            subnet_name=network.subnet_name,
        )
        # A plain name: the front door's serverless NEG names the service, and the service carries
        # the IAP audience it verifies every request against (docker/iap_identity.py).
        service_name = cfg.server_service_name
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
            # The `aud` IAP signs for in front of the service itself, known at synth.
            iap_audience = signed_header_audience(service_name, cfg.project_number, cfg.region)
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
                    cloud_run_service=service_name,
                    iap_members=cfg.iap_members,
                    iap_accounts=iap_accounts,
                    iap_programmatic_clients=cfg.iap_programmatic_clients,
                    oauth_client_id=cfg.iap_oauth_client.client_id,
                    oauth_client_secret=oauth_secret,
                    oauth_client_secret_version=cfg.iap_oauth_client.secret_version,
                ),
            )
            iap_audience = front_door.iap_audience
        service = TrackingService(
            self,
            "tracking-service",
            TrackingServiceProps(
                name=service_name,
                placement=placement,
                container=container,
                cpu=cfg.server.cpu,
                memory=cfg.server.memory,
                min_instances=cfg.server.min_instances,
                max_instances=cfg.server.max_instances,
                concurrency=cfg.server.concurrency,
                direct_iap=direct_iap,
                iap_audience=iap_audience,
            ),
        )
        if direct_iap:
            CloudRunIap(
                self,
                "cloud-run-iap",
                CloudRunIapProps(
                    project=p,
                    region=cfg.region,
                    service_name=service.service_name,
                    iap_members=cfg.iap_members,
                    iap_accounts=iap_accounts,
                ),
            )
        migration = MigrationJob(
            self,
            "migration-job",
            MigrationJobProps(name=f"{prefix}-migrate", placement=placement, container=container),
        )
        upgrade = SchemaUpgrade(
            self,
            "schema-upgrade",
            SchemaUpgradeProps(
                project=p,
                region=cfg.region,
                sql_instance_name=database.instance_name,
                service_name=service_name,
                image=cfg.server_image,
                open_ingress=service.ingress,
            ),
        )
        # Cloud Run checks the secret, the bucket mount and the SQL roles when a revision starts (and
        # the first login needs the IAM user), and a new image only starts once the migration job has
        # run with it, behind the closed ingress.
        wait_for(migration, server_grants)
        wait_for(migration.execution, [upgrade.writers_stopped])
        wait_for(service, [*server_grants, migration.execution])
        wait_for(upgrade.reopen, [service])
        # Created by the project stack, which is applied first.
        service.grant_invoker("iap-service-agent", iap_service_agent_member(cfg.project_number))
        if front_door is not None:
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
            "reopen_command",
            value=upgrade.reopen_command,
            description="Reopens the service after an upgrade stopped with it closed (README: Migrations and upgrades)",
        )
        TerraformOutput(
            self,
            "migration_logs_command",
            value=f"gcloud logging read 'resource.type=\"cloud_run_job\" AND resource.labels.job_name=\"{migration.job_name}\"' "
            f"--project={p} --freshness=1d --limit=100",
            description="The migration job's logs, when an apply stops at the migration",
        )
        TerraformOutput(self, "sql_connection_name", value=database.connection_name)
        add_runbook_outputs(self, cfg, database, artifacts.bucket_name)
