"""APIs: every API the stacks' resources need is enabled, and none is disabled on destroy."""

from tests.synth import resources

# The API behind each resource type prefix the stacks use.
API_OF = {
    "google_artifact_registry": "artifactregistry",
    "google_billing_budget": "billingbudgets",
    "google_cloud_run": "run",
    "google_compute": "compute",
    "google_dns": "dns",
    "google_iam_workload_identity": "iam",
    "google_iap": "iap",
    "google_logging": "logging",
    "google_monitoring": "monitoring",
    "google_secret_manager": "secretmanager",
    "google_service_account": "iam",
    "google_service_networking": "servicenetworking",
    "google_sql": "sqladmin",
}


def api_for(resource_type: str) -> str | None:
    return next((api for prefix, api in API_OF.items() if resource_type.startswith(prefix)), None)


def test_every_resource_type_of_the_stacks_has_its_api_enabled(app):
    enabled = {s["service"].split(".")[0] for s in resources(app.stacks["mlflow-prod-project"], "google_project_service").values()}
    used = {t for name, stack in app.stacks.items() if name != "bootstrap" for t in stack.get("resource", {})}
    needed = {api_for(t) for t in used} - {None}
    assert needed <= enabled, needed - enabled
    unmapped = {t for t in used if api_for(t) is None and t.startswith("google_")} - {
        "google_project_service", "google_project_iam_member", "google_storage_bucket", "google_storage_bucket_iam_member",
    }
    assert not unmapped, f"add these resource types to API_OF: {unmapped}"


def test_keyless_signing_and_builds_are_enabled_too(project_stack):
    enabled = {s["service"].split(".")[0] for s in resources(project_stack, "google_project_service").values()}
    assert {"iamcredentials", "sts", "cloudbuild"} <= enabled


def test_no_api_is_disabled_on_destroy(project_stack):
    for service in resources(project_stack, "google_project_service").values():
        assert service["disable_on_destroy"] is False and service["disable_dependent_services"] is False
