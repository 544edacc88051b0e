"""The service account people's scripts act as to reach MLflow through IAP, without any key.

The client plugin (client/) signs an IAP JWT as this account through the IAM Credentials API; the
people and groups listed may do so (Token Creator on this account only), and IAP admits the account.
"""

from __future__ import annotations

from dataclasses import dataclass

from constructs.cdk.google.service_account import ServiceAccount
from constructs.cdk.google.service_account_iam_member import ServiceAccountIamMember
from constructs import Construct

from constructs.iam_members import keyed_members


@dataclass(frozen=True)
class ClientIdentityProps:
    project: str
    account_id: str
    # Who may sign as this account (user:/group:/serviceAccount:), granted on the account itself.
    impersonators: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.account_id:
            raise ValueError("ClientIdentityProps.account_id: is empty; name the service account")
        if not self.impersonators:
            raise ValueError("ClientIdentityProps.impersonators: is empty; an account nobody may sign as is useless")
        keyed_members("ClientIdentityProps.impersonators", self.impersonators)


class ClientIdentity(Construct):
    def __init__(self, scope: Construct, id: str, props: ClientIdentityProps) -> None:
        super().__init__(scope, id)
        self._account = ServiceAccount(
            self,
            "account",
            project=props.project,
            account_id=props.account_id,
            display_name="MLflow clients (scripts of people, through IAP)",
        )
        # Keyed by member: removing one person leaves everyone else's grant where it is.
        for key, member in keyed_members("impersonators", props.impersonators).items():
            ServiceAccountIamMember(
                self,
                f"token-creator-{key}",
                service_account_id=self._account.name,
                role="roles/iam.serviceAccountTokenCreator",
                member=member,
            )

    @property
    def email(self) -> str:
        return self._account.email

    @property
    def member(self) -> str:
        return self._account.member
