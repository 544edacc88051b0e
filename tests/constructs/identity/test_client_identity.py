"""Client identities: each person's scripts act as a keyless account of their own, which IAP admits."""

import pytest

from constructs.identity.client_identity import ClientIdentity, ClientIdentityProps, client_account_id
from tests.synth import addresses_by, resources, synth_construct

PEOPLE = ("user:ada@example.com", "group:ml-team@example.com", "user:bob@example.com")
PROD_CLIENT = "serviceAccount:mlflow-c-{}@example-mlflow-prod.iam.gserviceaccount.com"


def test_no_client_account_unless_impersonators_are_configured(app):
    for stack in ("mlflow-example-project", "mlflow-example"):
        accounts = [a["account_id"] for a in resources(app.stacks[stack], "google_service_account").values()]
        assert not [a for a in accounts if "-c-" in a], accounts


def test_each_listed_member_may_sign_as_its_own_account_and_nobody_else(app):
    stack = app.stacks["mlflow-prod-project"]
    accounts = {k: a for k, a in resources(stack, "google_service_account").items() if k.startswith("client-identity/")}
    assert {k: a["account_id"] for k, a in accounts.items()} == {
        "client-identity/account-group-ml-team-example-com": client_account_id("mlflow", "group:ml-team@example.com")
    }
    grants = {
        k: g
        for k, g in resources(stack, "google_service_account_iam_member").items()
        if k.startswith("client-identity/")
    }
    assert [(g["role"], g["member"], g["service_account_id"]) for g in grants.values()] == [
        (
            "roles/iam.serviceAccountTokenCreator",
            "group:ml-team@example.com",
            "${google_service_account.client-identity_account-group-ml-team-example-com_97AD1DA2.name}",
        )
    ]


def test_iap_admits_each_client_account_on_the_backend_service(mlflow_prod):
    members = {k: g["member"] for k, g in resources(mlflow_prod, "google_iap_web_backend_service_iam_member").items()}
    assert members == {
        "front-door/iap-accessor-group-ml-platform-example-com": "group:ml-platform@example.com",
        "front-door/iap-accessor-client-group-ml-team-example-com": PROD_CLIENT.format(
            client_account_id("mlflow", "group:ml-team@example.com").removeprefix("mlflow-c-")
        ),
    }


def test_the_accounts_are_an_output_keyed_by_member(app):
    output = app.stacks["mlflow-prod-project"]["output"]["client_service_accounts"]["value"]
    assert output == {
        "group:ml-team@example.com": "${google_service_account.client-identity_account-group-ml-team-example-com_97AD1DA2.email}"
    }


def test_account_ids_are_valid_distinct_and_ignore_the_case_of_the_email():
    ids = [client_account_id("a-15-char-prefx", m) for m in PEOPLE]
    assert len(set(ids)) == 3 and all(len(i) <= 30 and i[0].isalpha() for i in ids)
    assert client_account_id("mlflow", "user:Ada@Example.com") == client_account_id("mlflow", "user:ada@example.com")


def client_addresses(tmp_path, name, people, type_="google_service_account_iam_member"):
    stack = synth_construct(
        tmp_path / name, lambda s: ClientIdentity(s, "client", ClientIdentityProps("p", "mlflow", people))
    )
    return addresses_by(stack, type_, "member" if type_.endswith("_member") else "account_id")


def test_adding_or_removing_a_person_leaves_every_other_account_and_grant_at_its_address(tmp_path):
    before = client_addresses(tmp_path, "before", PEOPLE)
    after = client_addresses(tmp_path, "after", (*PEOPLE[1:], "user:cy@example.com"))
    assert len(set(before.values())) == 3
    assert {m: after[m] for m in PEOPLE[1:]} == {m: before[m] for m in PEOPLE[1:]}
    accounts_before = client_addresses(tmp_path, "accounts-before", PEOPLE, "google_service_account")
    accounts_after = client_addresses(tmp_path, "accounts-after", PEOPLE[1:], "google_service_account")
    assert accounts_after == {i: accounts_before[i] for i in accounts_after}


@pytest.mark.parametrize(
    "people, message",
    [
        ((), "ClientIdentityProps.impersonators: is empty"),
        (PEOPLE + PEOPLE[:1], "'user:ada@example.com' is listed twice"),
    ],
)
def test_a_client_identity_refuses_props_that_make_no_sense(people, message):
    with pytest.raises(ValueError, match=message):
        ClientIdentityProps("p", "mlflow", people)
