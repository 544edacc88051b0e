"""Domain-restricted sharing: no IAM binding names a principal from outside the user's own directory.

Organizations on Google's secure-by-default policies enforce `iam.allowedPolicyMemberDomains`, and an
apply that binds anyone else fails halfway. By default a binding may name only: the members the
config lists (the user's own), the project's own service accounts, the project's Google service
agents, and principals of the project's own workload identity pool. With `allowed_domains` set, the
config's members must be in those domains too (tests/test_config.py).
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from stacks.config import Config
from tests.synth import all_resources

MEMBER_KEYS = ("member", "members", "exempted_members")
OWN_ACCOUNT_REFERENCE = re.compile(r"^(serviceAccount:)?\$\{google_service_account\.[\w-]+\.(member|email)\}$")
OWN_POOL_PRINCIPAL = re.compile(
    r"^principal(Set)?://iam\.googleapis\.com/\$\{google_iam_workload_identity_pool\.[\w-]+\.name\}/"
)


def members_of(body: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for key, value in body.items():
        if key == "//":
            continue
        if key in MEMBER_KEYS:
            found.extend([value] if isinstance(value, str) else value)
        elif isinstance(value, dict):
            found.extend(members_of(value))
        elif isinstance(value, list):
            found.extend(m for item in value if isinstance(item, dict) for m in members_of(item))
    return found


def is_own(member: str, cfg: Config) -> bool:
    own_agents = re.compile(rf"^serviceAccount:service-{cfg.project_number}@gcp-sa-[a-z-]+\.iam\.gserviceaccount\.com$")
    own_accounts = re.compile(rf"^serviceAccount:[a-z0-9-]+@{re.escape(cfg.project_id)}\.iam\.gserviceaccount\.com$")
    configured = {*cfg.iap_members, *cfg.client_impersonators, *cfg.image_builders}
    return bool(
        member in configured
        or OWN_ACCOUNT_REFERENCE.match(member)
        or OWN_POOL_PRINCIPAL.match(member)
        or own_agents.match(member)
        or own_accounts.match(member)
    )


def foreign_members(stack: dict[str, Any], cfg: Config) -> list[str]:
    return [
        f"{path}: {member}"
        for _, path, body in all_resources(stack)
        for member in members_of(body)
        if not is_own(member, cfg)
    ]


@pytest.fixture(scope="module")
def environments(app, example_config, prod_config):
    return {
        "example": (example_config, ["bootstrap", "mlflow-example-project", "mlflow-example"]),
        "prod": (prod_config, ["mlflow-prod-project", "mlflow-prod"]),
    }


@pytest.mark.parametrize("env", ["example", "prod"])
def test_no_binding_names_a_principal_from_outside_the_users_directory(app, environments, env):
    cfg, names = environments[env]
    assert {name: foreign_members(app.stacks[name], cfg) for name in names} == {name: [] for name in names}


def test_the_check_sees_bindings_at_all(app, prod_config):
    members = [m for _, _, body in all_resources(app.stacks["mlflow-prod"]) for m in members_of(body)]
    assert "group:ml-platform@example.com" in members
    assert f"serviceAccount:service-{prod_config.project_number}@gcp-sa-iap.iam.gserviceaccount.com" in members


def test_the_usage_log_writer_group_would_be_caught(mlflow, example_config):
    """The grant the usage-log buckets needed: Google's group is in no customer's directory."""
    bad = copy.deepcopy(mlflow)
    bad["resource"]["google_storage_bucket_iam_member"]["usage-log-writer"] = {
        "//": {"metadata": {"path": "mlflow-example/artifact-access-logs/usage-log-writer"}},
        "member": "group:cloud-storage-analytics@google.com",
        "role": "roles/storage.objectCreator",
    }
    assert foreign_members(bad, example_config) == [
        "mlflow-example/artifact-access-logs/usage-log-writer: group:cloud-storage-analytics@google.com"
    ]


def test_another_projects_service_account_or_agent_would_be_caught(mlflow, example_config):
    bad = copy.deepcopy(mlflow)
    invoker = next(iter(bad["resource"]["google_cloud_run_v2_service_iam_member"].values()))
    invoker["member"] = "serviceAccount:service-999999999999@gcp-sa-iap.iam.gserviceaccount.com"
    audit = {
        "//": {"metadata": {"path": "mlflow-example/audit"}},
        "audit_log_config": [{"log_type": "DATA_READ", "exempted_members": ["user:someone@other.org"]}],
    }
    bad["resource"]["google_project_iam_audit_config"] = {"audit": audit}
    assert foreign_members(bad, example_config) == [
        "mlflow-example/tracking-service/iap-service-agent: serviceAccount:service-999999999999@gcp-sa-iap.iam.gserviceaccount.com",
        "mlflow-example/audit: user:someone@other.org",
    ]
