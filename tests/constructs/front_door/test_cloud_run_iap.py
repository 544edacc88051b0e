"""The direct-IAP variant (config/direct-iap.toml): IAP on the Cloud Run service, no load balancer."""

import pytest

from constructs.front_door.cloud_run_iap import CloudRunIapProps
from stacks.config import EXAMPLE_CONFIG, ConfigError, parse_config
from tests.conftest import DIRECT_IAP_CONFIG, edited
from tests.synth import ABSENT, assert_matches, env_of, one, resource, resources

RUN_APP_HOST = "mlflow-server-123456789012.europe-west1.run.app"
LOAD_BALANCER_TYPES = (
    "google_compute_global_forwarding_rule",
    "google_compute_target_https_proxy",
    "google_compute_target_http_proxy",
    "google_compute_url_map",
    "google_compute_backend_service",
    "google_compute_region_network_endpoint_group",
    "google_compute_managed_ssl_certificate",
    "google_compute_ssl_policy",
    "google_iap_web_backend_service_iam_member",
    "google_iap_settings",
    "google_dns_managed_zone",
    "google_dns_record_set",
)


def service(stack):
    return one(stack, "google_cloud_run_v2_service")


def test_iap_is_on_the_service_and_its_run_app_url_is_open_to_iap(mlflow_direct_iap):
    assert_matches(
        service(mlflow_direct_iap),
        {"iap_enabled": True, "ingress": "INGRESS_TRAFFIC_ALL", "invoker_iam_disabled": ABSENT, "launch_stage": ABSENT},
    )


def test_there_is_no_load_balancer_certificate_tls_policy_static_ip_or_dns(mlflow_direct_iap):
    present = [t for t in LOAD_BALANCER_TYPES if resources(mlflow_direct_iap, t)]
    assert not present, f"direct_iap must not create {present}"
    # The only global address is the private services range of the network, not a load balancer IP.
    assert [a["purpose"] for a in resources(mlflow_direct_iap, "google_compute_global_address").values()] == [
        "VPC_PEERING"
    ]
    assert (
        "static_ip" not in mlflow_direct_iap["output"]
        and "certificate_status_command" not in mlflow_direct_iap["output"]
    )


def test_the_iap_service_agent_is_the_only_invoker(mlflow_direct_iap):
    invokers = resources(mlflow_direct_iap, "google_cloud_run_v2_service_iam_member")
    assert [(b["role"], b["member"]) for b in invokers.values()] == [
        ("roles/run.invoker", "serviceAccount:service-123456789012@gcp-sa-iap.iam.gserviceaccount.com")
    ]


def test_members_pass_iap_on_this_service_only(mlflow_direct_iap):
    grants = resources(mlflow_direct_iap, "google_iap_web_cloud_run_service_iam_member")
    assert grants == {
        "cloud-run-iap/iap-accessor-group-ml-platform-example-com": {
            "//": grants["cloud-run-iap/iap-accessor-group-ml-platform-example-com"]["//"],
            "project": "example-mlflow-small",
            "location": "europe-west1",
            "cloud_run_service_name": "${google_cloud_run_v2_service.tracking-service_66D64088.name}",
            "role": "roles/iap.httpsResourceAccessor",
            "member": "group:ml-platform@example.com",
        }
    }
    assert not resources(mlflow_direct_iap, "google_project_iam_member").keys() - {
        "server-identity/cloudsql.client",
        "server-identity/cloudsql.instanceUser",
        "server-identity/logging.logWriter",
        "server-identity/monitoring.metricWriter",
    }


def test_the_run_app_host_is_mlflows_allowed_host_and_cors_origin(mlflow_direct_iap):
    env = env_of(service(mlflow_direct_iap)["template"]["containers"][0])
    assert env["MLFLOW_ALLOWED_HOSTS"] == RUN_APP_HOST
    assert env["MLFLOW_CORS_ALLOWED_ORIGINS"] == f"https://{RUN_APP_HOST}"
    assert mlflow_direct_iap["output"]["mlflow_url"]["value"] == f"https://{RUN_APP_HOST}"


def test_the_container_port_stays_h2c_for_uploads_over_32_mib(mlflow_direct_iap):
    assert service(mlflow_direct_iap)["template"]["containers"][0]["ports"] == {"container_port": 8080, "name": "h2c"}


def test_the_server_verifies_what_iap_signs_in_front_of_the_service_itself(mlflow_direct_iap, mlflow):
    """direct_iap: the audience is the service's own, known at synth; behind the load balancer it is
    the backend service's id, known only at apply."""
    assert env_of(service(mlflow_direct_iap)["template"]["containers"][0])["MLFLOW_IAP_AUDIENCE"] == (
        "/projects/123456789012/locations/europe-west1/services/mlflow-server"
    )
    assert env_of(one(mlflow, "google_cloud_run_v2_service")["template"]["containers"][0])[
        "MLFLOW_IAP_AUDIENCE"
    ].startswith("/projects/123456789012/global/backendServices/")


def direct(*edits):
    return edited(DIRECT_IAP_CONFIG.read_text(), *edits)


@pytest.mark.parametrize(
    "edits, message",
    [
        (
            [('domain = "mlflow-server-123456789012.europe-west1.run.app"', 'domain = "mlflow.example.com"')],
            "domain: 'mlflow.example.com' is a custom domain, which direct_iap cannot serve (no load balancer, no "
            f'certificate) — write domain = "{RUN_APP_HOST}" (the service\'s run.app host) or use front_door.mode = "load_balancer"',
        ),
        (
            [('mode = "direct_iap"', 'mode = "direct_iap"\n\n[dns]\nexisting_zone = "example-com"')],
            "dns.existing_zone: direct_iap creates no DNS record (users open the run.app URL) — remove the [dns] "
            'table or use front_door.mode = "load_balancer"',
        ),
        (
            [('mode = "direct_iap"', 'mode = "serverless"')],
            'front_door.mode: \'serverless\' is not a mode — use "load_balancer" (default) or "direct_iap"',
        ),
    ],
    ids=["custom-domain", "dns-zone", "unknown-mode"],
)
def test_bad_combinations_are_refused_with_one_line_naming_the_field(edits, message):
    with pytest.raises(ConfigError) as error:
        parse_config(direct(*edits), "direct-iap.toml")
    assert str(error.value) == f"direct-iap.toml: {message}"


def test_a_custom_oauth_client_or_programmatic_clients_are_refused_in_direct_iap():
    text = (
        direct(
            (
                'iap_members = ["group:ml-platform@example.com"]',
                'iap_members = ["group:ml-platform@example.com"]\niap_programmatic_clients = ["1-a.apps.googleusercontent.com"]',
            ),
        )
        + '\n[iap_oauth_client]\nclient_id = "1-b.apps.googleusercontent.com"\n'
    )
    with pytest.raises(ConfigError) as error:
        parse_config(text, "direct-iap.toml")
    assert str(error.value).startswith("direct-iap.toml: iap_programmatic_clients: ")
    assert "\ndirect-iap.toml: iap_oauth_client.client_id: " in str(error.value)


def test_the_default_example_is_the_load_balancer_mode(example_config):
    assert example_config.front_door.mode == "load_balancer"
    assert "[front_door]" not in EXAMPLE_CONFIG.read_text()


def test_props_refuse_an_iap_that_admits_nobody():
    with pytest.raises(ValueError, match=r"^CloudRunIapProps.iap_members: is empty; IAP would admit nobody"):
        CloudRunIapProps(project="p", region="europe-west1", service_name="s", iap_members=())


def test_the_upgrade_window_reopens_to_the_ingress_the_direct_service_declares(mlflow_direct_iap):
    """Behind the load balancer `reopen` sets the load balancer's ingress back; here it must be `all`,
    or the first upgrade would leave the run.app URL closed."""
    reopen = resource(mlflow_direct_iap, "terraform_data", "schema-upgrade/reopen")
    (command,) = [p["local-exec"]["command"] for p in reopen["provisioner"]]
    assert command.endswith("--ingress=all"), command
    assert one(mlflow_direct_iap, "google_cloud_run_v2_service")["ingress"] == "INGRESS_TRAFFIC_ALL"
