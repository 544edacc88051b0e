"""Ordering across constructs: a construct's resources wait for resources of another.

Recorded when called, applied once at synth (a cdktf Aspect visits the finished tree), so a resource
added to the construct after `wait_for`, or a dependable added to a construct waited for, still takes
part: reordering lines of a stack cannot change its dependency graph.
"""

from __future__ import annotations

from collections.abc import Iterable

import jsii

from constructs import Construct, IConstruct
from constructs.cdk import Aspects, IAspect, TerraformResource

Dependable = TerraformResource | Construct


def wait_for(construct: Construct, dependables: Iterable[Dependable]) -> None:
    """At synth, add `depends_on` to every resource under `construct` (cdktf ignores construct-level
    deps): on each dependable resource, or on every resource under a dependable construct."""
    Aspects.of(construct).add(_WaitFor(list(dependables)))


def _resources(construct: IConstruct) -> list[TerraformResource]:
    return [c for c in construct.node.find_all() if isinstance(c, TerraformResource)]


@jsii.implements(IAspect)
class _WaitFor:
    def __init__(self, dependables: list[Dependable]) -> None:
        self._dependables = dependables

    def visit(self, node: IConstruct) -> None:
        if not isinstance(node, TerraformResource):
            return
        # `fqn` is an unresolved token that renders as "${type.id}"; depends_on needs the bare address.
        fqns = {f"{r.terraform_resource_type}.{r.friendly_unique_id}" for d in self._dependables for r in _resources(d)}
        node.depends_on = sorted(set(node.depends_on or []) | fqns)
