"""Cloud SQL: private IP only, TLS, backups with PITR, protected from deletion, CIS logging flags, IAM login."""

import json
import re

import pytest

from constructs.data.sql_database import SqlDatabaseProps
from tests.synth import assert_matches, one, resource


def test_the_instance_has_no_public_ip_and_uses_the_private_path(mlflow):
    ip = one(mlflow, "google_sql_database_instance")["settings"]["ip_configuration"]
    assert_matches(
        ip,
        {
            "ipv4_enabled": False,
            "enable_private_path_for_google_cloud_services": True,
            "private_network": "${google_compute_network.network_vpc_4E8F0223.id}",
            "ssl_mode": "TRUSTED_CLIENT_CERTIFICATE_REQUIRED",
            "server_ca_mode": "GOOGLE_MANAGED_INTERNAL_CA",
        },
    )
    assert "authorized_networks" not in ip


def test_it_waits_for_private_services_access(mlflow):
    assert one(mlflow, "google_sql_database_instance")["depends_on"] == [
        "google_service_networking_connection.network_private-services-access_1A239364"
    ]


def test_backups_and_point_in_time_recovery_are_on(mlflow):
    assert_matches(
        one(mlflow, "google_sql_database_instance")["settings"]["backup_configuration"],
        {"enabled": True, "point_in_time_recovery_enabled": True, "backup_retention_settings": {"retained_backups": 7}},
    )


def test_deletion_is_refused_by_terraform_and_by_the_api(mlflow):
    instance = one(mlflow, "google_sql_database_instance")
    assert instance["deletion_protection"] is True
    assert instance["settings"]["deletion_protection_enabled"] is True
    assert instance["lifecycle"] == {"prevent_destroy": True}


def test_size_version_and_edition_come_from_config(mlflow, mlflow_prod):
    assert_matches(
        one(mlflow, "google_sql_database_instance"),
        {
            "database_version": "POSTGRES_18",
            "settings": {"tier": "db-f1-micro", "disk_size": 10, "disk_type": "PD_SSD", "edition": "ENTERPRISE"},
        },
    )
    assert one(mlflow_prod, "google_sql_database_instance")["settings"]["tier"] == "db-custom-2-7680"


def test_query_insights_and_the_cis_logging_flags_are_on(mlflow):
    settings = one(mlflow, "google_sql_database_instance")["settings"]
    assert settings["insights_config"]["query_insights_enabled"] is True
    flags = {f["name"]: f["value"] for f in settings["database_flags"]}
    assert_matches(
        flags,
        {
            "log_checkpoints": "on",
            "log_connections": "on",
            "log_disconnections": "on",
            "log_duration": "on",
            "log_lock_waits": "on",
            "log_min_duration_statement": "-1",
            "log_min_error_statement": "error",
            "log_min_messages": "error",
            "log_statement": "ddl",
            "log_temp_files": "0",
            "cloudsql.enable_pgaudit": "on",
        },
    )


# --- IAM login, the default ------------------------------------------------------------------------

SERVER_ACCOUNT_EMAIL = "mlflow-server@example-mlflow-project.iam.gserviceaccount.com"


def test_by_default_no_password_is_generated_and_the_user_is_the_servers_iam_user(mlflow):
    assert "random_password" not in mlflow["resource"]
    user = one(mlflow, "google_sql_user")
    assert_matches(
        user,
        {
            "type": "CLOUD_IAM_SERVICE_ACCOUNT",
            # Cloud SQL names a service account's IAM user by its e-mail without the domain's suffix.
            "name": SERVER_ACCOUNT_EMAIL.removesuffix(".gserviceaccount.com"),
            "deletion_policy": "ABANDON",
        },
    )
    assert not {"password", "password_wo", "password_wo_version"} & set(user)


def test_the_iam_user_gets_the_database_owner_role_that_postgres_15_requires_to_create_in_public(mlflow):
    """API-created databases belong to cloudsqlsuperuser; tests/server/test_iam_login.py shows that
    without this membership MLflow's migration is refused ("permission denied for schema public")."""
    assert one(mlflow, "google_sql_user")["database_roles"] == ["cloudsqlsuperuser"]


def test_iam_authentication_is_on_only_where_users_log_in_with_iam(mlflow, mlflow_prod):
    def flags(stack):
        return {f["name"]: f["value"] for f in one(stack, "google_sql_database_instance")["settings"]["database_flags"]}

    assert flags(mlflow)["cloudsql.iam_authentication"] == "on"
    assert "cloudsql.iam_authentication" not in flags(mlflow_prod)


# --- password login (the prod-like environment) ------------------------------------------------------


def test_with_password_login_the_password_is_generated_and_only_passed_write_only(mlflow_prod):
    password = one(mlflow_prod, "random_password")
    assert password["length"] >= 32
    user = one(mlflow_prod, "google_sql_user")
    assert user["password_wo"] == "${random_password.database_password_22A6A8E7.result}"
    assert user["name"] == "mlflow" and "type" not in user and "database_roles" not in user
    assert "password" not in user


def test_bumping_the_password_revision_rotates_password_user_and_secret(mlflow_prod):
    """The prod-like environment has `password_revision = 2`: all three must follow it."""
    assert one(mlflow_prod, "random_password")["keepers"] == {"revision": "2"}
    assert one(mlflow_prod, "google_sql_user")["password_wo_version"] == 2
    assert (
        resource(mlflow_prod, "google_secret_manager_secret_version", "backend-store-uri/version")[
            "secret_data_wo_version"
        ]
        == "2"
    )


def test_no_literal_password_or_sensitive_output_anywhere(app):
    for name, stack in app.stacks.items():
        text = json.dumps(stack)
        assert '"password": "' not in text and "root_password" not in text, name
        for output_name, output in stack.get("output", {}).items():
            assert "random_password" not in json.dumps(output), f"{name}.{output_name} exposes the password"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"password_revision": 0}, "SqlDatabaseProps.password_revision: 0 must be 1 or more"),
        ({"backup_retention_days": 0}, "SqlDatabaseProps.backup_retention_days: 0"),
        ({"disk_size_gb": 5}, "SqlDatabaseProps.disk_size_gb: 5"),
        ({"instance_name": ""}, "SqlDatabaseProps: instance_name ''"),
        (
            {"iam_service_account_email": "ml@example.com"},
            "SqlDatabaseProps.iam_service_account_email: 'ml@example.com' is not a service account's e-mail",
        ),
    ],
)
def test_a_database_refuses_props_that_make_no_sense(change, message):
    props = dict(
        project="p",
        region="europe-west1",
        instance_name="db",
        database_version="POSTGRES_18",
        tier="db-f1-micro",
        disk_size_gb=10,
        network_id="n",
        private_services_access=None,
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        SqlDatabaseProps(**{**props, **change})


def test_with_iam_login_no_resource_has_a_password_or_secret_argument(mlflow):
    """The example's Terraform (and so its state) holds no password: no argument of that kind anywhere
    but the AI gateway's key, which only ever goes write-only from an ephemeral value into its secret
    and the service's reference to that secret (tests/constructs/data/test_gateway_key_secret.py)."""

    def keys(value, path=""):
        if isinstance(value, dict):
            for key, inner in value.items():
                yield f"{path}.{key}"
                yield from keys(inner, f"{path}.{key}")
        elif isinstance(value, list):
            for index, inner in enumerate(value):
                yield from keys(inner, f"{path}.{index}")

    service = mlflow["resource"]["google_cloud_run_v2_service"]
    [(service_name, body)] = service.items()
    [key_env] = [
        i for i, e in enumerate(body["template"]["containers"][0]["env"]) if e["name"] == "MLFLOW_CRYPTO_KEK_PASSPHRASE"
    ]
    secret_types = [t for t in mlflow["resource"] if t.startswith("google_secret_manager_secret")]
    assert all(name.startswith("gateway-key_") for t in secret_types for name in mlflow["resource"][t])
    gateway_key = (
        *(f".{t}" for t in secret_types),
        f".google_cloud_run_v2_service.{service_name}.template.containers.0.env.{key_env}.value_source.secret_key_ref",
    )
    found = [k for k in keys(mlflow["resource"]) if re.search(r"password|secret|_wo$", k.rsplit(".", 1)[-1])]
    assert [k for k in found if not k.startswith(gateway_key)] == []
