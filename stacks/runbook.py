"""The day-2 commands of one environment as outputs, with its real names, project and Terraform addresses.

`npx cdktf output mlflow-<env>` prints them, so the README's runbooks (Restore, Tear-down) say which
output to paste instead of asking the reader to dig hash-suffixed addresses out of `terraform state list`.
"""

from __future__ import annotations

import re

from constructs.cdk import TerraformOutput, TerraformResource, TerraformStack
from constructs.data.sql_database import SqlDatabase
from stacks.config import Config
from stacks.project import project_stack_name

RESTORED_SUFFIX = re.compile(r"-restored(\d*)$")


def deploy_command(cfg: Config, mlflow_stack: str) -> str:
    """cdktf applies a stack only together with the stacks it depends on: name both."""
    return f"npx cdktf deploy {project_stack_name(cfg)} {mlflow_stack}"


def destroy_command(cfg: Config, mlflow_stack: str) -> str:
    return f"npx cdktf destroy {mlflow_stack} {project_stack_name(cfg)}"


def restored_instance_name(current: str) -> str:
    """The clone's name: `-restored`, then `-restored2`, ...; a deleted instance's name is not reusable for a week."""
    match = RESTORED_SUFFIX.search(current)
    if not match:
        return f"{current}-restored"
    return f"{current[: match.start()]}-restored{int(match.group(1) or 1) + 1}"


def address(stack: TerraformStack, element: TerraformResource) -> str:
    return f"{element.terraform_resource_type}.{stack.get_logical_id(element)}"


def add_runbook_outputs(stack: TerraformStack, cfg: Config, database: SqlDatabase, artifact_bucket: str) -> None:
    """The restore runbook adopts `database`'s instance, database and user into state."""
    p = cfg.project_id
    current = cfg.database.instance_name or f"{cfg.name_prefix}-db"
    restored = restored_instance_name(current)
    instance, db, user = (_resource(database, i) for i in ("instance", "database", _user_id(database)))
    adopt = [
        f"terraform state rm {address(stack, instance)} {address(stack, db)} {address(stack, user)}",
        f"terraform import {address(stack, instance)} projects/{p}/instances/{restored}",
        f"terraform import {address(stack, db)} projects/{p}/instances/{restored}/databases/{database.database_name}",
        f"terraform import {address(stack, user)} {p}/{restored}/{database.user_name}",
    ]
    outputs = {
        "restore_clone_command": (
            f"gcloud sql instances clone {current} {restored} --project={p} --point-in-time=TIME",
            "Restore step 1: clones the database as it was at TIME (UTC, e.g. 2026-12-01T09:30:00Z, within the retention window)",
        ),
        "restore_adopt_command": (
            f"(cd cdktf.out/stacks/{stack.node.id} && terraform init && " + " && ".join(adopt) + ")",
            f'Restore step 2, after `[database] instance_name = "{restored}"` and `npx cdktf synth`: Terraform adopts the clone',
        ),
        "empty_artifact_bucket_command": (
            f"gcloud storage rm --recursive --all-versions 'gs://{artifact_bucket}/**'",
            "Tear-down: deletes every artifact, old versions included (no way back)",
        ),
        "deploy_command": (
            deploy_command(cfg, stack.node.id),
            "Applies this environment (cdktf applies a stack only with those it depends on)",
        ),
        "destroy_command": (
            destroy_command(cfg, stack.node.id),
            "Tear-down's last step, once protect_data = false is applied",
        ),
    }
    for name, (value, description) in outputs.items():
        TerraformOutput(stack, name, value=value, description=description)


def _resource(database: SqlDatabase, child_id: str) -> TerraformResource:
    child = database.node.find_child(child_id)
    assert isinstance(child, TerraformResource), child_id
    return child


def _user_id(database: SqlDatabase) -> str:
    return "iam-user" if database.node.try_find_child("iam-user") is not None else "user"
