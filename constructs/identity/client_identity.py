"""One service account per person (or group) whose scripts reach MLflow through IAP, without any key.

The client plugin (client/) signs an IAP JWT as the caller's own account through the IAM Credentials
API: each member of `impersonators` may sign as its own account only (Token Creator on that account),
and IAP admits the accounts. One shared account would make everything the scripts write look like one
author to the server, which records the verified identity; one each keeps the people apart. A group
gets one account for all its members: list people to tell them apart.

Accounts are keyed by member (Terraform address and account id), so adding or removing a person
moves no other account. They live in the project stack, applied by a person: the CI deployer may not
create service accounts or change who may sign as them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from constructs import Construct
from constructs.cdk.google.service_account import ServiceAccount
from constructs.cdk.google.service_account_iam_member import ServiceAccountIamMember
from constructs.identity.iam_members import keyed_members, service_account_email

# A service account id is at most 30 characters: prefix (<= 15) + "-c-" + 10 hex digits of the member.
MEMBER_HASH_LENGTH = 10


def client_account_id(name_prefix: str, member: str) -> str:
    """The account id of `member`'s client account: stable whatever else is listed (emails ignore case)."""
    return f"{name_prefix}-c-{hashlib.sha256(member.lower().encode()).hexdigest()[:MEMBER_HASH_LENGTH]}"


def client_accounts(project: str, name_prefix: str, members: tuple[str, ...]) -> dict[str, str]:
    """{member: email of its client account}, what the MLflow stack lets through IAP."""
    return {m: service_account_email(project, client_account_id(name_prefix, m)) for m in members}


@dataclass(frozen=True)
class ClientIdentityProps:
    project: str
    name_prefix: str
    # Who gets an account of their own (user:/group:/serviceAccount:), and may sign as it alone.
    impersonators: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.name_prefix or len(self.name_prefix) > 15:
            raise ValueError(
                f"ClientIdentityProps.name_prefix: {self.name_prefix!r} must be 1-15 characters (account ids are <= 30)"
            )
        if not self.impersonators:
            raise ValueError("ClientIdentityProps.impersonators: is empty; list whose scripts get a client account")
        keyed_members("ClientIdentityProps.impersonators", self.impersonators)


class ClientIdentity(Construct):
    def __init__(self, scope: Construct, id: str, props: ClientIdentityProps) -> None:
        super().__init__(scope, id)
        self._emails: dict[str, str] = {}
        for key, member in keyed_members("impersonators", props.impersonators).items():
            account = ServiceAccount(
                self,
                f"account-{key}",
                project=props.project,
                account_id=client_account_id(props.name_prefix, member),
                display_name="MLflow client (scripts through IAP)",
                description=f"Signs IAP JWTs for the scripts of {member} only"[:256],
            )
            ServiceAccountIamMember(
                self,
                f"token-creator-{key}",
                service_account_id=account.name,
                role="roles/iam.serviceAccountTokenCreator",
                member=member,
            )
            self._emails[member] = account.email

    @property
    def emails(self) -> dict[str, str]:
        """{member: its account's email (a token until applied)}."""
        return dict(self._emails)
