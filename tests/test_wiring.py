"""Wiring: the dependency graph does not depend on the order a stack's lines run in."""

from __future__ import annotations

from constructs import Construct
from constructs.cdk.google.project_service import ProjectService
from constructs.cdk.google.service_account import ServiceAccount
from stacks.wiring import wait_for
from tests.synth import dependency_cycle, dependency_graph, synth_construct


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


def test_no_stack_has_a_dependency_cycle(app):
    """Terraform refuses a cyclic graph at plan; the service's IAP audience is the likeliest cause."""
    for name, stack in app.stacks.items():
        assert dependency_cycle(stack) == [], name


def test_the_service_waits_for_the_front_door_which_names_it_by_a_plain_string(mlflow):
    graph = dependency_graph(mlflow)
    [service] = [a for a in graph if a.startswith("google_cloud_run_v2_service.")]
    [backend] = [a for a in graph if a.startswith("google_compute_backend_service.")]
    [neg] = [a for a in graph if a.startswith("google_compute_region_network_endpoint_group.")]
    assert backend in graph[service]
    assert neg in graph[backend] and service not in graph[neg]


def test_the_cycle_finder_finds_a_cycle_through_a_reference_and_a_depends_on():
    """The check above can fail: the wiring before the IAP audience, had the service carried it."""
    meta = {"//": {"metadata": {}}}
    stack = {
        "resource": {
            "google_cloud_run_v2_service": {
                "svc": {**meta, "env": "${google_compute_backend_service.be.generated_id}"}
            },
            "google_compute_backend_service": {
                "be": {**meta, "depends_on": ["google_compute_region_network_endpoint_group.neg"]}
            },
            "google_compute_region_network_endpoint_group": {
                "neg": {**meta, "service": "${google_cloud_run_v2_service.svc.name}"}
            },
        }
    }
    assert dependency_cycle(stack) == [
        "google_cloud_run_v2_service.svc",
        "google_compute_backend_service.be",
        "google_compute_region_network_endpoint_group.neg",
        "google_cloud_run_v2_service.svc",
    ]
