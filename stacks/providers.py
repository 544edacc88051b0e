"""The Terraform and providers every stack requires, written the same whichever runtime synthesizes it.

The cdktf binding is frozen at google 6.50 and would write `6.50.0`; CDK Terrain's binds 8.7. The
stacks target the maintained provider on both runtimes (docs/toolchain.md), so the constraints
are set here and only here.
"""

from __future__ import annotations

from constructs.cdk import TerraformStack
from constructs.cdk.google.provider import GoogleProvider
from constructs.cdk.random.provider import RandomProvider

# Write-only arguments (the database password and URI) need Terraform 1.11.
TERRAFORM_VERSION = "1.11.0"
GOOGLE_PROVIDER_VERSION = "~> 8.7"
RANDOM_PROVIDER_VERSION = "~> 3.9"
# What CDK Terrain checks its synth-time feature use against (write-only arguments need >= 1.11).
TARGET_VERSIONS = {"terraform": f">={TERRAFORM_VERSION}"}


def _require(stack: TerraformStack, provider: str, version: str) -> None:
    # The 6.50 binding writes the legacy short source "google"; Terraform reads it as hashicorp/google.
    stack.add_override(f"terraform.required_providers.{provider}.source", f"hashicorp/{provider}")
    stack.add_override(f"terraform.required_providers.{provider}.version", version)


def use_google(stack: TerraformStack, project: str, region: str) -> None:
    """The google provider and the Terraform version; every stack has both."""
    stack.add_override("terraform.required_version", f">= {TERRAFORM_VERSION}")
    GoogleProvider(stack, "google", project=project, region=region)
    _require(stack, "google", GOOGLE_PROVIDER_VERSION)


def use_random(stack: TerraformStack) -> None:
    RandomProvider(stack, "random")
    _require(stack, "random", RANDOM_PROVIDER_VERSION)
