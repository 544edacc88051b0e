"""Front door: HTTPS load balancer with a managed certificate, strict TLS, redirect on 80, IAP."""

import re

import pytest

from tests.synth import addresses_by, assert_matches, one, resource, resources, synth_construct


def test_a_serverless_neg_points_at_the_cloud_run_service_by_its_name(mlflow):
    """A plain name, not a reference: the service depends on the front door (its IAP audience)."""
    assert one(mlflow, "google_cloud_run_v2_service")["name"] == "mlflow-server"
    assert_matches(
        one(mlflow, "google_compute_region_network_endpoint_group"),
        {"network_endpoint_type": "SERVERLESS", "region": "europe-west1", "cloud_run": {"service": "mlflow-server"}},
    )


def test_the_backend_is_external_managed_logged_and_behind_iap_with_the_google_managed_client(mlflow):
    backend = one(mlflow, "google_compute_backend_service")
    assert_matches(
        backend,
        {
            "load_balancing_scheme": "EXTERNAL_MANAGED",
            "log_config": {"enable": True, "sample_rate": 1},
            "iap": {"enabled": True},
        },
    )
    assert "oauth2_client_id" not in backend["iap"] and "oauth2_client_secret" not in backend["iap"]


def test_no_oauth_brand_or_client_is_created(app):
    for stack in app.stacks.values():
        assert not {"google_iap_brand", "google_iap_client"} & set(stack.get("resource", {}))


def test_https_uses_a_managed_certificate_for_the_domain_and_a_restricted_tls_policy(mlflow):
    assert one(mlflow, "google_compute_managed_ssl_certificate")["managed"] == {"domains": ["mlflow.example.com"]}
    assert_matches(one(mlflow, "google_compute_ssl_policy"), {"profile": "RESTRICTED", "min_tls_version": "TLS_1_2"})
    assert_matches(
        one(mlflow, "google_compute_target_https_proxy"),
        {
            "ssl_certificates": ["${google_compute_managed_ssl_certificate.front-door_certificate_B359D303.id}"],
            "ssl_policy": "${google_compute_ssl_policy.front-door_tls-policy_682D7460.id}",
            "url_map": "${google_compute_url_map.front-door_https-url-map_EC46A23F.id}",
        },
    )


def test_port_443_serves_and_port_80_only_redirects_to_https(mlflow):
    https = resource(mlflow, "google_compute_global_forwarding_rule", "front-door/https-forwarding-rule")
    http = resource(mlflow, "google_compute_global_forwarding_rule", "front-door/http-forwarding-rule")
    address = "${google_compute_global_address.front-door_address_DFE2E206.id}"
    assert_matches(https, {"port_range": "443", "ip_address": address, "load_balancing_scheme": "EXTERNAL_MANAGED"})
    assert_matches(http, {"port_range": "80", "ip_address": address, "load_balancing_scheme": "EXTERNAL_MANAGED"})
    redirect = resource(mlflow, "google_compute_url_map", "front-door/http-redirect")
    assert redirect["default_url_redirect"] == {
        "https_redirect": True,
        "strip_query": False,
        "redirect_response_code": "MOVED_PERMANENTLY_DEFAULT",
    }
    assert "default_service" not in redirect


def test_a_static_global_ip_is_reserved(mlflow):
    assert_matches(
        resource(mlflow, "google_compute_global_address", "front-door/address"),
        {"address_type": "EXTERNAL", "ip_version": "IPV4"},
    )


def test_members_are_granted_iap_access_on_this_backend_service_only(mlflow, mlflow_prod):
    grants = resources(mlflow, "google_iap_web_backend_service_iam_member")
    assert [(g["role"], g["member"], g["web_backend_service"]) for g in grants.values()] == [
        (
            "roles/iap.httpsResourceAccessor",
            "group:ml-platform@example.com",
            "${google_compute_backend_service.front-door_backend_ED3308D3.name}",
        )
    ]
    for stack in (mlflow, mlflow_prod):
        project_roles = [m["role"] for m in resources(stack, "google_project_iam_member").values()]
        assert not [r for r in project_roles if r.startswith("roles/iap.")]


def test_iap_settings_allowlist_oauth_clients_only_when_configured(mlflow, mlflow_prod):
    assert "google_iap_settings" not in mlflow["resource"]
    assert_matches(
        one(mlflow_prod, "google_iap_settings"),
        {
            "name": "projects/210987654321/iap_web/compute/services/${google_compute_backend_service.front-door_backend_ED3308D3.name}",
            "access_settings": {
                "oauth_settings": {"programmatic_clients": ["123456789012-abc123.apps.googleusercontent.com"]}
            },
        },
    )


def test_the_iap_service_agent_is_created_before_it_is_granted(app):
    agent = resource(app.stacks["mlflow-example-project"], "terraform_data", "iap-service-agent/identity")
    assert agent["provisioner"] == [
        {
            "local-exec": {
                "command": "gcloud beta services identity create --service=iap.googleapis.com --project=example-mlflow-project"
            }
        }
    ]
    assert app.manifest["stacks"]["mlflow-example"]["dependencies"] == ["mlflow-example-project"]


def test_outputs_give_the_url_and_the_ip(mlflow):
    assert mlflow["output"]["mlflow_url"]["value"] == "https://mlflow.example.com"
    assert (
        mlflow["output"]["static_ip"]["value"] == "${google_compute_global_address.front-door_address_DFE2E206.address}"
    )


def test_a_new_domain_gets_a_new_certificate_before_the_old_one_goes(mlflow, mlflow_prod):
    example, prod = (
        one(mlflow, "google_compute_managed_ssl_certificate"),
        one(mlflow_prod, "google_compute_managed_ssl_certificate"),
    )
    assert example["lifecycle"] == {"create_before_destroy": True}
    assert example["name"].startswith("mlflow-cert-") and example["name"] != prod["name"]


MEMBERS = ("group:ml-platform@example.com", "user:ada@example.com", "serviceAccount:ci@p.iam.gserviceaccount.com")


def front_door(members, **extra):
    from constructs.front_door.front_door import FrontDoor, FrontDoorProps

    props = dict(
        project="p",
        project_number="1",
        region="europe-west1",
        name="mlflow",
        domain="mlflow.example.com",
        cloud_run_service="svc",
        iap_members=members,
    )
    return lambda stack: FrontDoor(stack, "front-door", FrontDoorProps(**{**props, **extra}))


def accessor_addresses(tmp_path, name, members, **extra):
    stack = synth_construct(tmp_path / name, front_door(members, **extra))
    return addresses_by(stack, "google_iap_web_backend_service_iam_member", "member")


def test_removing_a_member_leaves_every_other_grant_at_its_address(tmp_path):
    before = accessor_addresses(tmp_path, "before", MEMBERS)
    after = accessor_addresses(tmp_path, "after", MEMBERS[1:])
    assert len(set(before.values())) == 3
    assert after == {m: before[m] for m in MEMBERS[1:]}


def test_grants_are_keyed_by_a_readable_form_of_the_member(mlflow):
    assert list(resources(mlflow, "google_iap_web_backend_service_iam_member")) == [
        "front-door/iap-accessor-group-ml-platform-example-com"
    ]


def test_an_account_of_the_deployment_is_keyed_by_the_callers_key_not_its_position(tmp_path):
    alone = accessor_addresses(
        tmp_path, "alone", MEMBERS[:1], iap_accounts={"client-identity": "serviceAccount:c@p.iam.gserviceaccount.com"}
    )
    more = accessor_addresses(
        tmp_path, "more", MEMBERS, iap_accounts={"client-identity": "serviceAccount:c@p.iam.gserviceaccount.com"}
    )
    assert alone["serviceAccount:c@p.iam.gserviceaccount.com"] == more["serviceAccount:c@p.iam.gserviceaccount.com"]


def test_members_whose_readable_keys_collide_still_get_distinct_stable_addresses(tmp_path):
    both = accessor_addresses(tmp_path, "both", ("user:a.b@example.com", "user:a-b@example.com"))
    assert len(set(both.values())) == 2


@pytest.mark.parametrize(
    "members, extra, message",
    [
        ((), {}, "FrontDoorProps.iap_members: is empty"),
        (
            MEMBERS,
            {"cloud_run_service": "${google_cloud_run_v2_service.s.name}"},
            "FrontDoorProps.cloud_run_service: '${google_cloud_run_v2_service.s.name}' must be the service's name as a plain string",
        ),
        (("user:a@example.com", "user:A@example.com"), {}, "'user:A@example.com' is listed twice"),
        (MEMBERS, {"name": ""}, "FrontDoorProps.name: is empty"),
        (
            MEMBERS,
            {"iap_accounts": {"Client Identity": "serviceAccount:c@p.iam.gserviceaccount.com"}},
            "key 'Client Identity'",
        ),
    ],
)
def test_a_front_door_refuses_props_that_make_no_sense(members, extra, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        front_door(members, **extra)(None)


def test_a_member_only_known_at_deploy_time_must_come_with_a_key(tmp_path):
    from constructs.cdk.google.service_account import ServiceAccount

    def build(stack):
        account = ServiceAccount(stack, "sa", account_id="client")
        front_door((account.member,))(stack)

    with pytest.raises(ValueError, match="only known at deploy time"):
        synth_construct(tmp_path, build)


def test_a_custom_oauth_client_gets_its_secret_write_only_from_an_ephemeral_variable(mlflow_prod):
    """For projects outside an organization, or members outside it; the secret is in no file, plan or state."""
    iap = one(mlflow_prod, "google_compute_backend_service")["iap"]
    assert iap == {
        "enabled": True,
        "oauth2_client_id": "123456789012-iapclient.apps.googleusercontent.com",
        "oauth2_client_secret_wo": "${var.iap_oauth_client_secret}",
        "oauth2_client_secret_wo_version": "2",
    }
    assert mlflow_prod["variable"]["iap_oauth_client_secret"] == {
        "type": "string",
        "sensitive": True,
        "nullable": False,
        "ephemeral": True,
        "description": "Secret of the custom IAP OAuth client; set TF_VAR_iap_oauth_client_secret",
    }


def test_without_a_custom_client_there_is_no_secret_variable(mlflow):
    assert "variable" not in mlflow
    assert set(one(mlflow, "google_compute_backend_service")["iap"]) == {"enabled"}


def test_the_front_door_refuses_a_literal_oauth_secret_or_half_a_client():
    from constructs.front_door.front_door import FrontDoorProps

    base = dict(
        project="p",
        project_number="1",
        region="europe-west1",
        name="m",
        domain="m.example.com",
        cloud_run_service="s",
        iap_members=("group:g@example.com",),
    )
    with pytest.raises(ValueError, match="never the secret itself"):
        FrontDoorProps(**base, oauth_client_id="1-a.apps.googleusercontent.com", oauth_client_secret="GOCSPX-abc")
    with pytest.raises(ValueError, match="set both"):
        FrontDoorProps(**base, oauth_client_id="1-a.apps.googleusercontent.com")
