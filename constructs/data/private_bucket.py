"""A private GCS bucket: the one shape every bucket of this project has (state, artifacts, builds).

No usage-log sink: it needs a grant to a Google group outside the customer's directory, which
domain-restricted sharing refuses; object access is in Cloud Audit Logs instead (storage_audit_logs).
"""

from __future__ import annotations

from dataclasses import dataclass

from constructs import Construct
from constructs.cdk import TerraformResourceLifecycle
from constructs.cdk.google.storage_bucket import (
    StorageBucket,
    StorageBucketLifecycleRule,
    StorageBucketLifecycleRuleAction,
    StorageBucketLifecycleRuleCondition,
    StorageBucketVersioning,
)
from constructs.cdk.google.storage_bucket_iam_member import StorageBucketIamMember


@dataclass(frozen=True)
class PrivateBucketProps:
    project: str
    name: str
    location: str
    # default: versioned; noncurrent versions are deleted after this many days (0: kept forever).
    noncurrent_version_days: int = 30
    # default: `terraform destroy` refuses to delete it; data outlives the stack.
    protect_from_destroy: bool = True
    # default: a bucket with objects is not deleted. True only for a bucket whose objects are
    # disposable (build sources and logs), so a tear-down needs no emptying by hand.
    force_destroy: bool = False

    def __post_init__(self) -> None:
        if not self.name or not self.location:
            raise ValueError(
                f"PrivateBucketProps: name {self.name!r} and location {self.location!r} must both be given"
            )
        if self.noncurrent_version_days < 0:
            raise ValueError(
                f"PrivateBucketProps.noncurrent_version_days: {self.noncurrent_version_days} must be 0 (keep forever) or more"
            )
        if self.force_destroy and self.protect_from_destroy:
            raise ValueError(
                "PrivateBucketProps.force_destroy: a bucket protected from destroy cannot be force-destroyed; "
                "set protect_from_destroy=False too"
            )


class PrivateBucket(Construct):
    """Uniform access, public access prevention enforced, versioned; force-destroyed only when asked and unprotected."""

    def __init__(self, scope: Construct, id: str, props: PrivateBucketProps) -> None:
        super().__init__(scope, id)
        rules = []
        if props.noncurrent_version_days:
            rules.append(
                StorageBucketLifecycleRule(
                    action=StorageBucketLifecycleRuleAction(type="Delete"),
                    condition=StorageBucketLifecycleRuleCondition(
                        days_since_noncurrent_time=props.noncurrent_version_days, with_state="ARCHIVED"
                    ),
                )
            )
        self._bucket = StorageBucket(
            self,
            "bucket",
            project=props.project,
            name=props.name,
            location=props.location,
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",
            versioning=StorageBucketVersioning(enabled=True),
            lifecycle_rule=rules or None,
            force_destroy=props.force_destroy,
            lifecycle=TerraformResourceLifecycle(prevent_destroy=props.protect_from_destroy),
        )

    @property
    def bucket_name(self) -> str:
        return self._bucket.name

    # Grants by intent, on this bucket only (never project-wide), always on objects: no role here can
    # change the bucket's IAM, settings or retention. `key` is the grant's stable address.
    def grant_object_user(self, key: str, member: str) -> StorageBucketIamMember:
        """Read, write and delete objects (the server's artifacts)."""
        return self._grant(key, member, "roles/storage.objectUser")

    def grant_object_creator(self, key: str, member: str) -> StorageBucketIamMember:
        """Write new objects only, read nothing (a log sink)."""
        return self._grant(key, member, "roles/storage.objectCreator")

    def grant_object_viewer(self, key: str, member: str) -> StorageBucketIamMember:
        """Read objects only."""
        return self._grant(key, member, "roles/storage.objectViewer")

    def _grant(self, key: str, member: str, role: str) -> StorageBucketIamMember:
        return StorageBucketIamMember(self, key, bucket=self._bucket.name, role=role, member=member)
