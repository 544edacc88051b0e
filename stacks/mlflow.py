"""The MLflow stack of one environment: network, data, server, front door and DNS.

`MlflowStack.__init__` is the map: one line per concern, in the order each needs the one before.
Each concern is a method that makes its constructs with the stack as their scope (so every
construct id, hence every Terraform address, is what it always was) and returns what the next one
needs as a small frozen record, never as attributes of the stack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from constructs import Construct
from constructs.cdk import Annotations, TerraformOutput, TerraformStack, TerraformVariable
from constructs.cdk.google.provider import GoogleProvider
from constructs.data.backend_store_secret import BackendStoreSecret, BackendStoreSecretProps, iam_backend_store_uri
from constructs.data.gateway_key_secret import GatewayKeySecret, GatewayKeySecretProps
from constructs.data.private_bucket import PrivateBucket, PrivateBucketProps
from constructs.data.sql_database import SqlDatabase, SqlDatabaseProps
from constructs.front_door.cloud_run_iap import CloudRunIap, CloudRunIapProps
from constructs.front_door.dns_zone import DnsZone, DnsZoneProps
from constructs.front_door.front_door import FrontDoor, FrontDoorProps
from constructs.identity.access_control import AccessControl, AccessControlProps
from constructs.identity.client_identity import client_accounts
from constructs.identity.iam_members import keyed_members, service_account_email
from constructs.identity.iap_service_agent import iap_service_agent_member
from constructs.identity.server_roles import ServerRoles, ServerRolesProps
from constructs.network.network import Network, NetworkProps
from constructs.operations.billing_budget import BillingBudget, BillingBudgetProps
from constructs.operations.monitoring import AlertThresholds, Monitoring, MonitoringProps
from constructs.serving.migration_job import MigrationJob, MigrationJobProps
from constructs.serving.run_url import signed_header_audience
from constructs.serving.schema_upgrade import SchemaUpgrade, SchemaUpgradeProps
from constructs.serving.server_container import GatewayKeyRef, RunPlacement, RunStructs, ServerContainerProps
from constructs.serving.tracking_service import TrackingService, TrackingServiceProps
from stacks.backend import use_state_bucket
from stacks.config import Config, alert_thresholds
from stacks.project import server_account_id
from stacks.providers import use_google, use_random
from stacks.runbook import add_runbook_outputs
from stacks.wiring import Dependable, wait_for


def mlflow_stack_name(cfg: Config) -> str:
    return f"mlflow-{cfg.environment}"


# Where the server's account was in this stack's state before it moved to the project stack (same
# construct path there, so the same address: tests/constructs/identity/test_server_identity.py checks both).
SERVER_ACCOUNT_BEFORE = "google_service_account.server-identity_account_25E041FD"


@dataclass(frozen=True)
class Identities:
    """The accounts the project stack made (a person's apply), named here by their emails."""

    server_email: str
    server_member: str
    # The server's project roles (Cloud SQL client, and instance user with IAM login).
    server_roles: ServerRoles
    # Each person's own client account, admitted by IAP under a key of its member.
    iap_accounts: dict[str, str]


@dataclass(frozen=True)
class Data:
    database: SqlDatabase
    artifacts: PrivateBucket
    # How the server reaches its backend store: ServerContainerProps' backend-store fields.
    backend_store: dict[str, str]
    # What a server revision and the migration need before they start (secret, bucket, roles).
    server_grants: list[Dependable]


@dataclass(frozen=True)
class GatewayKey:
    """The AI gateway's key as the service reads it, and the grant it waits for (the service only:
    the migration job stores and reads no gateway secret)."""

    ref: GatewayKeyRef
    grant: Dependable


@dataclass(frozen=True)
class Access:
    """[access]: the server's variables for MLflow's own permissions, and the grant on the bootstrap
    admin's secret a server revision and the migration wait for."""

    env: Callable[[RunStructs], list[Any]]
    grant: Dependable


@dataclass(frozen=True)
class Entry:
    """The front door as the service sees it: the load balancer (None with direct_iap) and the
    audience IAP signs every request for, which the service verifies."""

    load_balancer: FrontDoor | None
    iap_audience: str


@dataclass(frozen=True)
class Serving:
    service: TrackingService
    migration: MigrationJob
    upgrade: SchemaUpgrade


def _instance_name(cfg: Config) -> str:
    return cfg.database.instance_name or f"{cfg.name_prefix}-db"


class MlflowStack(TerraformStack):
    def __init__(self, scope: Construct, cfg: Config) -> None:
        name = mlflow_stack_name(cfg)
        super().__init__(scope, name)
        self._settings(cfg, name)
        network = self._network(cfg)
        # The server's identity comes before the data: with IAM login its account is the database user.
        identities = self._identities(cfg)
        data = self._data(cfg, network, identities)
        gateway_key = self._gateway_key(cfg, identities)
        access = self._access_control(cfg, identities)
        # The load balancer before the service, which verifies the audience IAP signs for it.
        entry = self._entry(cfg, identities)
        serving = self._serving(cfg, network, identities, data, gateway_key, entry.iap_audience, access)
        dns = self._admission(cfg, entry, serving.service, identities)
        channels = self._monitoring(cfg, data, serving)
        self._budget(cfg, channels)
        self._outputs(cfg, entry, dns)
        self._operations_outputs(cfg, data, serving)

    def _settings(self, cfg: Config, name: str) -> None:
        """State backend, providers, and a warning when the data is left unprotected."""
        use_state_bucket(self, cfg, name)
        use_google(self, cfg.project_id, cfg.region)
        # The gateway key always; the database password too with password login.
        use_random(self)
        if not cfg.protect_data:
            Annotations.of(self).add_warning(
                f"protect_data = false: {name}'s database, artifact bucket and secret can be destroyed by the next "
                "apply; set it back to true unless you are tearing this environment down (README: Tear-down)"
            )

    def _network(self, cfg: Config) -> Network:
        return Network(
            self,
            "network",
            NetworkProps(
                project=cfg.project_id,
                region=cfg.region,
                name=f"{cfg.name_prefix}-vpc",
                subnet_cidr=cfg.network.subnet_cidr,
                private_services_cidr=cfg.network.private_services_cidr,
            ),
        )

    def _identities(self, cfg: Config) -> Identities:
        p, prefix = cfg.project_id, cfg.name_prefix
        server_email = service_account_email(p, server_account_id(cfg))
        server_member = f"serviceAccount:{server_email}"
        self._forget_the_server_account_it_made_before()
        # Construct id as when the account was made here too: the roles' Terraform addresses stay.
        server_roles = ServerRoles(
            self,
            "server-identity",
            ServerRolesProps(
                project=p,
                member=server_member,
                sql_instance_name=_instance_name(cfg),
                database_login=cfg.database.auth == "iam",
            ),
        )
        clients = client_accounts(p, prefix, cfg.client_impersonators)
        iap_accounts = {
            f"client-{key}": f"serviceAccount:{clients[member]}"
            for key, member in keyed_members("client_impersonators", cfg.client_impersonators).items()
        }
        return Identities(server_email, server_member, server_roles, iap_accounts)

    def _forget_the_server_account_it_made_before(self) -> None:
        """Terraform 1.7+ `removed`: drop the account from this stack's state without deleting it (the
        project stack adopts it); nothing to do where it never was."""
        self.add_override("removed", [{"from": SERVER_ACCOUNT_BEFORE, "lifecycle": {"destroy": False}}])

    def _data(self, cfg: Config, network: Network, identities: Identities) -> Data:
        """The database, the artifact bucket, and how the server reaches the database."""
        iam_login = cfg.database.auth == "iam"
        database = SqlDatabase(
            self,
            "database",
            SqlDatabaseProps(
                project=cfg.project_id,
                region=cfg.region,
                instance_name=_instance_name(cfg),
                database_version=cfg.database.version,
                tier=cfg.database.tier,
                disk_size_gb=cfg.database.disk_size_gb,
                network_id=network.network_id,
                private_services_access=network.private_services_access,
                backup_retention_days=cfg.database.backup_retention_days,
                password_revision=cfg.database.password_revision,
                protect_from_destroy=cfg.protect_data,
                iam_service_account_email=identities.server_email if iam_login else "",
            ),
        )
        artifacts = PrivateBucket(
            self,
            "artifacts",
            PrivateBucketProps(
                project=cfg.project_id,
                name=f"{cfg.project_id}-{cfg.name_prefix}-artifacts",
                location=cfg.artifact_location or cfg.region,
                protect_from_destroy=cfg.protect_data,
            ),
        )
        grants: list[Dependable] = [artifacts.grant_object_user("server-object-user", identities.server_member)]
        grants += identities.server_roles.grants
        if iam_login:
            # Nothing secret: the URI names the IAM user, each connection's token comes from the metadata server.
            uri = iam_backend_store_uri(database.user_name, database.database_name, database.connection_name)
            return Data(database, artifacts, {"iam_backend_store_uri": uri}, grants)
        secret = self._backend_store_secret(cfg, database)
        grants.insert(0, secret.grant_access("server-reads-uri", identities.server_member))
        backend_store = {"backend_store_secret_id": secret.secret_id, "backend_store_secret_version": secret.version}
        return Data(database, artifacts, backend_store, grants)

    def _backend_store_secret(self, cfg: Config, database: SqlDatabase) -> BackendStoreSecret:
        """Password login: the backend store URI, password included, lives in Secret Manager only."""
        return BackendStoreSecret(
            self,
            "backend-store-uri",
            BackendStoreSecretProps(
                project=cfg.project_id,
                region=cfg.region,
                secret_id=f"{cfg.name_prefix}-backend-store-uri",
                user=database.user_name,
                password=database.password,
                database=database.database_name,
                connection_name=database.connection_name,
                revision=cfg.database.password_revision,
                protect_from_destroy=cfg.protect_data,
            ),
        )

    def _gateway_key(self, cfg: Config, identities: Identities) -> GatewayKey:
        """The AI gateway's key, one per deployment, in Secret Manager."""
        secret = GatewayKeySecret(
            self,
            "gateway-key",
            GatewayKeySecretProps(
                project=cfg.project_id,
                region=cfg.region,
                secret_id=f"{cfg.name_prefix}-gateway-key",
                revision=cfg.server.gateway_key_revision,
                protect_from_destroy=cfg.protect_data,
            ),
        )
        ref = GatewayKeyRef(secret.secret_id, secret.version, secret.kek_version)
        return GatewayKey(ref, secret.grant_access("server-reads-key", identities.server_member))

    def _access_control(self, cfg: Config, identities: Identities) -> Access | None:
        """[access]: MLflow's own permissions for the IAP-verified user (docs/security.md: Teams and permissions)."""
        if cfg.access is None:
            return None
        access = AccessControl(
            self,
            "access-control",
            AccessControlProps(
                project=cfg.project_id,
                region=cfg.region,
                secret_id=f"{cfg.name_prefix}-mlflow-bootstrap-admin",
                model=cfg.access.server_model(),
                protect_from_destroy=cfg.protect_data,
            ),
        )
        if cfg.access.groups:
            TerraformOutput(
                self,
                "groups_reader_step",
                value=f"Admin console > Account > Admin roles > Groups Reader > Assign service accounts: {identities.server_email}",
                description="The one-time step that lets the server read [access] groups' members (docs/security.md: Teams and permissions)",
            )
        return Access(access.env, access.grant_access("server-reads-admin", identities.server_member))

    def _entry(self, cfg: Config, identities: Identities) -> Entry:
        """The load balancer with IAP in front of the service, or with direct_iap only the audience
        IAP signs for in front of the service itself, known at synth."""
        if cfg.front_door.mode == "direct_iap":
            return Entry(None, signed_header_audience(cfg.server_service_name, cfg.project_number, cfg.region))
        front_door = FrontDoor(
            self,
            "front-door",
            FrontDoorProps(
                project=cfg.project_id,
                project_number=cfg.project_number,
                region=cfg.region,
                name=cfg.name_prefix,
                domain=cfg.domain,
                # A plain name, not a reference: the service depends on the load balancer (its audience).
                cloud_run_service=cfg.server_service_name,
                iap_members=cfg.iap_members,
                iap_accounts=identities.iap_accounts,
                iap_programmatic_clients=cfg.iap_programmatic_clients,
                oauth_client_id=cfg.iap_oauth_client.client_id,
                oauth_client_secret=self._oauth_client_secret(cfg),
                oauth_client_secret_version=cfg.iap_oauth_client.secret_version,
            ),
        )
        return Entry(front_door, front_door.iap_audience)

    def _oauth_client_secret(self, cfg: Config) -> str:
        """A reference to the custom IAP OAuth client's secret, or "" for the Google-managed client."""
        if not cfg.iap_oauth_client.client_id:
            return ""
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
        return secret_variable.string_value

    def _container(
        self, cfg: Config, network: Network, server_email: str, data: Data
    ) -> tuple[ServerContainerProps, RunPlacement]:
        """The server's container and where it runs: shared by the service and the migration job."""
        container = ServerContainerProps(
            image=cfg.server_image,
            sql_connection_name=data.database.connection_name,
            artifact_bucket=data.artifacts.bucket_name,
            artifact_mount_path=cfg.server.artifact_mount_path,
            domain=cfg.domain,
            workers=cfg.server.workers,
            pool_size=cfg.server.pool_size,
            max_overflow=cfg.server.max_overflow,
            **data.backend_store,
        )
        placement = RunPlacement(
            project=cfg.project_id,
            region=cfg.region,
            service_account_email=server_email,
            network_name=network.network_name,
            subnet_name=network.subnet_name,
        )
        return container, placement

    def _serving(
        self,
        cfg: Config,
        network: Network,
        identities: Identities,
        data: Data,
        gateway_key: GatewayKey,
        iap_audience: str,
        access: Access | None,
    ) -> Serving:
        """The Cloud Run service, the migration job that runs each new image first, and the upgrade window."""
        container, placement = self._container(cfg, network, identities.server_email, data)
        service = TrackingService(
            self,
            "tracking-service",
            TrackingServiceProps(
                # A plain name: the front door's serverless NEG names the service, and the service carries
                # the IAP audience it verifies every request against (docker/iap_identity.py).
                name=cfg.server_service_name,
                placement=placement,
                container=container,
                cpu=cfg.server.cpu,
                memory=cfg.server.memory,
                min_instances=cfg.server.min_instances,
                max_instances=cfg.server.max_instances,
                concurrency=cfg.server.concurrency,
                direct_iap=cfg.front_door.mode == "direct_iap",
                iap_audience=iap_audience,
                gateway_key=gateway_key.ref,
                access_env=access.env if access else None,
            ),
        )
        migration = MigrationJob(
            self,
            "migration-job",
            MigrationJobProps(name=f"{cfg.name_prefix}-migrate", placement=placement, container=container),
        )
        upgrade = SchemaUpgrade(
            self,
            "schema-upgrade",
            SchemaUpgradeProps(
                project=cfg.project_id,
                region=cfg.region,
                sql_instance_name=data.database.instance_name,
                service_name=cfg.server_service_name,
                image=cfg.server_image,
                open_ingress=service.ingress,
            ),
        )
        grants = [*data.server_grants, *([access.grant] if access else [])]
        self._rollout_order(grants, gateway_key.grant, service, migration, upgrade)
        # Created by the project stack, which is applied first.
        service.grant_invoker("iap-service-agent", iap_service_agent_member(cfg.project_number))
        return Serving(service, migration, upgrade)

    @staticmethod
    def _rollout_order(
        grants: list[Dependable],
        key_grant: Dependable,
        service: TrackingService,
        migration: MigrationJob,
        upgrade: SchemaUpgrade,
    ) -> None:
        # Cloud Run checks the secret, the bucket mount and the SQL roles when a revision starts (and
        # the first login needs the IAM user), and a new image only starts once the migration job has
        # run with it, behind the closed ingress.
        wait_for(migration, grants)
        wait_for(migration.execution, [upgrade.writers_stopped])
        wait_for(service, [*grants, key_grant, migration.execution])
        wait_for(upgrade.reopen, [service])

    def _admission(self, cfg: Config, entry: Entry, service: TrackingService, identities: Identities) -> DnsZone | None:
        """Who reaches the service: with direct_iap, IAP grants on the service itself (they name it, so
        they follow it); behind the load balancer, the DNS zone that points the domain at it."""
        if entry.load_balancer is None:
            CloudRunIap(
                self,
                "cloud-run-iap",
                CloudRunIapProps(
                    project=cfg.project_id,
                    region=cfg.region,
                    service_name=service.service_name,
                    iap_members=cfg.iap_members,
                    iap_accounts=identities.iap_accounts,
                ),
            )
            return None
        return DnsZone(
            self,
            "dns",
            DnsZoneProps(
                project=cfg.project_id,
                zone_name=f"{cfg.name_prefix}-zone",
                domain=cfg.domain,
                ip_address=entry.load_balancer.ip_address,
                existing_zone=cfg.dns.existing_zone,
            ),
        )

    def _monitoring(self, cfg: Config, data: Data, serving: Serving) -> tuple[str, ...]:
        """Alerts and the dashboard when configured; the notification channels the budget reuses."""
        if not cfg.alerts.enabled:
            return ()
        monitoring = Monitoring(
            self,
            "monitoring",
            MonitoringProps(
                project=cfg.project_id,
                name=cfg.name_prefix,
                emails=cfg.alerts.emails,
                service_name=serving.service.service_name,
                migration_job_name=serving.migration.job_name,
                sql_instance_name=data.database.instance_name,
                artifact_bucket=data.artifacts.bucket_name,
                thresholds=AlertThresholds(**alert_thresholds(cfg)),
                # The front door serves the Google-managed certificate for the domain; direct_iap's
                # domain is the run.app host, with Google's certificate.
                public_host=cfg.domain,
            ),
        )
        return monitoring.channel_ids[:5]

    def _budget(self, cfg: Config, channels: tuple[str, ...]) -> None:
        if not cfg.budget.billing_account:
            return
        p = cfg.project_id
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
                display_name=f"{cfg.name_prefix}-{cfg.environment} monthly",
                monthly_usd=cfg.budget.monthly_usd,
                notification_channels=channels,
                provider=billing,
            ),
        )

    def _outputs(self, cfg: Config, entry: Entry, dns: DnsZone | None) -> None:
        """How users and operators reach the deployment: URL, address, delegation, certificate."""
        p = cfg.project_id
        TerraformOutput(self, "mlflow_url", value=f"https://{cfg.domain}", description="Open in a browser (IAP login)")
        front_door = entry.load_balancer
        if front_door is not None:
            TerraformOutput(self, "static_ip", value=front_door.ip_address, description="The load balancer's address")
        if dns is not None and dns.name_servers is not None:
            TerraformOutput(
                self,
                "name_servers",
                value=dns.name_servers,
                description=f"Delegate {cfg.domain} to these at the registrar",
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

    def _operations_outputs(self, cfg: Config, data: Data, serving: Serving) -> None:
        """Commands for day 2: logs, the migration by hand, reopening after an upgrade."""
        p = cfg.project_id
        TerraformOutput(
            self,
            "server_logs_command",
            value=f'gcloud logging read \'resource.type="cloud_run_revision" AND resource.labels.service_name="{serving.service.service_name}"\' '
            f"--project={p} --freshness=1h --limit=100",
            description="The server's recent logs (start-up refusals, errors)",
        )
        TerraformOutput(
            self,
            "migration_command",
            value=serving.migration.execute_command,
            description="Runs the migration by hand; every apply that changes the image already runs it",
        )
        TerraformOutput(
            self,
            "reopen_command",
            value=serving.upgrade.reopen_command,
            description="Reopens the service after an upgrade stopped with it closed (docs/operations.md: Migrations and upgrades)",
        )
        TerraformOutput(
            self,
            "migration_logs_command",
            value=f'gcloud logging read \'resource.type="cloud_run_job" AND resource.labels.job_name="{serving.migration.job_name}"\' '
            f"--project={p} --freshness=1d --limit=100",
            description="The migration job's logs, when an apply stops at the migration",
        )
        TerraformOutput(self, "sql_connection_name", value=data.database.connection_name)
        add_runbook_outputs(self, cfg, data.database, data.artifacts.bucket_name)
