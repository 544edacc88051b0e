"""The MLflow backend store URI: with a password, in Secret Manager, readable only by the members
granted here; with IAM login, a plain value (`iam_backend_store_uri`)."""

from __future__ import annotations

from dataclasses import dataclass

from constructs import Construct
from constructs.cdk import Fn
from constructs.cdk.google.secret_manager_secret_iam_member import SecretManagerSecretIamMember
from constructs.data.cloudsql_socket import CLOUDSQL_MOUNT
from constructs.data.write_only_secret import grant_secret_access, regional_secret, write_only_version


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
        self._secret = regional_secret(
            self,
            "secret",
            project=props.project,
            secret_id=props.secret_id,
            region=props.region,
            protect_from_destroy=props.protect_from_destroy,
        )
        uri = (
            f"postgresql+psycopg2://{props.user}:{Fn.urlencode(props.password)}@/{props.database}"
            f"?host={CLOUDSQL_MOUNT}/{props.connection_name}"
        )
        self._version = write_only_version(self, "version", secret=self._secret, data=uri, revision=props.revision)

    @property
    def secret_id(self) -> str:
        return self._secret.secret_id

    @property
    def version(self) -> str:
        """The version number, so a rotated password rolls a new revision."""
        return self._version.version

    def grant_access(self, key: str, member: str) -> SecretManagerSecretIamMember:
        return grant_secret_access(self, key, self._secret, member)
