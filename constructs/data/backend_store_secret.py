"""The MLflow backend store URI: with a password, in Secret Manager, readable only by the members
granted here; with IAM login, a plain value (`iam_backend_store_uri`)."""

from __future__ import annotations

from dataclasses import dataclass

from constructs import Construct
from constructs.cdk import Fn, TerraformResourceLifecycle, set_newer_provider_attribute
from constructs.cdk.google.secret_manager_secret import (
    SecretManagerSecret,
    SecretManagerSecretReplication,
    SecretManagerSecretReplicationUserManaged,
    SecretManagerSecretReplicationUserManagedReplicas,
)
from constructs.cdk.google.secret_manager_secret_iam_member import SecretManagerSecretIamMember
from constructs.cdk.google.secret_manager_secret_version import SecretManagerSecretVersion
from constructs.data.cloudsql_socket import CLOUDSQL_MOUNT


def iam_backend_store_uri(user: str, database: str, connection_name: str) -> str:
    """`postgresql+psycopg2://USER@/DB?host=/cloudsql/CONN` for IAM login: no password, nothing secret,
    so no secret either. The IAM user's name has an @, URL-encoded by Terraform."""
    return f"postgresql+psycopg2://{Fn.urlencode(user)}@/{database}?host={CLOUDSQL_MOUNT}/{connection_name}"


@dataclass(frozen=True)
class BackendStoreSecretProps:
    project: str
    region: str
    secret_id: str
    user: str
    password: str
    database: str
    connection_name: str
    # Bump together with the password's revision to write a new secret version.
    revision: int = 1
    # default: `terraform destroy` refuses to delete the secret.
    protect_from_destroy: bool = True

    def __post_init__(self) -> None:
        if not self.secret_id:
            raise ValueError("BackendStoreSecretProps.secret_id: is empty; name the secret")
        if self.revision < 1:
            raise ValueError(f"BackendStoreSecretProps.revision: {self.revision} must be 1 or more; bump it to rotate")


class BackendStoreSecret(Construct):
    """`postgresql+psycopg2://USER:PW@/DB?host=/cloudsql/CONN`, the password URL-encoded by Terraform.

    Replicated only in the deployment's region so the credential never leaves it.
    """

    def __init__(self, scope: Construct, id: str, props: BackendStoreSecretProps) -> None:
        super().__init__(scope, id)
        self._secret = SecretManagerSecret(
            self,
            "secret",
            project=props.project,
            secret_id=props.secret_id,
            replication=SecretManagerSecretReplication(
                user_managed=SecretManagerSecretReplicationUserManaged(
                    replicas=[SecretManagerSecretReplicationUserManagedReplicas(location=props.region)]
                )
            ),
            lifecycle=TerraformResourceLifecycle(prevent_destroy=props.protect_from_destroy),
        )
        uri = (
            f"postgresql+psycopg2://{props.user}:{Fn.urlencode(props.password)}@/{props.database}"
            f"?host={CLOUDSQL_MOUNT}/{props.connection_name}"
        )
        # Write-only (Terraform >= 1.11): the URI never lands in plan output or state.
        # A new revision replaces the version (secret_data_wo_version forces it). Create-before-destroy
        # writes the new version and rolls the service and the job onto it before the old one goes,
        # and DISABLE (not the provider's default DELETE) only disables the old version: instances of
        # the old revision still starting from zero meanwhile read it, and it can be re-enabled.
        self._version = SecretManagerSecretVersion(
            self,
            "version",
            secret=self._secret.id,
            secret_data_wo=uri,
            deletion_policy="DISABLE",
            lifecycle=TerraformResourceLifecycle(create_before_destroy=True),
        )
        # A string since provider 8.0 (a number in the 6.50 binding).
        set_newer_provider_attribute(self._version, "secret_data_wo_version", str(props.revision))

    @property
    def secret_id(self) -> str:
        return self._secret.secret_id

    @property
    def version(self) -> str:
        """The version number, so a rotated password rolls a new revision."""
        return self._version.version

    def grant_access(self, key: str, member: str) -> SecretManagerSecretIamMember:
        return SecretManagerSecretIamMember(
            self,
            key,
            project=self._secret.project,
            secret_id=self._secret.secret_id,
            role="roles/secretmanager.secretAccessor",
            member=member,
        )
