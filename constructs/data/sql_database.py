"""Cloud SQL for PostgreSQL with a private IP only, its database and its user (IAM or password)."""

from __future__ import annotations

from dataclasses import dataclass

from constructs import Construct
from constructs.cdk import Fn, ITerraformDependable, TerraformResourceLifecycle, Token, set_newer_provider_attribute
from constructs.cdk.google.sql_database import SqlDatabase as SqlDatabaseResource
from constructs.cdk.google.sql_database_instance import (
    SqlDatabaseInstance,
    SqlDatabaseInstanceSettings,
    SqlDatabaseInstanceSettingsBackupConfiguration,
    SqlDatabaseInstanceSettingsBackupConfigurationBackupRetentionSettings,
    SqlDatabaseInstanceSettingsDatabaseFlags,
    SqlDatabaseInstanceSettingsInsightsConfig,
    SqlDatabaseInstanceSettingsIpConfiguration,
    SqlDatabaseInstanceSettingsMaintenanceWindow,
)
from constructs.cdk.google.sql_user import SqlUser
from constructs.cdk.random.password import Password

# Logging flags the CIS Google Cloud benchmark (section 6.2) asks of PostgreSQL instances.
CIS_LOGGING_FLAGS = {
    "log_checkpoints": "on",
    "log_connections": "on",
    "log_disconnections": "on",
    "log_duration": "on",
    "log_lock_waits": "on",
    "log_min_messages": "error",
    "log_min_error_statement": "error",
    "log_min_duration_statement": "-1",
    "log_statement": "ddl",
    "log_hostname": "on",
    "log_temp_files": "0",
    "cloudsql.enable_pgaudit": "on",
}
IAM_AUTHENTICATION_FLAG = "cloudsql.iam_authentication"
SERVICE_ACCOUNT_SUFFIX = ".gserviceaccount.com"
# Every database the Cloud SQL API creates is owned by `cloudsqlsuperuser`; on PostgreSQL 15+ only
# the database owner (pg_database_owner) may create in `public`, so MLflow's schema owner needs this
# membership, which built-in users get by default and IAM users do not. Roles of our own cannot be
# named here: `database_roles` only grants roles that exist, and no SQL runs at apply.
IAM_USER_DATABASE_ROLES = ("cloudsqlsuperuser",)


@dataclass(frozen=True)
class SqlDatabaseProps:
    project: str
    region: str
    instance_name: str
    database_version: str
    tier: str
    disk_size_gb: int
    network_id: str
    private_services_access: ITerraformDependable
    database_name: str = "mlflow"
    user_name: str = "mlflow"
    backup_retention_days: int = 7
    # Bump to rotate the password: a new random_password, written to the user (and the secret).
    password_revision: int = 1
    # default: Terraform and the Cloud SQL API both refuse to delete the instance.
    protect_from_destroy: bool = True
    # default: "", a built-in user with a generated password. A service account's e-mail: IAM
    # database authentication on, that account's IAM database user instead, and no password at all.
    iam_service_account_email: str = ""

    def __post_init__(self) -> None:
        if not self.instance_name or not self.database_name or not self.user_name:
            raise ValueError(
                f"SqlDatabaseProps: instance_name {self.instance_name!r}, database_name {self.database_name!r} and "
                f"user_name {self.user_name!r} must all be given"
            )
        email = self.iam_service_account_email
        if email and not Token.is_unresolved(email) and not email.endswith(SERVICE_ACCOUNT_SUFFIX):
            raise ValueError(
                f"SqlDatabaseProps.iam_service_account_email: {email!r} is not a service account's e-mail "
                f"(NAME@PROJECT.iam{SERVICE_ACCOUNT_SUFFIX})"
            )
        if self.password_revision < 1:
            raise ValueError(
                f"SqlDatabaseProps.password_revision: {self.password_revision} must be 1 or more; bump it to rotate"
            )
        if not 1 <= self.backup_retention_days <= 365:
            raise ValueError(f"SqlDatabaseProps.backup_retention_days: {self.backup_retention_days} must be 1 to 365")
        if self.disk_size_gb < 10:
            raise ValueError(f"SqlDatabaseProps.disk_size_gb: {self.disk_size_gb} is below Cloud SQL's minimum of 10")


class SqlDatabase(Construct):
    """No public IP, TLS required, daily backups with point-in-time recovery, deletion protected.

    IAM login (`iam_service_account_email`): the user is the service account's IAM database user
    (its e-mail without `.gserviceaccount.com`) and logs in with short-lived access tokens; nothing
    secret exists. Password login: the password comes from `random_password`, so it exists only in
    that resource's state (kept in the private, versioned state bucket) and in Secret Manager, never
    in code, config or plan output; the user and the secret take it as write-only arguments.
    """

    def __init__(self, scope: Construct, id: str, props: SqlDatabaseProps) -> None:
        super().__init__(scope, id)
        self._instance = self._private_instance(props)
        self._database = SqlDatabaseResource(
            self,
            "database",
            project=props.project,
            instance=self._instance.name,
            name=props.database_name,
            deletion_policy="ABANDON",
        )
        self._password: Password | None = None
        if props.iam_service_account_email:
            self._user = self._iam_user(props)
        else:
            self._user = self._password_user(props)

    def _private_instance(self, props: SqlDatabaseProps) -> SqlDatabaseInstance:
        return SqlDatabaseInstance(
            self,
            "instance",
            project=props.project,
            region=props.region,
            name=props.instance_name,
            database_version=props.database_version,
            deletion_protection=props.protect_from_destroy,
            settings=SqlDatabaseInstanceSettings(
                tier=props.tier,
                # Shared-core tiers exist only in the Enterprise edition (PostgreSQL 16+ defaults to Plus).
                edition="ENTERPRISE",
                availability_type="ZONAL",
                disk_type="PD_SSD",
                disk_size=props.disk_size_gb,
                disk_autoresize=True,
                deletion_protection_enabled=props.protect_from_destroy,
                ip_configuration=SqlDatabaseInstanceSettingsIpConfiguration(
                    ipv4_enabled=False,
                    private_network=props.network_id,
                    enable_private_path_for_google_cloud_services=True,
                    ssl_mode="TRUSTED_CLIENT_CERTIFICATE_REQUIRED",
                    # Cloud Run's built-in Cloud SQL connection needs the per-instance CA.
                    server_ca_mode="GOOGLE_MANAGED_INTERNAL_CA",
                ),
                backup_configuration=self._backups(props),
                insights_config=SqlDatabaseInstanceSettingsInsightsConfig(
                    query_insights_enabled=True,
                    record_application_tags=False,
                    record_client_address=False,
                ),
                maintenance_window=SqlDatabaseInstanceSettingsMaintenanceWindow(day=7, hour=3),
                database_flags=[
                    SqlDatabaseInstanceSettingsDatabaseFlags(name=name, value=value)
                    for name, value in self._flags(props).items()
                ],
            ),
            depends_on=[props.private_services_access],
            lifecycle=TerraformResourceLifecycle(prevent_destroy=props.protect_from_destroy),
        )

    @staticmethod
    def _backups(props: SqlDatabaseProps) -> SqlDatabaseInstanceSettingsBackupConfiguration:
        """Daily backups at 02:00 with point-in-time recovery (at most 7 days of transaction logs)."""
        return SqlDatabaseInstanceSettingsBackupConfiguration(
            enabled=True,
            point_in_time_recovery_enabled=True,
            start_time="02:00",
            transaction_log_retention_days=min(7, props.backup_retention_days),
            backup_retention_settings=SqlDatabaseInstanceSettingsBackupConfigurationBackupRetentionSettings(
                retained_backups=props.backup_retention_days, retention_unit="COUNT"
            ),
        )

    def _iam_user(self, props: SqlDatabaseProps) -> SqlUser:
        user = SqlUser(
            self,
            "iam-user",
            project=props.project,
            instance=self._instance.name,
            name=iam_user_name(props.iam_service_account_email),
            type="CLOUD_IAM_SERVICE_ACCOUNT",
            deletion_policy="ABANDON",
        )
        set_newer_provider_attribute(user, "database_roles", list(IAM_USER_DATABASE_ROLES))
        return user

    def _password_user(self, props: SqlDatabaseProps) -> SqlUser:
        self._password = Password(
            self,
            "password",
            length=32,
            special=True,
            override_special="-_.~!*",
            keepers={"revision": str(props.password_revision)},
        )
        return SqlUser(
            self,
            "user",
            project=props.project,
            instance=self._instance.name,
            name=props.user_name,
            password_wo=self._password.result,
            password_wo_version=props.password_revision,
            deletion_policy="ABANDON",
        )

    @staticmethod
    def _flags(props: SqlDatabaseProps) -> dict[str, str]:
        if props.iam_service_account_email:
            return {**CIS_LOGGING_FLAGS, IAM_AUTHENTICATION_FLAG: "on"}
        return CIS_LOGGING_FLAGS

    @property
    def connection_name(self) -> str:
        """PROJECT:REGION:INSTANCE, the name of the socket Cloud Run mounts under /cloudsql."""
        return self._instance.connection_name

    @property
    def instance_name(self) -> str:
        return self._instance.name

    @property
    def database_name(self) -> str:
        return self._database.name

    @property
    def user_name(self) -> str:
        return self._user.name

    @property
    def password(self) -> str:
        """Sensitive: only ever written into Secret Manager. There is none with IAM login."""
        if self._password is None:
            raise ValueError("SqlDatabase.password: this database uses IAM login and has no password")
        return self._password.result


def iam_user_name(email: str) -> str:
    """Cloud SQL names a service account's IAM user by its e-mail without the domain's suffix."""
    if Token.is_unresolved(email):
        return Fn.trimsuffix(email, SERVICE_ACCOUNT_SUFFIX)
    return email.removesuffix(SERVICE_ACCOUNT_SUFFIX)
