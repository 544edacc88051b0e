"""The MLflow server's own service account and the few project roles it needs."""

from __future__ import annotations

from dataclasses import dataclass

from constructs.cdk.google.project_iam_member import ProjectIamMember
from constructs.cdk.google.service_account import ServiceAccount
from constructs import Construct

# Only what cannot be granted on a single resource: connecting to Cloud SQL and writing telemetry.
# Secret and bucket access are granted on those resources by their constructs.
PROJECT_ROLES = ("roles/cloudsql.client", "roles/logging.logWriter", "roles/monitoring.metricWriter")
# Logging in to Cloud SQL as the account's IAM database user (cloudsql.instances.login); Cloud SQL
# has no instance-level IAM, so it is a project role too.
DATABASE_LOGIN_ROLE = "roles/cloudsql.instanceUser"


@dataclass(frozen=True)
class ServerIdentityProps:
    project: str
    account_id: str
    display_name: str = "MLflow tracking server"
    # default: False, the account connects to Cloud SQL but logs in with a password. True: it logs in
    # as its IAM database user (DATABASE_LOGIN_ROLE).
    database_login: bool = False

    def __post_init__(self) -> None:
        if not self.account_id:
            raise ValueError("ServerIdentityProps.account_id: is empty; name the service account")


class ServerIdentity(Construct):
    """A dedicated service account: no keys, no admin, editor or owner role."""

    def __init__(self, scope: Construct, id: str, props: ServerIdentityProps) -> None:
        super().__init__(scope, id)
        self._account = ServiceAccount(
            self,
            "account",
            project=props.project,
            account_id=props.account_id,
            display_name=props.display_name,
            create_ignore_already_exists=False,
        )
        self._roles = [
            ProjectIamMember(self, role.split("/")[-1], project=props.project, role=role, member=self.member)
            for role in PROJECT_ROLES + ((DATABASE_LOGIN_ROLE,) if props.database_login else ())
        ]

    @property
    def email(self) -> str:
        return self._account.email

    @property
    def project_roles(self) -> list[ProjectIamMember]:
        return list(self._roles)

    @property
    def member(self) -> str:
        """`serviceAccount:EMAIL`, ready for IAM bindings."""
        return self._account.member
