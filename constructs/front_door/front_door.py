"""The global external Application Load Balancer in front of the MLflow service, with IAP on it."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from constructs import Construct
from constructs.cdk import TerraformResourceLifecycle, Token
from constructs.cdk.google.compute_backend_service import (
    ComputeBackendService,
    ComputeBackendServiceBackend,
    ComputeBackendServiceIap,
    ComputeBackendServiceLogConfig,
)
from constructs.cdk.google.compute_global_address import ComputeGlobalAddress
from constructs.cdk.google.compute_global_forwarding_rule import ComputeGlobalForwardingRule
from constructs.cdk.google.compute_managed_ssl_certificate import (
    ComputeManagedSslCertificate,
    ComputeManagedSslCertificateManaged,
)
from constructs.cdk.google.compute_region_network_endpoint_group import (
    ComputeRegionNetworkEndpointGroup,
    ComputeRegionNetworkEndpointGroupCloudRun,
)
from constructs.cdk.google.compute_ssl_policy import ComputeSslPolicy
from constructs.cdk.google.compute_target_http_proxy import ComputeTargetHttpProxy
from constructs.cdk.google.compute_target_https_proxy import ComputeTargetHttpsProxy
from constructs.cdk.google.compute_url_map import ComputeUrlMap, ComputeUrlMapDefaultUrlRedirect
from constructs.cdk.google.iap_settings import (
    IapSettings,
    IapSettingsAccessSettings,
    IapSettingsAccessSettingsOauthSettings,
)
from constructs.cdk.google.iap_web_backend_service_iam_member import IapWebBackendServiceIamMember
from constructs.identity.iam_members import keyed_members, member_key


@dataclass(frozen=True)
class FrontDoorProps:
    project: str
    project_number: str
    region: str
    name: str
    domain: str
    # The Cloud Run service's name, a plain string rather than a reference to the service: the
    # service's environment carries this backend service's id (IAP's audience), so the service
    # depends on the load balancer, never the other way round. A serverless NEG may name a service
    # that does not exist yet.
    cloud_run_service: str
    # Who may use MLflow, granted on this backend service only (never project-wide), each grant
    # keyed by its member.
    iap_members: tuple[str, ...]
    # default: none. Service-account signed JWTs (the client plugin) need no allowlist; list OAuth
    # client ids here only for callers that send ID tokens minted for their own OAuth client.
    iap_programmatic_clients: tuple[str, ...] = ()
    # default: none. Accounts this deployment creates (their member is known only at apply), each
    # under a stable key of the caller's choosing, e.g. {"client-identity": client.member}.
    iap_accounts: Mapping[str, str] = field(default_factory=dict)
    # default: empty, IAP uses the Google-managed OAuth client, which admits only users of the
    # project's organization. A custom client (for projects outside an organization, or members
    # outside it) needs its secret as well: a reference to an ephemeral value, never a literal.
    oauth_client_id: str = ""
    oauth_client_secret: str = ""
    # Bump to send a changed secret again (the write-only argument is not in state to compare).
    oauth_client_secret_version: int = 1

    def __post_init__(self) -> None:
        for name in ("project", "name", "domain"):
            if not getattr(self, name):
                raise ValueError(f"FrontDoorProps.{name}: is empty; give the load balancer's {name}")
        if not self.cloud_run_service or "${" in self.cloud_run_service:
            raise ValueError(
                f"FrontDoorProps.cloud_run_service: {self.cloud_run_service!r} must be the service's name as a plain "
                "string, not a reference to the service (which depends on this backend service for IAP's audience)"
            )
        if not self.iap_members and not self.iap_accounts:
            raise ValueError("FrontDoorProps.iap_members: is empty; IAP would admit nobody, list who may use MLflow")
        keys = keyed_members("FrontDoorProps.iap_members", self.iap_members)
        for key in self.iap_accounts:
            if not key or member_key(key) != key or key in keys:
                raise ValueError(
                    f"FrontDoorProps.iap_accounts: key {key!r} must be lowercase letters, digits and hyphens "
                    "and differ from every member's key"
                )
        if bool(self.oauth_client_id) != bool(self.oauth_client_secret):
            raise ValueError("oauth_client_id and oauth_client_secret: set both for a custom OAuth client, or neither")
        if self.oauth_client_secret and not self.oauth_client_secret.startswith("${"):
            raise ValueError(
                "oauth_client_secret: pass a Terraform reference (an ephemeral variable), never the secret itself"
            )


class FrontDoor(Construct):
    """HTTPS on 443 with a Google-managed certificate and a RESTRICTED TLS 1.2+ policy; port 80 only
    redirects. IAP uses the Google-managed OAuth client (no brand, no client, no secret in state)
    unless a custom client is given; its secret is then a write-only argument, in no state either."""

    def __init__(self, scope: Construct, id: str, props: FrontDoorProps) -> None:
        super().__init__(scope, id)
        self._project_number = props.project_number
        self._address = ComputeGlobalAddress(
            self, "address", project=props.project, name=f"{props.name}-ip", address_type="EXTERNAL", ip_version="IPV4"
        )
        self._backend = self._iap_backend(props)
        self._grant_iap_access(props)
        https_proxy = self._https_proxy(props)
        http_proxy = self._http_redirect_proxy(props)
        for scheme, port, proxy in (("https", "443", https_proxy.id), ("http", "80", http_proxy.id)):
            ComputeGlobalForwardingRule(
                self,
                f"{scheme}-forwarding-rule",
                project=props.project,
                name=f"{props.name}-{scheme}",
                load_balancing_scheme="EXTERNAL_MANAGED",
                ip_address=self._address.id,
                port_range=port,
                target=proxy,
            )

    def _iap_backend(self, props: FrontDoorProps) -> ComputeBackendService:
        """The backend service, IAP on, in front of the Cloud Run service through a serverless NEG."""
        neg = ComputeRegionNetworkEndpointGroup(
            self,
            "serverless-neg",
            project=props.project,
            region=props.region,
            name=f"{props.name}-neg",
            network_endpoint_type="SERVERLESS",
            cloud_run=ComputeRegionNetworkEndpointGroupCloudRun(service=props.cloud_run_service),
        )
        backend = ComputeBackendService(
            self,
            "backend",
            project=props.project,
            name=f"{props.name}-backend",
            load_balancing_scheme="EXTERNAL_MANAGED",
            protocol="HTTPS",
            backend=[ComputeBackendServiceBackend(group=neg.id)],
            log_config=ComputeBackendServiceLogConfig(enable=True, sample_rate=1.0),
            iap=ComputeBackendServiceIap(enabled=True, oauth2_client_id=props.oauth_client_id or None),
        )
        if props.oauth_client_id:
            # Write-only in provider 8 (`oauth2_client_secret_wo`): neither plan nor state holds it.
            # Set by override because the 6.50 binding predates the argument.
            backend.add_override("iap.oauth2_client_secret_wo", props.oauth_client_secret)
            backend.add_override("iap.oauth2_client_secret_wo_version", str(props.oauth_client_secret_version))
        return backend

    def _grant_iap_access(self, props: FrontDoorProps) -> None:
        """Who may pass IAP, on this backend service only; which OAuth clients' tokens it accepts."""
        accessors = {**keyed_members("iap_members", props.iap_members), **props.iap_accounts}
        for key, member in accessors.items():
            IapWebBackendServiceIamMember(
                self,
                f"iap-accessor-{key}",
                project=props.project,
                web_backend_service=self._backend.name,
                role="roles/iap.httpsResourceAccessor",
                member=member,
            )
        if props.iap_programmatic_clients:
            IapSettings(
                self,
                "iap-settings",
                name=f"projects/{props.project_number}/iap_web/compute/services/{self._backend.name}",
                access_settings=IapSettingsAccessSettings(
                    oauth_settings=IapSettingsAccessSettingsOauthSettings(
                        programmatic_clients=list(props.iap_programmatic_clients)
                    )
                ),
            )

    def _https_proxy(self, props: FrontDoorProps) -> ComputeTargetHttpsProxy:
        """HTTPS with the managed certificate and the RESTRICTED TLS 1.2+ policy, routed to the backend."""
        n = props.name
        https_map = ComputeUrlMap(
            self, "https-url-map", project=props.project, name=f"{n}-https", default_service=self._backend.id
        )
        # A certificate in use cannot be deleted: a new domain gets a new name and replaces it first.
        self._certificate = ComputeManagedSslCertificate(
            self,
            "certificate",
            project=props.project,
            name=f"{n}-cert-{hashlib.sha256(props.domain.encode()).hexdigest()[:8]}",
            managed=ComputeManagedSslCertificateManaged(domains=[props.domain]),
            lifecycle=TerraformResourceLifecycle(create_before_destroy=True),
        )
        tls_policy = ComputeSslPolicy(
            self, "tls-policy", project=props.project, name=f"{n}-tls", profile="RESTRICTED", min_tls_version="TLS_1_2"
        )
        return ComputeTargetHttpsProxy(
            self,
            "https-proxy",
            project=props.project,
            name=f"{n}-https",
            url_map=https_map.id,
            ssl_certificates=[self._certificate.id],
            ssl_policy=tls_policy.id,
        )

    def _http_redirect_proxy(self, props: FrontDoorProps) -> ComputeTargetHttpProxy:
        """Port 80 only redirects to HTTPS, query kept."""
        redirect_map = ComputeUrlMap(
            self,
            "http-redirect",
            project=props.project,
            name=f"{props.name}-http-redirect",
            default_url_redirect=ComputeUrlMapDefaultUrlRedirect(
                https_redirect=True, strip_query=False, redirect_response_code="MOVED_PERMANENTLY_DEFAULT"
            ),
        )
        return ComputeTargetHttpProxy(
            self, "http-proxy", project=props.project, name=f"{props.name}-http", url_map=redirect_map.id
        )

    @property
    def ip_address(self) -> str:
        return self._address.address

    @property
    def certificate_name(self) -> str:
        return self._certificate.name

    @property
    def backend_service_name(self) -> str:
        return self._backend.name

    @property
    def iap_audience(self) -> str:
        """The audience of the JWT IAP signs each request with (`x-goog-iap-jwt-assertion`):
        this backend service, by project number and the id Google assigns it at creation."""
        backend_id = Token.as_string(self._backend.generated_id)
        return f"/projects/{self._project_number}/global/backendServices/{backend_id}"
