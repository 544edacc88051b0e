"""The bootstrap stack: the bucket every other stack keeps its Terraform state in (local state itself)."""

from __future__ import annotations

from constructs.cdk import LocalBackend, TerraformOutput, TerraformStack
from constructs import Construct

from constructs.private_bucket import PrivateBucket, PrivateBucketProps
from stacks.config import Config
from stacks.providers import use_google

BOOTSTRAP_STACK = "bootstrap"


class BootstrapStack(TerraformStack):
    """Applied once, from a workstation, before any environment; its own state stays local."""

    def __init__(self, scope: Construct, cfg: Config) -> None:
        super().__init__(scope, BOOTSTRAP_STACK)
        # Terraform runs in cdktf.out/stacks/bootstrap; keep the state beside cdktf.json, not in build output.
        LocalBackend(self, path="../../../terraform.bootstrap.tfstate")
        use_google(self, cfg.project_id, cfg.region)
        access_logs = PrivateBucket(
            self,
            "state-access-logs",
            PrivateBucketProps(
                project=cfg.project_id,
                name=f"{cfg.state.bucket}-logs",
                location=cfg.state.location,
                noncurrent_version_days=30,
            ),
        )
        state = PrivateBucket(
            self,
            "state",
            PrivateBucketProps(
                project=cfg.project_id,
                name=cfg.state.bucket,
                location=cfg.state.location,
                # Old state versions are the undo history of every apply: keep them a year.
                noncurrent_version_days=365,
                access_log_bucket=access_logs.bucket_name,
            ),
        )
        access_logs.grant(
            "usage-log-writer", "group:cloud-storage-analytics@google.com", "roles/storage.objectCreator"
        )
        TerraformOutput(self, "state_bucket", value=state.bucket_name, description="Terraform state bucket")
