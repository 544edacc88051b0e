"""The MLflow server's own service account, in the project stack, and who may deploy as it.

The server and its migration job run as this account. It is created by a person's apply of the
project stack, so the CI deployer (which applies only the MLflow stack) needs no right to create or
administer service accounts: it is allowed to act as this one account, granted here, on the account.
"""

from __future__ import annotations

from dataclasses import dataclass

from constructs import Construct
from constructs.cdk.google.service_account import ServiceAccount
from constructs.cdk.google.service_account_iam_member import ServiceAccountIamMember


@dataclass(frozen=True)
class ServerIdentityProps:
    project: str
    account_id: str
    display_name: str = "MLflow tracking server"

    def __post_init__(self) -> None:
        if not self.account_id:
            raise ValueError("ServerIdentityProps.account_id: is empty; name the service account")


class ServerIdentity(Construct):
    """A dedicated service account: no keys; its roles are granted by the MLflow stack (ServerRoles)."""

    def __init__(self, scope: Construct, id: str, props: ServerIdentityProps) -> None:
        super().__init__(scope, id)
        # An environment deployed before the account moved here has it already (in the MLflow stack's
        # state, which forgets it without deleting it: stacks/mlflow.py): adopt it instead of failing.
        # The id is this environment's own (<name_prefix>-server; config refuses two environments with
        # one prefix in a project), so nothing else's account is adopted.
        self._account = ServiceAccount(
            self,
            "account",
            project=props.project,
            account_id=props.account_id,
            display_name=props.display_name,
            create_ignore_already_exists=True,
        )

    def grant_act_as(self, id: str, member: str) -> ServiceAccountIamMember:
        """Deploy Cloud Run services and jobs that run as this account (iam.serviceAccounts.actAs), on it alone."""
        return ServiceAccountIamMember(
            self, id, service_account_id=self._account.name, role="roles/iam.serviceAccountUser", member=member
        )

    @property
    def email(self) -> str:
        return self._account.email

    @property
    def member(self) -> str:
        """`serviceAccount:EMAIL`, ready for IAM bindings."""
        return self._account.member
