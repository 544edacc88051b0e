"""[access] (config/teams.toml, in the app): what the tracking service gets for MLflow's own
permissions. The example has no [access]: none of it, and today's behaviour."""

import json
import re

import pytest

from constructs.identity.access_control import AccessControlProps
from tests.synth import assert_matches, env_of, one, resources


def service_env(stack):
    return env_of(one(stack, "google_cloud_run_v2_service")["template"]["containers"][0])


def test_the_server_gets_the_access_model_as_data(mlflow_teams, teams_config):
    model = json.loads(service_env(mlflow_teams)["MLFLOW_IAP_ACCESS"])
    assert model == {
        "admins": ["group:ml-platform@example.com"],
        "others": "read",
        "teams": [
            {"name": "vision", "workspace": "vision",
             "members": ["group:vision@example.com", "serviceAccount:mlteams-client@example-mlflow-teams.iam.gserviceaccount.com"]},
            {"name": "ranking", "workspace": "default", "members": ["group:ranking@example.com"]},
        ],
    }  # fmt: skip
    assert model == teams_config.access.server_model()


def test_the_bootstrap_admin_password_is_generated_and_only_in_secret_manager(mlflow_teams):
    version = resources(mlflow_teams, "google_secret_manager_secret_version")["access-control/admin-secret-version"]
    assert version["secret_data_wo"] == "${ephemeral.random_password.access-control_admin-password.result}"
    assert "random_password" not in mlflow_teams["resource"], "an ephemeral password: in no state"
    assert "secret_data" not in version
    assert service_env(mlflow_teams)["MLFLOW_AUTH_ADMIN_PASSWORD"] == {
        "secret_key_ref": {
            "secret": "${google_secret_manager_secret.access-control_admin-secret_5B536F8B.secret_id}",
            "version": "${google_secret_manager_secret_version.access-control_admin-secret-version_7BBFDB4B.version}",
        }
    }
    assert_matches(
        resources(mlflow_teams, "google_secret_manager_secret")["access-control/admin-secret"],
        {"secret_id": "mlteams-mlflow-bootstrap-admin", "replication": {"user_managed": {"replicas": [{"location": "europe-west1"}]}},
         "lifecycle": {"prevent_destroy": True}},
    )  # fmt: skip


def test_only_the_server_account_reads_the_admin_secret_and_the_service_waits_for_it(mlflow_teams):
    grant = resources(mlflow_teams, "google_secret_manager_secret_iam_member")["access-control/server-reads-admin"]
    # The server's account is the project stack's (issue 28): named here by its e-mail.
    assert grant["member"] == "serviceAccount:mlteams-server@example-mlflow-teams.iam.gserviceaccount.com"
    assert grant["role"] == "roles/secretmanager.secretAccessor"
    service = one(mlflow_teams, "google_cloud_run_v2_service")
    assert "google_secret_manager_secret_iam_member.access-control_server-reads-admin_E20B6A7E" in service["depends_on"]


def test_groups_turn_on_the_cloud_identity_api_and_name_the_admin_step(app, mlflow_teams):
    services = {s["service"] for s in resources(app.stacks["mlflow-teams-project"], "google_project_service").values()}
    assert "cloudidentity.googleapis.com" in services
    assert "Groups Reader" in mlflow_teams["output"]["groups_reader_step"]["value"]
    assert mlflow_teams["output"]["groups_reader_step"]["value"].endswith(
        ": mlteams-server@example-mlflow-teams.iam.gserviceaccount.com"
    )


def test_without_access_nothing_of_it_exists(app, mlflow):
    assert not {"MLFLOW_IAP_ACCESS", "MLFLOW_AUTH_ADMIN_PASSWORD"} & set(service_env(mlflow))
    assert "random_password" not in mlflow.get("resource", {})
    services = {
        s["service"] for s in resources(app.stacks["mlflow-example-project"], "google_project_service").values()
    }
    assert "cloudidentity.googleapis.com" not in services
    assert "groups_reader_step" not in mlflow["output"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"secret_id": ""}, "AccessControlProps.secret_id: is empty"),
        ({"model": {"teams": []}}, "AccessControlProps.model: has no teams"),
    ],
)
def test_access_control_refuses_props_that_make_no_sense(change, message):
    props = dict(
        project="p", region="r", secret_id="s", model={"teams": [{"name": "aa", "workspace": "aa", "members": []}]}
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        AccessControlProps(**{**props, **change})
