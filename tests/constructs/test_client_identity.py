"""Client identity: people's scripts act as one keyless account that IAP admits."""

from tests.synth import resources


def test_no_client_account_unless_impersonators_are_configured(mlflow):
    accounts = [a["account_id"] for a in resources(mlflow, "google_service_account").values()]
    assert accounts == ["mlflow-server"]


def test_the_listed_people_may_sign_as_the_client_account_and_nobody_else(mlflow_prod):
    account = [a for a in resources(mlflow_prod, "google_service_account").values() if a["account_id"] == "mlflow-client"]
    assert len(account) == 1
    grants = resources(mlflow_prod, "google_service_account_iam_member")
    assert [(g["role"], g["member"]) for g in grants.values()] == [
        ("roles/iam.serviceAccountTokenCreator", "group:ml-team@example.com")
    ]
    assert all(g["service_account_id"].startswith("${google_service_account.client-identity_account_") for g in grants.values())


def test_iap_admits_the_client_account_on_the_backend_service(mlflow_prod):
    members = [g["member"] for g in resources(mlflow_prod, "google_iap_web_backend_service_iam_member").values()]
    assert members[0] == "group:ml-platform@example.com"
    assert members[1].startswith("${google_service_account.client-identity_account_") and members[1].endswith(".member}")
    assert mlflow_prod["output"]["client_service_account"]["value"].endswith(".email}")
