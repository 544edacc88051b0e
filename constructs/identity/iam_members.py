"""Construct ids for IAM grants, derived from the member they grant to.

A grant's construct id is its Terraform address. Keyed by position, removing the first member would
destroy and recreate every later grant (a moment of lost access); keyed by the member, each grant
keeps its address whatever else is added or removed (Fabric's `for_each` over members).
"""

from __future__ import annotations

import hashlib
import re

from constructs.cdk import Token


def member_key(member: str) -> str:
    """`group:ml-team@example.com` -> `group-ml-team-example-com`: readable and Terraform-id-safe."""
    return re.sub(r"[^a-z0-9]+", "-", member.lower()).strip("-")


def keyed_members(field: str, members: tuple[str, ...]) -> dict[str, str]:
    """{key: member}, refusing duplicates and members only known at deploy time (no stable key).

    IAM compares emails case-insensitively, so `user:A@x.com` and `user:a@x.com` are one member.
    Two different members whose keys coincide (`a.b@` and `a-b@`) both get a short hash of the
    member appended, so neither depends on the order of the list.
    """
    seen: dict[str, str] = {}
    for member in members:
        if Token.is_unresolved(member):
            raise ValueError(f"{field}: {member!r} is only known at deploy time and has no stable key; pass it by key")
        if not member:
            raise ValueError(f"{field}: an empty member; write user:EMAIL, group:EMAIL or serviceAccount:EMAIL")
        if member.lower() in seen:
            raise ValueError(
                f"{field}: {member!r} is listed twice (as {seen[member.lower()]!r}); list each member once"
            )
        seen[member.lower()] = member
    keys = [member_key(m) for m in members]
    return {
        key if keys.count(key) == 1 else f"{key}-{hashlib.sha256(member.lower().encode()).hexdigest()[:6]}": member
        for key, member in zip(keys, members, strict=True)
    }


def service_account_email(project: str, account_id: str) -> str:
    """The email of a user-managed service account: known at synth, so a stack can name an account
    another stack (applied by someone else) creates."""
    return f"{account_id}@{project}.iam.gserviceaccount.com"
