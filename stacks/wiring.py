"""Ordering across constructs: a construct's resources wait for resources of another."""

from __future__ import annotations

from typing import Iterable

from constructs.cdk import TerraformResource
from constructs import Construct


def wait_for(construct: Construct, dependables: Iterable[TerraformResource]) -> None:
    """Add `depends_on` to every resource under `construct` (cdktf ignores construct-level deps)."""
    # `fqn` is an unresolved token that renders as "${type.id}"; depends_on needs the bare address.
    fqns = [f"{d.terraform_resource_type}.{d.friendly_unique_id}" for d in dependables]
    for child in construct.node.find_all():
        if isinstance(child, TerraformResource):
            child.depends_on = sorted(set(child.depends_on or []) | set(fqns))
