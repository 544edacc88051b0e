"""Where an environment's stacks keep their state: the bootstrap bucket, one prefix per stack."""

from __future__ import annotations

from constructs.cdk import GcsBackend, TerraformStack
from stacks.config import Config


def use_state_bucket(stack: TerraformStack, cfg: Config, stack_name: str) -> None:
    GcsBackend(stack, bucket=cfg.state.bucket, prefix=f"{cfg.environment}/{stack_name}")
