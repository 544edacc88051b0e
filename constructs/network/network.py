"""The VPC: one private subnet for Cloud Run egress and private services access for Cloud SQL."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from constructs import Construct
from constructs.cdk import ITerraformDependable
from constructs.cdk.google.compute_firewall import ComputeFirewall, ComputeFirewallDeny, ComputeFirewallLogConfig
from constructs.cdk.google.compute_global_address import ComputeGlobalAddress
from constructs.cdk.google.compute_network import ComputeNetwork
from constructs.cdk.google.compute_subnetwork import ComputeSubnetwork, ComputeSubnetworkLogConfig
from constructs.cdk.google.service_networking_connection import ServiceNetworkingConnection


@dataclass(frozen=True)
class NetworkProps:
    project: str
    region: str
    name: str
    subnet_cidr: str
    private_services_cidr: str
    # default: flow logs sampled at 50% with 10-minute aggregation (cheap, enough for forensics).
    flow_log_sampling: float = 0.5

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("NetworkProps.name: is empty; name the VPC")
        ranges = {}
        for name in ("subnet_cidr", "private_services_cidr"):
            value = getattr(self, name)
            try:
                ranges[name] = ipaddress.ip_network(value)
            except ValueError:
                raise ValueError(
                    f"NetworkProps.{name}: {value!r} is not a network in CIDR form, e.g. 10.10.0.0/24"
                ) from None
            if not ranges[name].is_private or ranges[name].version != 4:
                raise ValueError(f"NetworkProps.{name}: {value!r} must be a private IPv4 range")
        if ranges["subnet_cidr"].overlaps(ranges["private_services_cidr"]):
            raise ValueError(
                f"NetworkProps.private_services_cidr: {self.private_services_cidr!r} overlaps subnet_cidr {self.subnet_cidr!r}"
            )
        if not 0 < self.flow_log_sampling <= 1:
            raise ValueError(f"NetworkProps.flow_log_sampling: {self.flow_log_sampling} must be in (0, 1]")


class Network(Construct):
    """Custom-mode VPC with nothing reachable from outside: a deny-all ingress rule is logged."""

    def __init__(self, scope: Construct, id: str, props: NetworkProps) -> None:
        super().__init__(scope, id)
        self._network = ComputeNetwork(
            self, "vpc", project=props.project, name=props.name, auto_create_subnetworks=False
        )
        self._subnet = ComputeSubnetwork(
            self,
            "subnet",
            project=props.project,
            region=props.region,
            name=f"{props.name}-{props.region}",
            network=self._network.id,
            ip_cidr_range=props.subnet_cidr,
            private_ip_google_access=True,
            log_config=ComputeSubnetworkLogConfig(
                aggregation_interval="INTERVAL_10_MIN",
                flow_sampling=props.flow_log_sampling,
                metadata="INCLUDE_ALL_METADATA",
            ),
        )
        ComputeFirewall(
            self,
            "deny-all-ingress",
            project=props.project,
            name=f"{props.name}-deny-all-ingress",
            network=self._network.id,
            direction="INGRESS",
            priority=65534,
            source_ranges=["0.0.0.0/0"],
            deny=[ComputeFirewallDeny(protocol="all")],
            log_config=ComputeFirewallLogConfig(metadata="INCLUDE_ALL_METADATA"),
        )
        services_range = ipaddress.ip_network(props.private_services_cidr)
        reserved = ComputeGlobalAddress(
            self,
            "private-services-range",
            project=props.project,
            name=f"{props.name}-private-services",
            purpose="VPC_PEERING",
            address_type="INTERNAL",
            address=str(services_range.network_address),
            prefix_length=services_range.prefixlen,
            network=self._network.id,
        )
        self._peering = ServiceNetworkingConnection(
            self,
            "private-services-access",
            network=self._network.id,
            service="servicenetworking.googleapis.com",
            reserved_peering_ranges=[reserved.name],
            # Create fails with "Cannot modify allocated ranges in CreateConnection" when the network
            # already has a connection (a retried first apply, hashicorp/terraform-provider-google#16697);
            # this makes the provider update it instead, so a failed first deploy can be re-run.
            update_on_creation_fail=True,
        )

    @property
    def network_id(self) -> str:
        return self._network.id

    @property
    def network_name(self) -> str:
        return self._network.name

    @property
    def subnet_name(self) -> str:
        return self._subnet.name

    @property
    def private_services_access(self) -> ITerraformDependable:
        """Cloud SQL with a private IP can only be created after this peering exists."""
        return self._peering
