"""Client identity: people's scripts act as one keyless account that IAP admits."""

import pytest

from constructs.client_identity import ClientIdentity, ClientIdentityProps
from tests.synth import addresses_by, resources, synth_construct

PEOPLE = ("user:ada@example.com", "group:ml-team@example.com", "user:bob@example.com")


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
    members = {k: g["member"] for k, g in resources(mlflow_prod, "google_iap_web_backend_service_iam_member").items()}
    assert members == {
        "front-door/iap-accessor-group-ml-platform-example-com": "group:ml-platform@example.com",
        "front-door/iap-accessor-client-identity": "${google_service_account.client-identity_account_240D0124.member}",
    }
    assert mlflow_prod["output"]["client_service_account"]["value"].endswith(".email}")


def impersonator_addresses(tmp_path, name, people):
    stack = synth_construct(tmp_path / name, lambda s: ClientIdentity(s, "client", ClientIdentityProps("p", "mlflow-client", people)))
    return addresses_by(stack, "google_service_account_iam_member", "member")


def test_removing_an_impersonator_leaves_every_other_grant_at_its_address(tmp_path):
    before = impersonator_addresses(tmp_path, "before", PEOPLE)
    after = impersonator_addresses(tmp_path, "after", PEOPLE[1:])
    assert len(set(before.values())) == 3
    assert after == {m: before[m] for m in PEOPLE[1:]}


@pytest.mark.parametrize(
    "people, message",
    [((), "ClientIdentityProps.impersonators: is empty"), (PEOPLE + PEOPLE[:1], "'user:ada@example.com' is listed twice")],
)
def test_a_client_identity_refuses_props_that_make_no_sense(people, message):
    with pytest.raises(ValueError, match=message):
        ClientIdentityProps("p", "mlflow-client", people)
