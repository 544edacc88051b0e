"""Our own invariants hold on every stack, and each one turns red when a stack regresses."""

from __future__ import annotations

import copy
import json

import pytest

from constructs.cdk import App, TerraformStack
from constructs.cdk.google.provider import GoogleProvider
from constructs.data.private_bucket import PrivateBucket, PrivateBucketProps
from tests.invariants import (
    ALLOWED_ROLES,
    RULES,
    cloud_run_ingress_never_all,
    data_is_protected_from_destroy,
    grantable_roles,
    iam_admin_grants_carry_a_condition,
    iam_bindings_grant_only_allowed_roles,
    iap_enabled_service_is_invoked_only_by_iap,
    no_identity_may_modify_how_it_signs_in,
    no_project_level_act_as_or_token_creator,
    no_public_ip_on_sql,
    no_public_members,
    no_service_account_keys,
    server_account_has_no_admin_roles,
)
from tests.synth import resources, synth_construct


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.__name__)
def test_the_invariant_holds_on_every_stack(app, rule):
    violations = {name: rule(stack) for name, stack in app.stacks.items()}
    assert not any(violations.values()), violations


def first(stack, type_):
    return next(iter(stack["resource"][type_].values()))


def broken(stack, change):
    stack = copy.deepcopy(stack)
    change(stack)
    return stack


def test_a_public_sql_ip_is_caught(mlflow):
    bad = broken(
        mlflow,
        lambda s: first(s, "google_sql_database_instance")["settings"]["ip_configuration"].update(ipv4_enabled=True),
    )
    assert no_public_ip_on_sql(bad) == ["mlflow-example/database/instance: ipv4_enabled is not false"]


def test_an_all_users_invoker_is_caught(mlflow):
    bad = broken(mlflow, lambda s: first(s, "google_cloud_run_v2_service_iam_member").update(member="allUsers"))
    assert no_public_members(bad) == ["mlflow-example/tracking-service/iap-service-agent: grants allUsers"]


def test_a_service_account_key_is_caught(mlflow):
    def add_key(s):
        s["resource"]["google_service_account_key"] = {
            "k": {"//": {"metadata": {"path": "mlflow-example/key", "uniqueId": "k"}}}
        }

    assert no_service_account_keys(broken(mlflow, add_key)) == ["mlflow-example/key: is a service account key"]


def test_an_editor_role_for_the_server_is_caught(mlflow):
    bad = broken(mlflow, lambda s: first(s, "google_project_iam_member").update(role="roles/editor"))
    assert server_account_has_no_admin_roles(bad) == [
        "mlflow-example/server-identity/cloudsql.client: gives the server roles/editor"
    ]


def test_a_service_whose_account_cannot_be_read_fails_rather_than_passes(mlflow):
    bad = broken(mlflow, lambda s: first(s, "google_cloud_run_v2_service")["template"].pop("service_account"))
    assert server_account_has_no_admin_roles(bad) == [
        "a Cloud Run service runs as no dedicated account it names: ['serviceAccount:']"
    ]


def test_ingress_all_is_caught(mlflow):
    bad = broken(mlflow, lambda s: first(s, "google_cloud_run_v2_service").update(ingress="INGRESS_TRAFFIC_ALL"))
    assert cloud_run_ingress_never_all(bad) == [
        "mlflow-example/tracking-service/service: ingress is INGRESS_TRAFFIC_ALL without iap_enabled"
    ]


def test_ingress_all_is_caught_when_iap_is_turned_off_on_the_direct_iap_service(mlflow_direct_iap):
    bad = broken(mlflow_direct_iap, lambda s: first(s, "google_cloud_run_v2_service").pop("iap_enabled"))
    assert cloud_run_ingress_never_all(bad) == [
        "mlflow-small/tracking-service/service: ingress is INGRESS_TRAFFIC_ALL without iap_enabled"
    ]


def test_a_second_invoker_of_the_iap_enabled_service_is_caught(mlflow_direct_iap):
    bad = broken(
        mlflow_direct_iap,
        lambda s: first(s, "google_cloud_run_v2_service_iam_member").update(member="group:ml-platform@example.com"),
    )
    assert iap_enabled_service_is_invoked_only_by_iap(bad) == [
        "mlflow-small/tracking-service/iap-service-agent: 'group:ml-platform@example.com' may invoke an "
        "IAP-enabled service; only the IAP service agent may"
    ]


def test_an_unprotected_bucket_from_a_deliberately_broken_construct_is_caught(tmp_path):
    """Synthesized for real: a stack that opts a bucket out of destroy protection fails the invariant."""

    class BrokenStack(TerraformStack):
        def __init__(self, scope):
            super().__init__(scope, "broken")
            GoogleProvider(self, "google", project="example-project")
            PrivateBucket(
                self, "artifacts", PrivateBucketProps("example-project", "b", "EU", protect_from_destroy=False)
            )

    app = App(outdir=str(tmp_path))
    BrokenStack(app)
    app.synth()
    stack = json.loads((tmp_path / "stacks" / "broken" / "cdk.tf.json").read_text())
    assert data_is_protected_from_destroy(stack) == ["broken/artifacts/bucket: lifecycle.prevent_destroy is not true"]
    assert resources(stack, "google_storage_bucket")["artifacts/bucket"]["lifecycle"] == {"prevent_destroy": False}


# One binding of each kind, with a role that kind must never grant.
ADMIN_ROLES = {
    "google_project_iam_member": "roles/owner",
    "google_storage_bucket_iam_member": "roles/storage.admin",
    "google_secret_manager_secret_iam_member": "roles/secretmanager.admin",
    "google_cloud_run_v2_service_iam_member": "roles/run.developer",
    "google_cloud_run_v2_job_iam_member": "roles/run.admin",
    "google_service_account_iam_member": "roles/iam.serviceAccountAdmin",
    "google_artifact_registry_repository_iam_member": "roles/artifactregistry.repoAdmin",
    "google_iap_web_backend_service_iam_member": "roles/iap.admin",
    "google_iap_web_cloud_run_service_iam_member": "roles/iap.admin",
}


def with_binding(stack, type_, role):
    def add(s):
        s["resource"].setdefault(type_, {})["bad"] = {
            "//": {"metadata": {"path": "mlflow-example/bad", "uniqueId": "bad"}},
            "role": role,
            "member": "user:a@example.com",
        }

    return broken(stack, add)


@pytest.mark.parametrize("type_, role", sorted(ADMIN_ROLES.items()))
def test_a_role_the_resource_may_not_grant_is_caught_on_every_kind_of_binding(mlflow, type_, role):
    assert iam_bindings_grant_only_allowed_roles(with_binding(mlflow, type_, role)) == [
        f"mlflow-example/bad: {type_} grants {role!r}; allowed: {ALLOWED_ROLES[type_][1]}"
    ]


def test_every_kind_of_binding_the_app_makes_has_an_allow_list(app):
    made = {t for stack in app.stacks.values() for t in stack.get("resource", {}) if t.endswith("_iam_member")}
    assert made <= set(ADMIN_ROLES) == set(ALLOWED_ROLES)


def test_a_binding_of_an_unlisted_kind_or_an_authoritative_one_fails_rather_than_passes(mlflow):
    assert iam_bindings_grant_only_allowed_roles(
        with_binding(mlflow, "google_kms_crypto_key_iam_member", "roles/x")
    ) == [
        "mlflow-example/bad: no allowed roles are listed for google_kms_crypto_key_iam_member; add them to ALLOWED_ROLES with a reason"
    ]
    assert (
        "is authoritative"
        in iam_bindings_grant_only_allowed_roles(
            with_binding(mlflow, "google_storage_bucket_iam_binding", "roles/storage.objectViewer")
        )[0]
    )


def test_storage_admin_on_the_artifact_bucket_is_caught_when_synthesized_for_real(tmp_path):
    """What `artifacts.grant(..., "roles/storage.admin")` used to allow: only intents remain public."""
    assert not hasattr(PrivateBucket, "grant")

    def build(stack):
        PrivateBucket(stack, "artifacts", PrivateBucketProps("example-project", "b", "EU"))._grant(
            "server-admin", "user:a@example.com", "roles/storage.admin"
        )

    assert iam_bindings_grant_only_allowed_roles(synth_construct(tmp_path, build)) == [
        "unit/artifacts/server-admin: google_storage_bucket_iam_member grants 'roles/storage.admin'; allowed: "
        + ALLOWED_ROLES["google_storage_bucket_iam_member"][1]
    ]


def test_the_bucket_intents_grant_object_roles_only(tmp_path):
    def build(stack):
        bucket = PrivateBucket(stack, "b", PrivateBucketProps("example-project", "b", "EU"))
        bucket.grant_object_user("user", "user:a@example.com")
        bucket.grant_object_creator("creator", "user:a@example.com")
        bucket.grant_object_viewer("viewer", "user:a@example.com")

    roles = {
        k: v["role"] for k, v in resources(synth_construct(tmp_path, build), "google_storage_bucket_iam_member").items()
    }
    assert roles == {
        "b/user": "roles/storage.objectUser",
        "b/creator": "roles/storage.objectCreator",
        "b/viewer": "roles/storage.objectViewer",
    }


# --- Identities: act-as per account, conditioned IAM admins, no way to widen one's own sign-in ---------


def deployer_grant(stack, role):
    return next(
        body
        for body in stack["resource"]["google_project_iam_member"].values()
        if body["//"]["metadata"]["path"].endswith(f"ci-identity/deployer-{role.split('/')[-1]}")
    )


def test_act_as_on_the_whole_project_is_caught(app):
    bad = broken(
        app.stacks["mlflow-prod-project"],
        lambda s: deployer_grant(s, "roles/run.admin").update(role="roles/iam.serviceAccountUser"),
    )
    assert no_project_level_act_as_or_token_creator(bad) == [
        "mlflow-prod-project/ci-identity/deployer-run.admin: grants roles/iam.serviceAccountUser on the whole project; "
        "grant it on the one service account"
    ]


def test_a_project_iam_admin_without_its_condition_is_caught(app):
    bad = broken(
        app.stacks["mlflow-prod-project"],
        lambda s: deployer_grant(s, "roles/resourcemanager.projectIamAdmin").pop("condition"),
    )
    assert iam_admin_grants_carry_a_condition(bad) == [
        "mlflow-prod-project/ci-identity/deployer-resourcemanager.projectIamAdmin: grants roles/resourcemanager.projectIamAdmin "
        "without a condition limiting what it may grant"
    ]


def widen_condition(role):
    def change(stack):
        condition = deployer_grant(stack, "roles/resourcemanager.projectIamAdmin")["condition"]
        condition["expression"] = condition["expression"].replace("hasOnly([", f"hasOnly(['{role}', ")

    return change


@pytest.mark.parametrize(
    "role", ["roles/iam.workloadIdentityPoolAdmin", "roles/iam.serviceAccountAdmin", "roles/owner"]
)
def test_a_deployer_that_may_grant_itself_power_over_its_pool_or_bindings_is_caught(app, role):
    bad = broken(app.stacks["mlflow-prod-project"], widen_condition(role))
    assert no_identity_may_modify_how_it_signs_in(bad) == [
        "mlflow-prod-project/ci-identity/deployer-resourcemanager.projectIamAdmin: a federated identity holds "
        "roles/resourcemanager.projectIamAdmin, which can change the pool or its own bindings"
    ]


def test_a_condition_this_cannot_read_counts_as_granting_anything(app):
    def loosen(stack):
        deployer_grant(stack, "roles/resourcemanager.projectIamAdmin")["condition"]["expression"] = "true"

    assert no_identity_may_modify_how_it_signs_in(broken(app.stacks["mlflow-prod-project"], loosen))
    assert grantable_roles({"expression": "true"}) is None
    assert grantable_roles(None) is None


def test_a_pool_admin_role_for_the_deployer_is_caught(app):
    bad = broken(
        app.stacks["mlflow-prod-project"],
        lambda s: deployer_grant(s, "roles/dns.admin").update(role="roles/iam.workloadIdentityPoolAdmin"),
    )
    assert no_identity_may_modify_how_it_signs_in(bad) == [
        "mlflow-prod-project/ci-identity/deployer-dns.admin: a federated identity holds roles/iam.workloadIdentityPoolAdmin, "
        "which can change the pool or its own bindings"
    ]


def test_the_planner_acting_as_the_deployer_is_caught(app):
    """Token Creator on the deployer would let any pull-request job apply, skipping the approval."""

    def planner_signs_as_deployer(stack):
        grants = stack["resource"]["google_service_account_iam_member"]
        act_as = next(
            b for b in grants.values() if b["//"]["metadata"]["path"].endswith("server-identity/deployer-acts-as")
        )
        deployer = act_as["member"].replace(".member}", ".name}")
        planner = next(
            b["member"]
            for b in stack["resource"]["google_project_iam_member"].values()
            if "ci-identity/planner-" in b["//"]["metadata"]["path"]
        )
        grants["bad"] = {
            "//": {"metadata": {"path": "mlflow-prod-project/ci-identity/bad"}},
            "service_account_id": deployer,
            "role": "roles/iam.serviceAccountTokenCreator",
            "member": planner,
        }

    assert no_identity_may_modify_how_it_signs_in(
        broken(app.stacks["mlflow-prod-project"], planner_signs_as_deployer)
    ) == [
        "mlflow-prod-project/ci-identity/bad: a federated identity may act as another one, skipping that one's sign-in condition"
    ]


def test_act_as_on_an_account_other_than_the_build_or_server_identity_is_caught(app):
    def move(stack):
        body = next(
            b
            for b in stack["resource"]["google_service_account_iam_member"].values()
            if b["//"]["metadata"]["path"].endswith("server-identity/deployer-acts-as")
        )
        body["//"]["metadata"]["path"] = "mlflow-prod-project/ci-identity/deployer-acts-as"

    assert iam_bindings_grant_only_allowed_roles(broken(app.stacks["mlflow-prod-project"], move)) == [
        "mlflow-prod-project/ci-identity/deployer-acts-as: actAs on an account other than the build or server identity "
        "lets its holder deploy as it"
    ]
