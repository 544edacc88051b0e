"""Whole-stack snapshots: a regression net under the specs, not the spec itself.

Update after an intended change with:  ./scripts/test tests/test_snapshots.py --snapshot-update
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
UPDATE = "./scripts/test tests/test_snapshots.py --snapshot-update"


def normalized(stack: dict) -> dict:
    """Drop what is not the design: cdktf's metadata (the provider constraints are ours: stacks/providers.py)."""
    stack = json.loads(json.dumps(stack))
    stack.pop("//", None)
    for items in stack.get("resource", {}).values():
        for body in items.values():
            body.pop("//", None)
    for block in ("data", "ephemeral"):
        for items in stack.get(block, {}).values():
            for body in items.values():
                body.pop("//", None)
    return stack


@pytest.mark.parametrize(
    "name",
    [
        "bootstrap",
        "mlflow-example-project",
        "mlflow-example",
        "mlflow-prod-project",
        "mlflow-prod",
        "mlflow-small-project",
        "mlflow-small",
        "mlflow-teams-project",
        "mlflow-teams",
    ],
)
def test_stack_matches_its_snapshot(app, name, request):
    current = json.dumps(normalized(app.stacks[name]), indent=2, sort_keys=True) + "\n"
    snapshot = SNAPSHOTS / f"{name}.json"
    if request.config.getoption("--snapshot-update"):
        snapshot.write_text(current)
        return
    assert snapshot.exists(), f"no snapshot for {name}; create it with: {UPDATE}"
    assert current == snapshot.read_text(), f"{name} changed; review the diff, then run: {UPDATE}"
