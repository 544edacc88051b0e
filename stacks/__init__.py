"""Stacks wire constructs together; the CDK runtime and its bindings come from `constructs.cdk`."""

from stacks.node import use_supported_node

use_supported_node()
