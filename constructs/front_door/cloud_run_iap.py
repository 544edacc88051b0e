"""Who may pass IAP when IAP sits on the Cloud Run service itself (no load balancer)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from constructs import Construct
from constructs.cdk.google.iap_web_cloud_run_service_iam_member import IapWebCloudRunServiceIamMember
from constructs.identity.iam_members import keyed_members, member_key


@dataclass(frozen=True)
class CloudRunIapProps:
    project: str
    region: str
    # The service with `iap_enabled` (TrackingServiceProps.direct_iap).
    service_name: str
    # Who may use MLflow, granted on this service's IAP resource only (never project-wide), each
    # grant keyed by its member.
    iap_members: tuple[str, ...]
    # default: none. Accounts this deployment creates (member known only at apply), under stable keys.
    iap_accounts: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("project", "region", "service_name"):
            if not getattr(self, name):
                raise ValueError(f"CloudRunIapProps.{name}: is empty; give the IAP-enabled service's {name}")
        if not self.iap_members and not self.iap_accounts:
            raise ValueError("CloudRunIapProps.iap_members: is empty; IAP would admit nobody, list who may use MLflow")
        keys = keyed_members("CloudRunIapProps.iap_members", self.iap_members)
        for key in self.iap_accounts:
            if not key or member_key(key) != key or key in keys:
                raise ValueError(
                    f"CloudRunIapProps.iap_accounts: key {key!r} must be lowercase letters, digits and hyphens "
                    "and differ from every member's key"
                )


class CloudRunIap(Construct):
    """`roles/iap.httpsResourceAccessor` on `projects/NUMBER/iap_web/cloud_run-REGION/services/NAME`.

    The service's only invoker stays the IAP service agent (TrackingService.grant_invoker); these
    grants decide who IAP lets through. With the Google-managed OAuth client, which this variant uses,
    IAP admits only identities of the project's organization.
    """

    def __init__(self, scope: Construct, id: str, props: CloudRunIapProps) -> None:
        super().__init__(scope, id)
        accessors = {**keyed_members("iap_members", props.iap_members), **props.iap_accounts}
        for key, member in accessors.items():
            IapWebCloudRunServiceIamMember(
                self,
                f"iap-accessor-{key}",
                project=props.project,
                location=props.region,
                cloud_run_service_name=props.service_name,
                role="roles/iap.httpsResourceAccessor",
                member=member,
            )
