"""The one typed configuration object, loaded from TOML and validated once, at the edge.

Every problem in a file is collected and reported on one line that names the field, the value and
the fix, so a user fixes a config in one pass. The rest of the code trusts a `Config` it is given.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from constructs.cloud_run_iap import run_app_host
from constructs.cloudsql_socket import CLOUDSQL_MOUNT

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = REPO_ROOT / "config" / "example.toml"
CONFIG_ENV_VAR = "MLFLOW_CONFIG"

GCP_REGIONS = frozenset(
    """
    africa-south1 asia-east1 asia-east2 asia-northeast1 asia-northeast2 asia-northeast3 asia-south1
    asia-south2 asia-southeast1 asia-southeast2 asia-southeast3 australia-southeast1
    australia-southeast2 europe-central2 europe-north1 europe-north2 europe-southwest1 europe-west1
    europe-west2 europe-west3 europe-west4 europe-west6 europe-west8 europe-west9 europe-west10
    europe-west12 me-central1 me-central2 me-west1 northamerica-northeast1 northamerica-northeast2
    northamerica-south1 southamerica-east1 southamerica-west1 us-central1 us-east1 us-east4 us-east5
    us-south1 us-west1 us-west2 us-west3 us-west4
    """.split()
)

BUCKET_MULTI_REGIONS = frozenset({"EU", "US", "ASIA"})

# Cloud SQL for PostgreSQL default max_connections by tier memory (cloud.google.com/sql/docs/postgres/flags).
SHARED_CORE_MAX_CONNECTIONS = {"db-f1-micro": 25, "db-g1-small": 50}
# Upper bounds (exclusive, MB) of each band: 3.75-6 GB -> 100, 6-7.5 -> 200, ..., 120 GB and up -> 1000.
MEMORY_MAX_CONNECTIONS = ((6144, 100), (7680, 200), (15360, 400), (30720, 500), (61440, 600), (122880, 800))
MIN_CUSTOM_MEMORY_MB = 3840
# Memory (MiB) Cloud Run allows for each CPU count (cloud.google.com/run/docs/configuring/services/memory-limits).
CLOUD_RUN_MEMORY_PER_CPU = {"1": (512, 4096), "2": (512, 8192), "4": (2048, 16384), "8": (4096, 32768)}
# Connections Cloud SQL keeps for its own superuser (cloudsqladmin) and maintenance.
SQL_RESERVED_CONNECTIONS = 3
# Stores MLflow opens per server worker, each with its own SQLAlchemy pool (tracking, model registry).
MLFLOW_STORES_PER_WORKER = 2

PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
PROJECT_NUMBER = re.compile(r"^[0-9]{6,19}$")
NAME_PREFIX = re.compile(r"^[a-z][a-z0-9-]{0,13}[a-z0-9]$")
ENVIRONMENT = re.compile(r"^[a-z][a-z0-9]{0,9}$")
HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9]$")
SQL_TIER = re.compile(r"^(db-f1-micro|db-g1-small|db-custom-(\d+)-(\d+))$")
SQL_VERSION = re.compile(r"^POSTGRES_(1[4-8])$")
MEMORY = re.compile(r"^([1-9][0-9]*)(Mi|Gi)$")
IMAGE = re.compile(r"^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+(:[A-Za-z0-9._-]+|@sha256:[a-f0-9]{64})$")
ZONE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$")
OAUTH_CLIENT_ID = re.compile(r"^[0-9]+-[a-z0-9]+\.apps\.googleusercontent\.com$")
GITHUB_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
MEMBER_PREFIXES = ("user:", "group:", "serviceAccount:", "domain:")
# The tag docker/ is built and pushed with (README: gcloud builds submit); bump it with the image.
SERVER_IMAGE_TAG = "mlflow-3.17.2"


class ConfigError(Exception):
    """Raised with a one-line message listing every problem found in a configuration."""


@dataclass(frozen=True)
class StateConfig:
    bucket: str
    location: str = "EU"
    # default: "local", the bootstrap stack's own state is a file beside cdktf.json until the bucket
    # exists; "bucket" keeps it in that bucket under `bootstrap/` (README: moving the bootstrap state).
    bootstrap_state: str = "local"


@dataclass(frozen=True)
class NetworkConfig:
    subnet_cidr: str = "10.10.0.0/24"
    private_services_cidr: str = "10.20.0.0/20"


@dataclass(frozen=True)
class DatabaseConfig:
    tier: str = "db-f1-micro"
    disk_size_gb: int = 10
    version: str = "POSTGRES_18"
    backup_retention_days: int = 7
    password_revision: int = 1

    @property
    def max_connections(self) -> int:
        if self.tier in SHARED_CORE_MAX_CONNECTIONS:
            return SHARED_CORE_MAX_CONNECTIONS[self.tier]
        memory_mb = int(SQL_TIER.match(self.tier).group(3))
        for below_mb, connections in MEMORY_MAX_CONNECTIONS:
            if memory_mb < below_mb:
                return connections
        return 1000


@dataclass(frozen=True)
class ServerConfig:
    image: str = ""
    cpu: str = "1"
    memory: str = "1Gi"
    min_instances: int = 0
    max_instances: int = 2
    concurrency: int = 20
    workers: int = 1
    pool_size: int = 2
    max_overflow: int = 1
    artifact_mount_path: str = "/mnt/gcs"

    @property
    def connections_per_instance(self) -> int:
        return self.workers * MLFLOW_STORES_PER_WORKER * (self.pool_size + self.max_overflow)


@dataclass(frozen=True)
class DnsConfig:
    existing_zone: str = ""


@dataclass(frozen=True)
class CiConfig:
    github_repository: str = ""


# --- Front door mode (issue 16): a separate block so the pydantic port (#19) can lift it. ---------
FRONT_DOOR_MODES = ("load_balancer", "direct_iap")


@dataclass(frozen=True)
class FrontDoorConfig:
    """How users reach MLflow. "load_balancer": the global external Application Load Balancer with
    IAP on its backend service, a managed certificate for `domain` and DNS. "direct_iap": IAP on the
    Cloud Run service itself, reached at its run.app URL; no load balancer, certificate or DNS."""

    mode: str = "load_balancer"


def _validate_front_door(cfg: "Config", problems: list[str]) -> None:
    mode = cfg.front_door.mode
    if mode not in FRONT_DOOR_MODES:
        problems.append(f"front_door.mode: {mode!r} is not a mode; use \"load_balancer\" (default) or \"direct_iap\"")
        return
    if mode != "direct_iap":
        return
    host = cfg.direct_iap_host
    if cfg.domain != host:
        problems.append(
            f"domain: {cfg.domain!r} is a custom domain, which direct_iap cannot serve (no load balancer, no "
            f"certificate); write domain = \"{host}\" (the service's run.app host) or use mode = \"load_balancer\""
        )
    if cfg.dns != DnsConfig():
        problems.append(
            "dns.existing_zone: direct_iap creates no DNS record (users open the run.app URL); remove the [dns] "
            "table or use front_door.mode = \"load_balancer\""
        )
    if cfg.iap_programmatic_clients:
        problems.append(
            "iap_programmatic_clients: only the load balancer's IAP settings are managed here; remove them in "
            "direct_iap (the client plugin needs none) or use front_door.mode = \"load_balancer\""
        )
    if cfg.iap_oauth_client != IapOauthClientConfig():
        problems.append(
            "iap_oauth_client.client_id: direct_iap is built here for the Google-managed OAuth client only (project in an "
            "organization, members from it); remove [iap_oauth_client] or use front_door.mode = \"load_balancer\""
        )
# --- end of the front door block ---


# --- First deploy in an organization with secure-by-default policies (issue 14) ----------------------
@dataclass(frozen=True)
class IapOauthClientConfig:
    """A custom OAuth client for IAP, for projects outside an organization or members outside it.

    Empty `client_id`: IAP uses the Google-managed client, which admits only the organization's users.
    The secret is never in a file: Terraform reads it from TF_VAR_iap_oauth_client_secret at plan
    and apply (an ephemeral variable) and sends it as a write-only argument.
    """

    client_id: str = ""
    # Bump after changing the secret in TF_VAR_iap_oauth_client_secret, so the apply sends it again.
    secret_version: int = 1


# --- Operations (#18): alerts and budget. A separate block so the pydantic port (#19) can lift it. ---
BILLING_ACCOUNT = re.compile(r"^[0-9A-F]{6}-[0-9A-F]{6}-[0-9A-F]{6}$")
# Fraction of the SQL tier's max_connections at which the connection alert fires, by default.
DEFAULT_CONNECTIONS_PERCENT = 80


@dataclass(frozen=True)
class AlertsConfig:
    """No `[alerts]` table (no e-mails) means no channels, no policies and no dashboard."""

    emails: tuple[str, ...] = ()
    error_ratio_percent: int = 5
    latency_p95_ms: int = 2000
    sql_cpu_percent: int = 80
    sql_disk_percent: int = 80
    connections_percent: int = DEFAULT_CONNECTIONS_PERCENT

    @property
    def enabled(self) -> bool:
        return bool(self.emails)


@dataclass(frozen=True)
class BudgetConfig:
    """No `[budget]` table means no budget; `billing_account` is what turns it on."""

    billing_account: str = ""
    monthly_usd: int = 0


def _validate_operations(cfg: "Config", problems: list[str]) -> None:
    a, b = cfg.alerts, cfg.budget
    if not a.emails and a != AlertsConfig():
        problems.append("alerts.emails: is empty; thresholds alone notify nobody, so list who gets the alerts")
    for email in a.emails:
        if not EMAIL.match(email):
            problems.append(f"alerts.emails: {email!r} is not an e-mail address; write e.g. \"ml-platform@example.com\"")
    if len(set(a.emails)) != len(a.emails):
        problems.append("alerts.emails: lists an address twice; list each address once")
    for name in ("error_ratio_percent", "sql_cpu_percent", "sql_disk_percent", "connections_percent"):
        value = getattr(a, name)
        if not 1 <= value <= 100:
            problems.append(f"alerts.{name}: {value} must be a percentage between 1 and 100")
    if not 1 <= a.latency_p95_ms <= 900_000:
        problems.append(f"alerts.latency_p95_ms: {a.latency_p95_ms} must be between 1 and 900000 (the request timeout)")
    if b.billing_account and not BILLING_ACCOUNT.match(b.billing_account):
        problems.append(
            f"budget.billing_account: {b.billing_account!r} is not a billing account id; write the XXXXXX-XXXXXX-XXXXXX "
            "that `gcloud billing projects describe PROJECT_ID` prints after billingAccounts/"
        )
    if b.billing_account and b.monthly_usd < 1:
        problems.append(f"budget.monthly_usd: {b.monthly_usd} must be 1 or more; set the monthly amount in whole US dollars")
    if b.monthly_usd and not b.billing_account:
        problems.append("budget.billing_account: missing; a budget needs the billing account that pays for the project")


def alert_thresholds(cfg: "Config") -> dict[str, float]:
    """Thresholds derived from the config: what the monitoring construct is given."""
    return {
        "error_ratio": cfg.alerts.error_ratio_percent / 100,
        "latency_p95_ms": cfg.alerts.latency_p95_ms,
        "max_instances": cfg.server.max_instances,
        "sql_cpu": cfg.alerts.sql_cpu_percent / 100,
        "sql_disk": cfg.alerts.sql_disk_percent / 100,
        # The tier's limit, not the deployment's planned peak: running out of it is what breaks MLflow.
        "sql_connections": max(1, cfg.database.max_connections * cfg.alerts.connections_percent // 100),
    }
# --- end of the operations block ---


@dataclass(frozen=True)
class Config:
    environment: str
    project_id: str
    project_number: str
    region: str
    domain: str
    iap_members: tuple[str, ...]
    state: StateConfig
    name_prefix: str = "mlflow"
    artifact_location: str = ""
    iap_programmatic_clients: tuple[str, ...] = ()
    client_impersonators: tuple[str, ...] = ()
    network: NetworkConfig = NetworkConfig()
    database: DatabaseConfig = DatabaseConfig()
    server: ServerConfig = ServerConfig()
    dns: DnsConfig = DnsConfig()
    ci: CiConfig = CiConfig()
    # --- issue 14 ---
    # Domains of the organization's directory (domain-restricted sharing): user:/group:/domain: members
    # elsewhere are refused at synth instead of at apply. Empty: not checked.
    allowed_domains: tuple[str, ...] = ()
    # Who may run the `image_build_command` output (iam.serviceAccountUser on the build account).
    image_builders: tuple[str, ...] = ()
    iap_oauth_client: IapOauthClientConfig = IapOauthClientConfig()
    alerts: AlertsConfig = AlertsConfig()
    budget: BudgetConfig = BudgetConfig()
    front_door: FrontDoorConfig = FrontDoorConfig()

    @property
    def server_service_name(self) -> str:
        return f"{self.name_prefix}-server"

    @property
    def direct_iap_host(self) -> str:
        return run_app_host(self.server_service_name, self.project_number, self.region)

    @property
    def registry_repository(self) -> str:
        return f"{self.name_prefix}-images"

    @property
    def server_image(self) -> str:
        """The configured image, or the tag `gcloud builds submit` pushes to this environment's registry."""
        return self.server.image or (
            f"{self.region}-docker.pkg.dev/{self.project_id}/{self.registry_repository}/mlflow-server:{SERVER_IMAGE_TAG}"
        )

    @property
    def migration_connections(self) -> int:
        return MLFLOW_STORES_PER_WORKER * (self.server.pool_size + self.server.max_overflow)

    @property
    def connection_budget(self) -> tuple[int, int]:
        """(connections the deployment may open at peak, connections the SQL tier allows)."""
        peak = (
            self.server.max_instances * self.server.connections_per_instance
            + self.migration_connections
            + SQL_RESERVED_CONNECTIONS
        )
        return peak, self.database.max_connections


_SECTIONS = {
    "state": StateConfig,
    "network": NetworkConfig,
    "database": DatabaseConfig,
    "server": ServerConfig,
    "dns": DnsConfig,
    "ci": CiConfig,
    "iap_oauth_client": IapOauthClientConfig,
    "alerts": AlertsConfig,
    "budget": BudgetConfig,
    "front_door": FrontDoorConfig,
}


def _check_types(raw: dict[str, Any], cls: type, prefix: str, problems: list[str]) -> dict[str, Any]:
    """Keep the keys `cls` knows with the right TOML type; report unknown, missing and mistyped keys."""
    known = {f.name: f for f in fields(cls)}
    kept: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        kind = known[key].type if key in known else None
        if kind is None:
            problems.append(f"{name}: unknown key; remove it (known: {', '.join(sorted(known))})")
        elif key in _SECTIONS and not prefix:
            if isinstance(value, dict):
                before = len(problems)
                section = _check_types(value, _SECTIONS[key], f"{key}.", problems)
                if len(problems) == before:
                    kept[key] = _SECTIONS[key](**section)
            else:
                problems.append(f"{name}: must be a [{key}] table")
        elif kind == "tuple[str, ...]":
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                kept[key] = tuple(value)
            else:
                problems.append(f"{name}: must be a list of quoted strings")
        elif kind == "int" and (not isinstance(value, int) or isinstance(value, bool)):
            problems.append(f"{name}: must be a whole number, got {value!r}")
        elif kind == "str" and not isinstance(value, str):
            problems.append(f"{name}: must be a quoted string, got {value!r}")
        else:
            kept[key] = value
    for key, field in known.items():
        if field.default is MISSING and field.default_factory is MISSING and key not in raw:
            hint = f"a [{key}] table" if key in _SECTIONS and not prefix else f"{prefix}{key} = ..."
            problems.append(f"{prefix}{key}: missing; add {hint} to the file")
    return kept


def _validate(cfg: Config, problems: list[str]) -> None:
    if not ENVIRONMENT.match(cfg.environment):
        problems.append(
            f"environment: {cfg.environment!r} is not 1-10 lowercase letters/digits starting with a letter; "
            "use e.g. \"dev\" or \"prod\""
        )
    if not PROJECT_ID.match(cfg.project_id):
        problems.append(
            f"project_id: {cfg.project_id!r} is not a Google Cloud project id; use 6-30 lowercase letters, "
            "digits or hyphens, starting with a letter (e.g. \"acme-mlflow-dev\")"
        )
    if not PROJECT_NUMBER.match(cfg.project_number):
        problems.append(
            f"project_number: {cfg.project_number!r} is not a project number; quote the digits that "
            "`gcloud projects describe PROJECT_ID --format='value(projectNumber)'` prints"
        )
    if cfg.region not in GCP_REGIONS:
        problems.append(f"region: {cfg.region!r} is not a Google Cloud region; use one such as \"europe-west1\"")
    if not NAME_PREFIX.match(cfg.name_prefix):
        problems.append(
            f"name_prefix: {cfg.name_prefix!r} must be 2-15 lowercase letters, digits or hyphens, starting "
            "with a letter and not ending with a hyphen"
        )
    labels = cfg.domain.split(".")
    if len(cfg.domain) > 253 or len(labels) < 2 or not all(HOST_LABEL.match(l) for l in labels) or labels[-1].isdigit():
        problems.append(
            f"domain: {cfg.domain!r} is not a lowercase hostname; use the name users will open, e.g. "
            "\"mlflow.example.com\""
        )
    if not cfg.iap_members:
        problems.append("iap_members: is empty; list who may use MLflow, e.g. [\"group:ml-team@example.com\"]")
    for member in cfg.iap_members:
        kind, _, value = member.partition(":")
        valid = (
            member.startswith(MEMBER_PREFIXES)
            and (EMAIL.match(value) if kind != "domain" else all(HOST_LABEL.match(l) for l in value.split(".")) and "." in value)
        )
        if not valid:
            problems.append(
                f"iap_members: {member!r} is not an IAM member; write user:EMAIL, group:EMAIL, "
                "serviceAccount:EMAIL or domain:DOMAIN (allUsers and allAuthenticatedUsers are refused)"
            )
    for member in cfg.client_impersonators:
        kind, _, value = member.partition(":")
        if kind not in ("user", "group", "serviceAccount") or not EMAIL.match(value):
            problems.append(
                f"client_impersonators: {member!r} is not an IAM member; write user:EMAIL, group:EMAIL or serviceAccount:EMAIL"
            )
    for client in cfg.iap_programmatic_clients:
        if not OAUTH_CLIENT_ID.match(client):
            problems.append(
                f"iap_programmatic_clients: {client!r} is not an OAuth client id; write NUMBER-ID.apps.googleusercontent.com"
            )
    if (
        not BUCKET.match(cfg.state.bucket)
        or ".." in cfg.state.bucket
        or cfg.state.bucket.startswith("goog")
    ):
        problems.append(
            f"state.bucket: {cfg.state.bucket!r} is not a valid bucket name; use 3-63 lowercase letters, "
            "digits, hyphens, dots or underscores, e.g. \"acme-mlflow-tfstate\""
        )
    if cfg.state.bootstrap_state not in ("local", "bucket"):
        problems.append(f"state.bootstrap_state: {cfg.state.bootstrap_state!r} is not a place; use \"local\" or \"bucket\"")
    if cfg.state.location not in BUCKET_MULTI_REGIONS | GCP_REGIONS:
        problems.append(f"state.location: {cfg.state.location!r} is not a bucket location; use a region or EU, US or ASIA")
    _validate_network(cfg.network, problems)
    _validate_database(cfg.database, problems)
    _validate_server(cfg.server, problems)
    if cfg.dns.existing_zone and not ZONE_NAME.match(cfg.dns.existing_zone):
        problems.append(f"dns.existing_zone: {cfg.dns.existing_zone!r} is not a Cloud DNS zone name; leave it empty to create a zone")
    if cfg.ci.github_repository and not GITHUB_REPO.match(cfg.ci.github_repository):
        problems.append(f"ci.github_repository: {cfg.ci.github_repository!r} must be OWNER/REPO")
    _validate_organization_fit(cfg, problems)
    _validate_operations(cfg, problems)
    _validate_front_door(cfg, problems)
    if cfg.artifact_location and cfg.artifact_location not in BUCKET_MULTI_REGIONS | GCP_REGIONS:
        problems.append(
            f"artifact_location: {cfg.artifact_location!r} is not a bucket location; use a region or EU/US/ASIA, "
            "or remove it to use the region"
        )
    if not problems:
        peak, allowed = cfg.connection_budget
        if peak > allowed:
            s = cfg.server
            problems.append(
                f"server: connection budget exceeded: {s.max_instances} instances x {s.workers} workers x "
                f"{MLFLOW_STORES_PER_WORKER} stores x ({s.pool_size} pool + {s.max_overflow} overflow) "
                f"+ {cfg.migration_connections} migration + {SQL_RESERVED_CONNECTIONS} reserved = {peak} > "
                f"{allowed} max_connections of {cfg.database.tier}; lower server.max_instances, workers or "
                "pool_size, or pick a larger database.tier"
            )


def _member_domain(member: str) -> str:
    kind, _, value = member.partition(":")
    return value.lower() if kind == "domain" else value.rpartition("@")[2].lower()


def _validate_organization_fit(cfg: Config, problems: list[str]) -> None:
    """Issue 14: what an organization's policies would reject at apply, refused at synth."""
    for domain in cfg.allowed_domains:
        if "." not in domain or not all(HOST_LABEL.match(l) for l in domain.split(".")):
            problems.append(f"allowed_domains: {domain!r} is not a domain; write e.g. \"example.com\"")
    if cfg.allowed_domains:
        allowed = {d.lower() for d in cfg.allowed_domains}
        listed = [("iap_members", m) for m in cfg.iap_members] + [("client_impersonators", m) for m in cfg.client_impersonators]
        listed += [("image_builders", m) for m in cfg.image_builders]
        for key, member in listed:
            # A service account's email names its project, not a directory domain: not judged here.
            if not member.startswith("serviceAccount:") and _member_domain(member) not in allowed:
                problems.append(
                    f"{key}: {member!r} is outside allowed_domains ({', '.join(sorted(allowed))}), so domain-restricted "
                    "sharing would refuse the grant; remove it, or add its domain to allowed_domains if your "
                    "organization allows it"
                )
    for member in cfg.image_builders:
        kind, _, value = member.partition(":")
        if kind not in ("user", "group", "serviceAccount") or not EMAIL.match(value):
            problems.append(f"image_builders: {member!r} is not an IAM member; write user:EMAIL, group:EMAIL or serviceAccount:EMAIL")
    oauth = cfg.iap_oauth_client
    if oauth.client_id and not OAUTH_CLIENT_ID.match(oauth.client_id):
        problems.append(
            f"iap_oauth_client.client_id: {oauth.client_id!r} is not an OAuth client id; write "
            "NUMBER-ID.apps.googleusercontent.com, or leave it empty for the Google-managed client"
        )
    if oauth.secret_version < 1:
        problems.append(f"iap_oauth_client.secret_version: {oauth.secret_version} must be 1 or more; bump it to send a new secret")


def _validate_network(net: NetworkConfig, problems: list[str]) -> None:
    parsed = {}
    for name in ("subnet_cidr", "private_services_cidr"):
        value = getattr(net, name)
        try:
            network = ipaddress.ip_network(value, strict=True)
        except ValueError:
            problems.append(f"network.{name}: {value!r} is not a CIDR range; write it like \"10.10.0.0/24\"")
            continue
        if network.version != 4 or not network.is_private:
            problems.append(f"network.{name}: {value!r} must be a private IPv4 range (10/8, 172.16/12, 192.168/16)")
            continue
        parsed[name] = network
    services = parsed.get("private_services_cidr")
    if services is not None and services.prefixlen > 24:
        problems.append(
            f"network.private_services_cidr: {services} is smaller than the /24 Google requires; use /24 or larger (e.g. /20)"
        )
    if len(parsed) == 2 and parsed["subnet_cidr"].overlaps(services):
        problems.append(
            f"network: subnet_cidr {parsed['subnet_cidr']} overlaps private_services_cidr {services}; "
            "pick ranges that do not overlap"
        )
    subnet = parsed.get("subnet_cidr")
    if subnet is not None and subnet.prefixlen > 26:
        problems.append(f"network.subnet_cidr: {subnet} is too small for Cloud Run direct VPC egress; use /26 or larger")


def _validate_database(db: DatabaseConfig, problems: list[str]) -> None:
    tier = SQL_TIER.match(db.tier)
    if not tier:
        problems.append(
            f"database.tier: {db.tier!r} is not a Cloud SQL for PostgreSQL tier; use db-f1-micro, db-g1-small "
            "or db-custom-CPUS-MEMORY_MB (e.g. db-custom-1-3840)"
        )
    elif tier.group(2):
        cpus, memory = int(tier.group(2)), int(tier.group(3))
        if (
            not (cpus == 1 or cpus % 2 == 0)
            or cpus > 96
            or memory % 256
            or memory < MIN_CUSTOM_MEMORY_MB
            or not 0.9 * 1024 * cpus <= memory <= 6.5 * 1024 * cpus
        ):
            problems.append(
                f"database.tier: {db.tier!r} has no valid CPU/memory shape; use 1 or an even number of CPUs, "
                "0.9-6.5 GB per CPU and at least 3840 MB, in multiples of 256 MB (e.g. db-custom-2-7680)"
            )
    if not 10 <= db.disk_size_gb <= 65536:
        problems.append(f"database.disk_size_gb: {db.disk_size_gb} must be between 10 and 65536")
    if not SQL_VERSION.match(db.version):
        problems.append(f"database.version: {db.version!r} is not supported; use POSTGRES_14 to POSTGRES_18 (default POSTGRES_18)")
    if db.password_revision < 1:
        problems.append(f"database.password_revision: {db.password_revision} must be 1 or more; bump it to rotate")
    if not 1 <= db.backup_retention_days <= 365:
        problems.append(f"database.backup_retention_days: {db.backup_retention_days} must be between 1 and 365")


def _validate_server(s: ServerConfig, problems: list[str]) -> None:
    if s.image and not IMAGE.match(s.image):
        problems.append(
            f"server.image: {s.image!r} is not a pinned image reference; write REGISTRY/PATH:TAG or "
            "REGISTRY/PATH@sha256:DIGEST, or remove it to use this environment's Artifact Registry"
        )
    if s.cpu not in {"1", "2", "4", "8"}:
        problems.append(f"server.cpu: {s.cpu!r} must be \"1\", \"2\", \"4\" or \"8\"")
    memory = MEMORY.match(s.memory)
    if not memory:
        problems.append(f"server.memory: {s.memory!r} must look like \"1Gi\" or \"768Mi\"")
    else:
        mib = int(memory.group(1)) * (1024 if memory.group(2) == "Gi" else 1)
        if not 512 <= mib <= 32768:
            problems.append(f"server.memory: {s.memory} must be between 512Mi and 32Gi")
        elif s.cpu in CLOUD_RUN_MEMORY_PER_CPU:
            low, high = CLOUD_RUN_MEMORY_PER_CPU[s.cpu]
            if not low <= mib <= high:
                problems.append(
                    f"server.memory: {s.memory} does not fit {s.cpu} CPU on Cloud Run; use {low}Mi to {high // 1024}Gi "
                    "or change server.cpu"
                )
    if s.min_instances < 0:
        problems.append(f"server.min_instances: {s.min_instances} must be 0 or more")
    if not 1 <= s.max_instances <= 100 or s.max_instances < s.min_instances:
        problems.append(f"server.max_instances: {s.max_instances} must be 1-100 and at least min_instances ({s.min_instances})")
    if not 1 <= s.concurrency <= 1000:
        problems.append(f"server.concurrency: {s.concurrency} must be between 1 and 1000")
    if not 1 <= s.workers <= 8:
        problems.append(f"server.workers: {s.workers} must be between 1 and 8")
    if s.pool_size < 1:
        problems.append(f"server.pool_size: {s.pool_size} must be 1 or more")
    if s.max_overflow < 1:
        problems.append(
            f"server.max_overflow: {s.max_overflow} is ignored by MLflow (0 falls back to its default of 10); "
            "use 1 or more"
        )
    if not s.artifact_mount_path.startswith("/") or s.artifact_mount_path in {"/", CLOUDSQL_MOUNT}:
        problems.append(f"server.artifact_mount_path: {s.artifact_mount_path!r} must be an absolute path such as \"/mnt/gcs\"")


# --- #21: each IAM grant is keyed by its member, so a member may be listed only once. ---
def _validate_unique_members(cfg: Config, problems: list[str]) -> None:
    for name in ("iap_members", "client_impersonators"):
        members = [m.lower() for m in getattr(cfg, name)]
        for member in sorted({m for m in members if members.count(m) > 1}):
            problems.append(f"{name}: {member!r} is listed more than once (emails ignore case); list each member once")


def parse_config(text: str, source: str = "<config>") -> Config:
    """Parse and validate one TOML document; raise ConfigError with every problem on one line."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: not valid TOML ({error}); fix the syntax") from None
    problems: list[str] = []
    kept = _check_types(raw, Config, "", problems)
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    cfg = Config(**kept)
    _validate(cfg, problems)
    _validate_unique_members(cfg, problems)
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    return cfg


def load_configs(selection: str | None = None) -> list[Config]:
    """Load the environments named by MLFLOW_CONFIG (comma-separated TOML paths), or the example."""
    selection = os.environ.get(CONFIG_ENV_VAR, "") if selection is None else selection
    paths = [p.strip() for p in selection.split(",") if p.strip()] or [str(EXAMPLE_CONFIG)]
    configs = []
    for path in paths:
        file = Path(path)
        if not file.is_absolute() and not file.exists():
            file = REPO_ROOT / path
        try:
            text = file.read_text()
        except OSError as error:
            raise ConfigError(
                f"{CONFIG_ENV_VAR}: cannot read {path!r} ({error.strerror}); set it to config files that exist, "
                "e.g. config/dev.toml"
            ) from None
        configs.append(parse_config(text, path))
    _validate_together(configs)
    return configs


def _validate_together(configs: list[Config]) -> None:
    environments = [c.environment for c in configs]
    duplicates = sorted({e for e in environments if environments.count(e) > 1})
    if duplicates:
        raise ConfigError(f"environment: {', '.join(duplicates)} appears in more than one file; give each file its own environment")
    placements = [(c.project_id, c.name_prefix) for c in configs]
    clashes = sorted({f"{p}/{n}" for p, n in placements if placements.count((p, n)) > 1})
    if clashes:
        raise ConfigError(
            f"name_prefix: environments share project and prefix {', '.join(clashes)}, so their resource names "
            "collide; give each environment in a project its own name_prefix"
        )
    buckets = {c.state.bucket for c in configs}
    if len(buckets) > 1:
        raise ConfigError(
            f"state.bucket: environments use different state buckets ({', '.join(sorted(buckets))}); "
            "the bootstrap stack makes one, so use the same bucket in every file"
        )
