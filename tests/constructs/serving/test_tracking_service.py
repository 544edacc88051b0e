"""The MLflow service: load-balancer ingress, private egress, socket and GCS volumes, secret env."""

import dataclasses
import re

import pytest

from constructs.serving.server_container import GatewayKeyRef, RunPlacement, ServerContainerProps
from constructs.serving.tracking_service import TrackingServiceProps
from tests.synth import ABSENT, assert_matches, env_of, one, resources


def service(stack):
    return one(stack, "google_cloud_run_v2_service")


def container(stack):
    return service(stack)["template"]["containers"][0]


def test_only_the_load_balancer_can_reach_it(mlflow):
    assert service(mlflow)["ingress"] == "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"


def test_it_runs_the_configured_image_as_its_own_account(mlflow):
    assert_matches(
        service(mlflow)["template"],
        {
            "service_account": "mlflow-server@example-mlflow-project.iam.gserviceaccount.com",
            "execution_environment": "EXECUTION_ENVIRONMENT_GEN2",
        },
    )
    assert container(mlflow)["image"] == (
        "europe-west1-docker.pkg.dev/example-mlflow-project/mlflow-images/mlflow-server:mlflow-3.17.2"
    )


def test_egress_goes_direct_to_the_vpc_for_private_ranges_only(mlflow):
    assert_matches(
        service(mlflow)["template"]["vpc_access"],
        {
            "egress": "PRIVATE_RANGES_ONLY",
            "connector": ABSENT,
            "network_interfaces": [
                {
                    "network": "${google_compute_network.network_vpc_4E8F0223.name}",
                    "subnetwork": "${google_compute_subnetwork.network_subnet_E45498CD.name}",
                }
            ],
        },
    )


def test_cloud_sql_is_mounted_as_a_socket_and_the_bucket_as_a_gcs_volume(mlflow):
    assert_matches(
        service(mlflow)["template"]["volumes"],
        [
            {
                "name": "artifacts",
                "gcs": {"bucket": "${google_storage_bucket.artifacts_bucket_A41425E9.name}", "read_only": False},
            },
            {
                "name": "cloudsql",
                "cloud_sql_instance": {
                    "instances": ["${google_sql_database_instance.database_instance_D7FC2283.connection_name}"]
                },
            },
        ],
    )
    assert "gcs" not in next(v for v in service(mlflow)["template"]["volumes"] if v["name"] == "cloudsql")
    assert container(mlflow)["volume_mounts"] == [
        {"name": "artifacts", "mount_path": "/mnt/gcs"},
        {"name": "cloudsql", "mount_path": "/cloudsql"},
    ]


def test_the_bucket_is_mounted_as_the_images_user_so_the_server_can_write_artifacts(mlflow):
    """Without uid/gid GCS FUSE mounts as root and user 10001 cannot write (provider 7+: mount_options)."""
    artifacts = next(v for v in service(mlflow)["template"]["volumes"] if v["name"] == "artifacts")
    assert artifacts["name"] == "artifacts"
    assert artifacts["gcs"]["mount_options"] == ["uid=10001", "gid=10001"]


def test_a_backend_store_uri_with_a_password_comes_from_secret_manager_never_a_plain_value(mlflow_prod):
    env = env_of(container(mlflow_prod))
    assert "MLFLOW_BACKEND_STORE_AUTH" not in env, "password login is the image's default"
    assert env["MLFLOW_BACKEND_STORE_URI"] == {
        "secret_key_ref": {
            "secret": "${google_secret_manager_secret.backend-store-uri_secret_7137454D.secret_id}",
            "version": "${google_secret_manager_secret_version.backend-store-uri_version_61105727.version}",
        }
    }


def test_the_server_believes_only_what_iap_signed_for_the_front_doors_backend_service(
    mlflow, mlflow_prod, example_config, prod_config
):
    """docker/iap_identity.py verifies every request against this audience; verification is the
    image's default (on), so nothing switches it."""
    for stack, cfg in ((mlflow, example_config), (mlflow_prod, prod_config)):
        [backend] = stack["resource"]["google_compute_backend_service"]
        env = env_of(container(stack))
        assert env["MLFLOW_IAP_AUDIENCE"] == (
            f"/projects/{cfg.project_number}/global/backendServices/${{google_compute_backend_service.{backend}.generated_id}}"
        )
        assert "MLFLOW_IAP_VERIFICATION" not in env and "MLFLOW_IAP_TEST_KEYS_URL" not in env


def test_the_migration_job_gets_no_iap_audience(mlflow):
    """It serves no requests, and would otherwise wait for the load balancer."""
    job = one(mlflow, "google_cloud_run_v2_job")["template"]["template"]["containers"][0]
    assert "MLFLOW_IAP_AUDIENCE" not in env_of(job)


def test_the_server_accepts_the_configured_domain_and_writes_artifacts_to_the_mount(mlflow, mlflow_prod):
    assert_matches(
        env_of(container(mlflow)),
        {
            "MLFLOW_ALLOWED_HOSTS": "mlflow.example.com",
            "MLFLOW_CORS_ALLOWED_ORIGINS": "https://mlflow.example.com",
            "MLFLOW_ARTIFACTS_DESTINATION": "/mnt/gcs",
            "MLFLOW_WORKERS": "1",
            "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "2",
            "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "1",
        },
    )
    assert env_of(container(mlflow_prod))["MLFLOW_ALLOWED_HOSTS"] == "mlflow.prod.example.com"


def test_sizing_scales_to_zero_and_bills_cpu_only_during_requests(mlflow):
    template = service(mlflow)["template"]
    assert template["scaling"] == {"min_instance_count": 0, "max_instance_count": 2}
    assert template["max_instance_request_concurrency"] == 20
    assert container(mlflow)["resources"] == {
        "limits": {"cpu": "1", "memory": "1Gi"},
        "cpu_idle": True,
        "startup_cpu_boost": True,
    }


def test_a_startup_probe_on_health_allows_two_minutes(mlflow):
    probe = container(mlflow)["startup_probe"]
    assert probe["http_get"] == {"path": "/health", "port": 8080}
    assert probe["period_seconds"] * probe["failure_threshold"] == 120


def test_the_service_never_migrates_the_database(mlflow):
    assert "command" not in container(mlflow) and "args" not in container(mlflow)


SERVER_ROLES = {
    "google_storage_bucket_iam_member.artifacts_server-object-user_ED5A10FD",
    "google_project_iam_member.server-identity_cloudsqlclient_01626B14",
    "google_project_iam_member.server-identity_logginglogWriter_BEE02F96",
    "google_project_iam_member.server-identity_monitoringmetricWriter_EDFDFBAF",
    "terraform_data.migration-job_execution_4D7B6444",
}


GATEWAY_KEY_GRANT = "google_secret_manager_secret_iam_member.gateway-key_server-reads-key_3535A6E7"


def test_it_starts_only_after_its_grants_and_the_migration_for_its_image(mlflow, mlflow_prod):
    """With IAM login the database login role, with a password the secret's reader grant; the
    gateway key's reader grant always."""
    assert set(service(mlflow)["depends_on"]) == SERVER_ROLES | {
        "google_project_iam_member.server-identity_cloudsqlinstanceUser_9F96A692",
        GATEWAY_KEY_GRANT,
    }
    assert set(service(mlflow_prod)["depends_on"]) == SERVER_ROLES | {
        "google_secret_manager_secret_iam_member.backend-store-uri_server-reads-uri_AD94F5E8",
        GATEWAY_KEY_GRANT,
    }


def test_the_invoker_grant_made_after_the_wiring_waits_like_the_service(mlflow):
    """`wait_for` is applied at synth: a grant added to the service after the call is not skipped."""
    invoker = one(mlflow, "google_cloud_run_v2_service_iam_member")
    assert invoker["depends_on"] == sorted(service(mlflow)["depends_on"])


def test_the_iap_service_agent_is_the_only_invoker(mlflow):
    invokers = resources(mlflow, "google_cloud_run_v2_service_iam_member")
    assert [i["member"] for i in invokers.values()] == [
        "serviceAccount:service-123456789012@gcp-sa-iap.iam.gserviceaccount.com"
    ]
    assert [i["role"] for i in invokers.values()] == ["roles/run.invoker"]
    assert "google_cloud_run_v2_service_iam_binding" not in mlflow["resource"]
    assert "google_cloud_run_v2_service_iam_policy" not in mlflow["resource"]


def test_the_container_is_served_end_to_end_over_http2_so_uploads_are_not_capped_at_32_mib(mlflow):
    assert container(mlflow)["ports"] == {"container_port": 8080, "name": "h2c"}


def service_props(**change):
    container = ServerContainerProps(
        image="img:1",
        sql_connection_name="p:r:i",
        artifact_bucket="b",
        artifact_mount_path="/mnt/gcs",
        domain="mlflow.example.com",
        workers=1,
        pool_size=2,
        max_overflow=1,
        backend_store_secret_id="s",
        backend_store_secret_version="1",
    )
    placement = RunPlacement("p", "europe-west1", "sa@p.iam.gserviceaccount.com", "vpc", "subnet")
    props = dict(
        name="mlflow-server",
        placement=placement,
        container=container,
        cpu="1",
        memory="1Gi",
        min_instances=0,
        max_instances=2,
        concurrency=20,
        iap_audience="/projects/1/global/backendServices/2",
        gateway_key=GatewayKeyRef("k", "1", 1),
    )
    return TrackingServiceProps(**{**props, **change})


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"startup_allowance_seconds": 4},
            "TrackingServiceProps.startup_allowance_seconds: 4 must be a positive multiple of 5",
        ),
        ({"startup_allowance_seconds": 121}, "startup_allowance_seconds: 121"),
        ({"min_instances": 3}, "TrackingServiceProps.min_instances/max_instances: 3/2"),
        ({"concurrency": 0}, "TrackingServiceProps.concurrency: 0"),
        ({"name": ""}, "TrackingServiceProps.name: is empty"),
        ({"iap_audience": ""}, "TrackingServiceProps.iap_audience: is empty; give IAP's audience"),
        (
            {"iap_audience": "https://mlflow.example.com/*"},
            "TrackingServiceProps.iap_audience: 'https://mlflow.example.com/*' must be /projects/NUMBER/global/backendServices/ID or "
            "/projects/NUMBER/locations/REGION/services/NAME",
        ),
    ],
)
def test_a_tracking_service_refuses_props_that_make_no_sense(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        service_props(**change)


def test_a_tracking_service_takes_either_shape_of_iap_audience():
    """The load balancer's (its id known only at apply), or IAP's on Cloud Run itself."""
    for audience in ["/projects/1/global/backendServices/${google_compute_backend_service.b.generated_id}",
                     "/projects/1/locations/europe-west1/services/mlflow-server"]:  # fmt: skip
        assert service_props(iap_audience=audience).iap_audience == audience


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("workers", 0, "ServerContainerProps.workers: 0 must be 1 or more"),
        ("max_overflow", 0, "ServerContainerProps.max_overflow: 0"),
        ("artifact_mount_path", "/cloudsql", "ServerContainerProps.artifact_mount_path: '/cloudsql'"),
        ("artifact_mount_path", "mnt/gcs", "ServerContainerProps.artifact_mount_path: 'mnt/gcs'"),
        ("image", "", "ServerContainerProps.image: is empty"),
        (
            "iam_backend_store_uri",
            "postgresql+psycopg2://sa%40p.iam@/mlflow",
            "ServerContainerProps: give either iam_backend_store_uri",
        ),
        ("backend_store_secret_version", "", "ServerContainerProps: give either iam_backend_store_uri"),
    ],
)
def test_the_server_container_refuses_props_that_make_no_sense(field, value, message):
    base = service_props().container
    with pytest.raises(ValueError, match=re.escape(message)):
        dataclasses.replace(base, **{field: value})
