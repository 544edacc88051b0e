"""APIs: every API the stacks use is enabled, and none is disabled on destroy."""

from tests.synth import resources

USED = {
    "artifactregistry", "compute", "dns", "iam", "iamcredentials", "iap", "run", "secretmanager",
    "servicenetworking", "sqladmin", "sts", "cloudbuild", "logging", "monitoring",
}


def test_every_api_the_stacks_use_is_enabled(project_stack):
    enabled = {s["service"].split(".")[0] for s in resources(project_stack, "google_project_service").values()}
    assert USED <= enabled, USED - enabled


def test_no_api_is_disabled_on_destroy(project_stack):
    for service in resources(project_stack, "google_project_service").values():
        assert service["disable_on_destroy"] is False and service["disable_dependent_services"] is False
