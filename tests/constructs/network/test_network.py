"""Network: custom-mode VPC, one private subnet, deny-all ingress, private services access."""

import re

import pytest

from constructs.network.network import NetworkProps
from tests.synth import assert_matches, one, resource


def test_the_vpc_is_custom_mode(mlflow):
    assert_matches(one(mlflow, "google_compute_network"), {"name": "mlflow-vpc", "auto_create_subnetworks": False})


def test_the_subnet_has_private_google_access_and_flow_logs(mlflow):
    assert_matches(
        one(mlflow, "google_compute_subnetwork"),
        {
            "region": "europe-west1",
            "ip_cidr_range": "10.10.0.0/24",
            "private_ip_google_access": True,
            "log_config": {"aggregation_interval": "INTERVAL_10_MIN", "metadata": "INCLUDE_ALL_METADATA"},
        },
    )


def test_ingress_is_denied_by_default_and_logged(mlflow):
    firewalls = mlflow["resource"]["google_compute_firewall"]
    assert len(firewalls) == 1, "no rule may allow ingress"
    assert_matches(
        one(mlflow, "google_compute_firewall"),
        {"direction": "INGRESS", "source_ranges": ["0.0.0.0/0"], "deny": [{"protocol": "all"}], "log_config": {}},
    )


def test_private_services_access_reserves_the_configured_range_and_peers_it(mlflow):
    assert_matches(
        resource(mlflow, "google_compute_global_address", "network/private-services-range"),
        {"purpose": "VPC_PEERING", "address_type": "INTERNAL", "address": "10.20.0.0", "prefix_length": 20},
    )
    peering = one(mlflow, "google_service_networking_connection")
    assert peering["service"] == "servicenetworking.googleapis.com"
    assert peering["reserved_peering_ranges"] == [
        "${google_compute_global_address.network_private-services-range_64993B9D.name}"
    ]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"subnet_cidr": "10.10.0.0/33"}, "NetworkProps.subnet_cidr: '10.10.0.0/33' is not a network in CIDR form"),
        ({"subnet_cidr": "10.10.0.1/24"}, "NetworkProps.subnet_cidr: '10.10.0.1/24'"),
        (
            {"private_services_cidr": "8.8.0.0/20"},
            "NetworkProps.private_services_cidr: '8.8.0.0/20' must be a private IPv4 range",
        ),
        (
            {"private_services_cidr": "10.10.0.0/20"},
            "NetworkProps.private_services_cidr: '10.10.0.0/20' overlaps subnet_cidr",
        ),
        ({"flow_log_sampling": 0.0}, "NetworkProps.flow_log_sampling: 0.0"),
        ({"name": ""}, "NetworkProps.name: is empty"),
    ],
)
def test_a_network_refuses_props_that_make_no_sense(change, message):
    props = dict(
        project="p", region="europe-west1", name="vpc", subnet_cidr="10.10.0.0/24", private_services_cidr="10.20.0.0/20"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        NetworkProps(**{**props, **change})


def test_a_retried_first_apply_updates_the_existing_peering_instead_of_failing(mlflow):
    assert one(mlflow, "google_service_networking_connection")["update_on_creation_fail"] is True
