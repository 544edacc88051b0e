"""A private GCS bucket: the one shape every bucket of this project has (state, artifacts, access logs)."""

from __future__ import annotations

from dataclasses import dataclass

from constructs.cdk import TerraformResourceLifecycle
from constructs.cdk.google.storage_bucket import (
    StorageBucket,
    StorageBucketLifecycleRule,
    StorageBucketLifecycleRuleAction,
    StorageBucketLifecycleRuleCondition,
    StorageBucketLogging,
    StorageBucketVersioning,
)
from constructs.cdk.google.storage_bucket_iam_member import StorageBucketIamMember
from constructs import Construct


@dataclass(frozen=True)
class PrivateBucketProps:
    project: str
    name: str
    location: str
    # default: versioned; noncurrent versions are deleted after this many days (0: kept forever).
    noncurrent_version_days: int = 30
    # default: no access log (only for the access-log bucket itself, which cannot log into itself).
    access_log_bucket: str = ""
    # default: `terraform destroy` refuses to delete it; data outlives the stack.
    protect_from_destroy: bool = True


class PrivateBucket(Construct):
    """Uniform access, public access prevention enforced, versioned, never force-destroyed."""

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
            logging=StorageBucketLogging(log_bucket=props.access_log_bucket) if props.access_log_bucket else None,
            force_destroy=False,
            lifecycle=TerraformResourceLifecycle(prevent_destroy=props.protect_from_destroy),
        )

    @property
    def bucket_name(self) -> str:
        return self._bucket.name

    def grant(self, key: str, member: str, role: str) -> StorageBucketIamMember:
        """Bind `role` on this bucket only (never project-wide); `key` keeps the address stable."""
        return StorageBucketIamMember(self, key, bucket=self._bucket.name, role=role, member=member)
