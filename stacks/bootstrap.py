"""The bootstrap stack: the bucket every other stack keeps its Terraform state in (local state itself)."""

from __future__ import annotations

from constructs import Construct
from constructs.cdk import GcsBackend, LocalBackend, TerraformOutput, TerraformStack
from constructs.data.private_bucket import PrivateBucket, PrivateBucketProps
from stacks.config import Config
from stacks.providers import use_google

BOOTSTRAP_STACK = "bootstrap"
BOOTSTRAP_STATE_FILE = "terraform.bootstrap.tfstate"
# Environments keep theirs under `<environment>/`; environment names are 1-10 letters/digits, so no clash.
BOOTSTRAP_STATE_PREFIX = "bootstrap"


class BootstrapStack(TerraformStack):
    """Applied once, from a workstation, before any environment; its own state stays local."""

    def __init__(self, scope: Construct, cfg: Config) -> None:
        super().__init__(scope, BOOTSTRAP_STACK)
        if cfg.state.bootstrap_state == "bucket":
            GcsBackend(self, bucket=cfg.state.bucket, prefix=BOOTSTRAP_STATE_PREFIX)
        else:
            # Terraform runs in cdktf.out/stacks/bootstrap; keep the state beside cdktf.json, not in build output.
            LocalBackend(self, path=f"../../../{BOOTSTRAP_STATE_FILE}")
        use_google(self, cfg.state.project, cfg.region)
        state = PrivateBucket(
            self,
            "state",
            PrivateBucketProps(
                project=cfg.state.project,
                name=cfg.state.bucket,
                location=cfg.state.location,
                # Old state versions are the undo history of every apply: keep them a year.
                noncurrent_version_days=365,
            ),
        )
        # Reads and writes of state are in Cloud Audit Logs once the project stack of this project is
        # applied (storage_audit_logs): no usage-log bucket, whose writer is outside every directory.
        TerraformOutput(self, "state_bucket", value=state.bucket_name, description="Terraform state bucket")
