"""Cloud Audit Logs for Cloud Storage: who read or wrote which object, in every bucket of the project.

Usage-log buckets would need a grant to `group:cloud-storage-analytics@google.com`, which
domain-restricted sharing (`iam.allowedPolicyMemberDomains`) refuses; Google's own access-log page
recommends Data Access audit logs instead. They land in the project's `_Default` log bucket.
"""

from __future__ import annotations

from dataclasses import dataclass

from constructs import Construct
from constructs.cdk.google.project_iam_audit_config import (
    ProjectIamAuditConfig,
    ProjectIamAuditConfigAuditLogConfig,
)

STORAGE_API = "storage.googleapis.com"


@dataclass(frozen=True)
class StorageAuditLogsProps:
    project: str
    # default: object reads and writes (Admin Activity is always logged).
    log_types: tuple[str, ...] = ("DATA_READ", "DATA_WRITE")


class StorageAuditLogs(Construct):
    """Authoritative for storage.googleapis.com's audit config in the project (other services untouched)."""

    def __init__(self, scope: Construct, id: str, props: StorageAuditLogsProps) -> None:
        super().__init__(scope, id)
        self._config = ProjectIamAuditConfig(
            self,
            "storage",
            project=props.project,
            service=STORAGE_API,
            audit_log_config=[ProjectIamAuditConfigAuditLogConfig(log_type=t) for t in props.log_types],
        )
