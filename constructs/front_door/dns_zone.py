"""Cloud DNS for the MLflow domain: a new DNSSEC-signed zone, or a record in a zone that exists."""

from __future__ import annotations

from dataclasses import dataclass

from constructs import Construct
from constructs.cdk.google.data_google_dns_managed_zone import DataGoogleDnsManagedZone
from constructs.cdk.google.dns_managed_zone import DnsManagedZone, DnsManagedZoneDnssecConfig
from constructs.cdk.google.dns_record_set import DnsRecordSet


@dataclass(frozen=True)
class DnsZoneProps:
    project: str
    zone_name: str
    domain: str
    ip_address: str
    # default: empty, a zone for `domain` is created and its name servers must be delegated by hand.
    existing_zone: str = ""

    def __post_init__(self) -> None:
        if not self.domain or self.domain.endswith("."):
            raise ValueError(f"DnsZoneProps.domain: {self.domain!r} must be a hostname without the trailing dot")
        if not self.existing_zone and not self.zone_name:
            raise ValueError("DnsZoneProps.zone_name: is empty; name the zone to create (or give existing_zone)")


class DnsZone(Construct):
    def __init__(self, scope: Construct, id: str, props: DnsZoneProps) -> None:
        super().__init__(scope, id)
        self._name_servers: list[str] | None = None
        if props.existing_zone:
            zone_name = DataGoogleDnsManagedZone(self, "zone", project=props.project, name=props.existing_zone).name
        else:
            zone = DnsManagedZone(
                self,
                "zone",
                project=props.project,
                name=props.zone_name,
                dns_name=f"{props.domain}.",
                description=f"MLflow at {props.domain}",
                visibility="public",
                dnssec_config=DnsManagedZoneDnssecConfig(state="on"),
                force_destroy=False,
            )
            zone_name = zone.name
            self._name_servers = zone.name_servers
        self._zone_name = zone_name
        DnsRecordSet(
            self,
            "a-record",
            project=props.project,
            managed_zone=zone_name,
            name=f"{props.domain}.",
            type="A",
            ttl=300,
            rrdatas=[props.ip_address],
        )

    @property
    def zone_name(self) -> str:
        return self._zone_name

    @property
    def name_servers(self) -> list[str] | None:
        """The servers to delegate `domain` to at the registrar; None when the zone already existed."""
        return self._name_servers
