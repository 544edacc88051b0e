"""The parts every secret of a deployment shares: replicated only in its region, its value written
write-only (Terraform >= 1.11: never in plan output or state), readable only by the members granted.
BackendStoreSecret and GatewayKeySecret build their secrets from these, under their own ids."""

from __future__ import annotations

from constructs import Construct
from constructs.cdk import TerraformResourceLifecycle, set_newer_provider_attribute
from constructs.cdk.google.secret_manager_secret import (
    SecretManagerSecret,
    SecretManagerSecretReplication,
    SecretManagerSecretReplicationUserManaged,
    SecretManagerSecretReplicationUserManagedReplicas,
)
from constructs.cdk.google.secret_manager_secret_iam_member import SecretManagerSecretIamMember
from constructs.cdk.google.secret_manager_secret_version import SecretManagerSecretVersion


def regional_secret(
    scope: Construct, id: str, *, project: str, secret_id: str, region: str, protect_from_destroy: bool
) -> SecretManagerSecret:
    """A secret whose versions never leave the region; `prevent_destroy` while the data is protected."""
    return SecretManagerSecret(
        scope,
        id,
        project=project,
        secret_id=secret_id,
        replication=SecretManagerSecretReplication(
            user_managed=SecretManagerSecretReplicationUserManaged(
                replicas=[SecretManagerSecretReplicationUserManagedReplicas(location=region)]
            )
        ),
        lifecycle=TerraformResourceLifecycle(prevent_destroy=protect_from_destroy),
    )


def write_only_version(
    scope: Construct, id: str, *, secret: SecretManagerSecret, data: str, revision: int
) -> SecretManagerSecretVersion:
    """A version sent only when it is created or `revision` changes (secret_data_wo_version forces a
    new one). Create-before-destroy writes the new version and rolls its readers onto it before the
    old one goes, and DISABLE (not the provider's default DELETE) only disables the old version:
    instances of the old revision still starting meanwhile read it, and it can be re-enabled."""
    version = SecretManagerSecretVersion(
        scope,
        id,
        secret=secret.id,
        secret_data_wo=data,
        deletion_policy="DISABLE",
        lifecycle=TerraformResourceLifecycle(create_before_destroy=True),
    )
    # A string since provider 8.0 (a number in the 6.50 binding).
    set_newer_provider_attribute(version, "secret_data_wo_version", str(revision))
    return version


def grant_secret_access(
    scope: Construct, key: str, secret: SecretManagerSecret, member: str
) -> SecretManagerSecretIamMember:
    return SecretManagerSecretIamMember(
        scope,
        key,
        project=secret.project,
        secret_id=secret.secret_id,
        role="roles/secretmanager.secretAccessor",
        member=member,
    )
