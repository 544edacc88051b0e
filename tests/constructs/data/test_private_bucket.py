"""Every bucket: uniform access, public access prevention enforced, versioned, kept (protect_data = true)."""

import re

import pytest

from constructs.data.private_bucket import PrivateBucketProps
from tests.synth import assert_matches, resource, resources

BUCKETS = [
    ("bootstrap", "state/bucket"),
    ("mlflow-example-project", "build-identity/bucket/bucket"),
    ("mlflow-example", "artifacts/bucket"),
]


@pytest.mark.parametrize("stack, path", BUCKETS)
def test_bucket_is_private_versioned_and_kept(app, stack, path):
    assert_matches(
        resource(app.stacks[stack], "google_storage_bucket", path),
        {
            "uniform_bucket_level_access": True,
            "public_access_prevention": "enforced",
            "versioning": {"enabled": True},
            "force_destroy": False,
            "lifecycle": {"prevent_destroy": True},
        },
    )


def test_every_bucket_of_the_app_is_listed_above(app):
    found = {
        (name, path)
        for name, stack in app.stacks.items()
        if name in ("bootstrap", "mlflow-example-project", "mlflow-example")
        for path in resources(stack, "google_storage_bucket")
    }
    assert found == set(BUCKETS)


def test_noncurrent_versions_expire(app):
    rule = resource(app.stacks["mlflow-example"], "google_storage_bucket", "artifacts/bucket")["lifecycle_rule"]
    assert_matches(rule, [{"action": {"type": "Delete"}, "condition": {"days_since_noncurrent_time": 30}}])
    state_rule = resource(app.stacks["bootstrap"], "google_storage_bucket", "state/bucket")["lifecycle_rule"]
    assert state_rule[0]["condition"]["days_since_noncurrent_time"] == 365


def test_no_bucket_has_a_usage_log_sink(app):
    """A usage-log bucket needs a grant to cloud-storage-analytics@google.com, which domain-restricted
    sharing refuses; object access is in Cloud Audit Logs (tests/constructs/operations/test_storage_audit_logs.py)."""
    for name, stack in app.stacks.items():
        for path, bucket in resources(stack, "google_storage_bucket").items():
            assert "logging" not in bucket, f"{name}/{path}"


def test_the_artifact_bucket_lives_in_the_region_and_the_state_bucket_in_config(app):
    assert (
        resource(app.stacks["mlflow-example"], "google_storage_bucket", "artifacts/bucket")["location"]
        == "europe-west1"
    )
    assert (
        resource(app.stacks["bootstrap"], "google_storage_bucket", "state/bucket")["name"]
        == "example-mlflow-project-tfstate"
    )


@pytest.mark.parametrize(
    "change, message",
    [
        ({"name": ""}, "PrivateBucketProps: name '' and location 'EU' must both be given"),
        ({"noncurrent_version_days": -1}, "PrivateBucketProps.noncurrent_version_days: -1"),
        (
            {"force_destroy": True},
            "PrivateBucketProps.force_destroy: a bucket protected from destroy cannot be force-destroyed",
        ),
    ],
)
def test_a_bucket_refuses_props_that_make_no_sense(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        PrivateBucketProps(**{**dict(project="p", name="b", location="EU"), **change})
