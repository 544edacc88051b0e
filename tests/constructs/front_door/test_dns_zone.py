"""DNS: a DNSSEC-signed zone for the domain (or a record in an existing zone) pointing at the LB."""

import re

import pytest

from constructs.front_door.dns_zone import DnsZoneProps
from tests.synth import assert_matches, one


def test_a_new_zone_is_public_dnssec_signed_and_kept(mlflow):
    assert_matches(
        one(mlflow, "google_dns_managed_zone"),
        {
            "dns_name": "mlflow.example.com.",
            "visibility": "public",
            "dnssec_config": {"state": "on"},
            "force_destroy": False,
        },
    )


def test_the_a_record_points_at_the_static_ip(mlflow):
    assert_matches(
        one(mlflow, "google_dns_record_set"),
        {
            "name": "mlflow.example.com.",
            "type": "A",
            "rrdatas": ["${google_compute_global_address.front-door_address_DFE2E206.address}"],
            "managed_zone": "${google_dns_managed_zone.dns_zone_2E2729FB.name}",
        },
    )


def test_name_servers_are_an_output_when_the_zone_is_created_here(mlflow):
    assert mlflow["output"]["name_servers"]["value"] == "${google_dns_managed_zone.dns_zone_2E2729FB.name_servers}"


def test_an_existing_zone_is_read_not_created(mlflow_prod):
    assert "google_dns_managed_zone" not in mlflow_prod["resource"]
    assert (
        one(mlflow_prod, "google_dns_record_set")["managed_zone"]
        == "${data.google_dns_managed_zone.dns_zone_2E2729FB.name}"
    )
    assert mlflow_prod["data"]["google_dns_managed_zone"]["dns_zone_2E2729FB"]["name"] == "example-com"
    assert "name_servers" not in mlflow_prod["output"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"domain": "mlflow.example.com."}, "DnsZoneProps.domain: 'mlflow.example.com.'"),
        ({"zone_name": ""}, "DnsZoneProps.zone_name: is empty"),
    ],
)
def test_a_dns_zone_refuses_props_that_make_no_sense(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        DnsZoneProps(
            **{**dict(project="p", zone_name="z", domain="mlflow.example.com", ip_address="1.2.3.4"), **change}
        )
