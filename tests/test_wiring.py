"""Wiring: the dependency graph does not depend on the order a stack's lines run in."""

from __future__ import annotations

from constructs.cdk.google.project_service import ProjectService
from constructs.cdk.google.service_account import ServiceAccount
from constructs import Construct

from stacks.wiring import wait_for
from tests.synth import synth_construct


def depends_on(tmp_path, name, wait_first: bool) -> dict[str, list[str]]:
    def build(stack):
        apis = Construct(stack, "apis")
        ProjectService(apis, "iam", service="iam.googleapis.com")
        users = Construct(stack, "users")
        ServiceAccount(users, "first", account_id="first")
        if wait_first:
            wait_for(users, [apis])
        # Added after the call in one build, before it in the other.
        ServiceAccount(users, "second", account_id="second")
        ProjectService(apis, "run", service="run.googleapis.com")
        if not wait_first:
            wait_for(users, [apis])

    stack = synth_construct(tmp_path / name, build)
    return {k: v.get("depends_on") for k, v in stack["resource"]["google_service_account"].items()}


def test_calling_wait_for_before_or_after_adding_resources_gives_the_same_graph(tmp_path):
    early, late = depends_on(tmp_path, "early", True), depends_on(tmp_path, "late", False)
    assert early == late
    apis = ["google_project_service.apis_iam_CFD2258A", "google_project_service.apis_run_8855F8C0"]
    assert early == {"users_first_8C84392A": apis, "users_second_1791AFDC": apis}
