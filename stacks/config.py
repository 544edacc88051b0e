"""The one typed configuration object, loaded from TOML and validated once, at the edge.

A pydantic model: types, defaults, unknown and missing keys are the library's; our domain checks sit
next to their fields. Checks of one field always run; checks across fields (model validators) run on
the fields that are valid, also when others failed (`_checks_across_fields`). Every problem of a file
is reported at once, one line each: "file: field: what is wrong — the fix" (written "...; the fix" here). Nothing here imports a CDK runtime, so refusing is instant.
To add a key: one line in its section, `name: checked(test, "{value!r} is ...; fix") = Field(default,
description=...)` (or `within(low, high)`, `listed(Item)`), a model validator only for a check across
fields; then `python -m stacks.config_docs` regenerates the schema and the README's table.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import runpy
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from pydantic_core import ErrorDetails

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = REPO_ROOT / "config" / "example.toml"
# The files config/ ships with; any other TOML there is someone's environment.
SHIPPED_CONFIGS = ("example.toml", "direct-iap.toml")
CONFIG_ENV_VAR = "MLFLOW_CONFIG"


# The one definition of the Cloud SQL socket path, read as a file: importing `constructs.` anything starts Node.
CLOUDSQL_MOUNT = runpy.run_path(str(REPO_ROOT / "constructs" / "data" / "cloudsql_socket.py"))["CLOUDSQL_MOUNT"]
run_app_host = runpy.run_path(str(REPO_ROOT / "constructs" / "serving" / "run_url.py"))["run_app_host"]

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
# Fraction of the SQL tier's max_connections at which the connection alert fires, by default.
DEFAULT_CONNECTIONS_PERCENT = 80
# The tag docker/ is built and pushed with (README: gcloud builds submit); bump it with the image.
SERVER_IMAGE_TAG = "mlflow-3.17.2"

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
SQL_INSTANCE = re.compile(r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$")
ZONE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$")
OAUTH_CLIENT_ID = re.compile(r"^[0-9]+-[a-z0-9]+\.apps\.googleusercontent\.com$")
GITHUB_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
BILLING_ACCOUNT = re.compile(r"^[0-9A-F]{6}-[0-9A-F]{6}-[0-9A-F]{6}$")


class ConfigError(Exception):
    """Raised with every problem found in a configuration, one line each: `file: field: problem — fix`."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]

    @classmethod
    def of(cls, source: str, problems: list[str]) -> ConfigError:
        lines = [
            f"{source}: {as_problem_and_fix(p)}" if source else as_problem_and_fix(p) for p in dict.fromkeys(problems)
        ]
        return cls("\n".join(lines), lines)


def as_problem_and_fix(problem: str) -> str:
    """`field: what is wrong; the fix` -> `field: what is wrong — the fix` (the first `; ` parts them)."""
    return problem.replace("; ", " — ", 1) if " — " not in problem else problem


class Problems(ValueError):
    """Raised by a model validator: each item is a whole "section.field: what is wrong; the fix"."""

    def __init__(self, items: list[str]) -> None:
        super().__init__("; ".join(items))
        self.items = items


def _raise(problems: list[str]) -> None:
    if problems:
        raise Problems(problems)


# --- Checked types: a type, its check and its one-line refusal ("{value!r}" is the value given) -------


def checked(ok: Callable[[Any], Any], problem: str, kind: type = str, *, empty_ok: bool = False, **schema: Any) -> Any:
    """`kind`, refused with `problem` unless `ok(value)` (or it is "" and `empty_ok`); `schema`: JSON Schema keywords."""

    def check(value: Any) -> Any:
        if not (empty_ok and value == "") and not ok(value):
            raise ValueError(problem.format(value=value))
        return value

    return Annotated[kind, AfterValidator(check), Field(json_schema_extra=schema or None)]


def within(low: int, high: int | None = None, why: str = "") -> Any:
    """A whole number from `low` to `high` (None: no upper bound)."""
    bounds = f"between {low} and {high}" if high is not None else f"{low} or more"
    schema: dict[str, Any] = {"minimum": low} | ({"maximum": high} if high is not None else {})
    return checked(
        lambda v: v >= low and (high is None or v <= high), f"{{value}} must be {bounds}{why}", int, **schema
    )


def listed(item: Any, name: str = "member") -> Any:
    """A TOML array of `item`, each listed once (IAM grants are keyed by member; emails ignore case)."""

    def unique(values: tuple[str, ...]) -> tuple[str, ...]:
        lowered = [v.lower() for v in values]
        if twice := sorted({v for v in lowered if lowered.count(v) > 1}):
            raise ValueError(
                f"{', '.join(map(repr, twice))} is listed more than once (emails ignore case); list each {name} once"
            )
        return values

    return Annotated[tuple[item, ...], AfterValidator(unique), Field(strict=False)]


def is_domain(value: str) -> bool:
    return "." in value and all(HOST_LABEL.match(label) for label in value.split("."))


def is_hostname(value: str) -> bool:
    return len(value) <= 253 and is_domain(value) and not value.rpartition(".")[2].isdigit()


def is_member(value: str, kinds: tuple[str, ...] = ("user", "group", "serviceAccount")) -> bool:
    kind, _, identity = value.partition(":")
    return kind in kinds and bool(is_domain(identity) if kind == "domain" else EMAIL.match(identity))


def nearest(value: str, names: Any) -> str:
    match = difflib.get_close_matches(value, sorted(names), n=1, cutoff=0.5)
    return f"did you mean `{match[0]}`?" if match else ""


# Other clouds' region names (and their cities) -> the Google Cloud region in the same place or nearest.
OTHER_CLOUDS_REGIONS = {
    # AWS
    "us-east-1": "us-east4",
    "us-east-2": "us-east5",
    "us-west-1": "us-west2",
    "us-west-2": "us-west1",
    "ca-central-1": "northamerica-northeast1",
    "ca-west-1": "northamerica-northeast2",
    "mx-central-1": "northamerica-south1",
    "sa-east-1": "southamerica-east1",
    "eu-west-1": "europe-west1",
    "eu-west-2": "europe-west2",
    "eu-west-3": "europe-west9",
    "eu-central-1": "europe-west3",
    "eu-central-2": "europe-west6",
    "eu-north-1": "europe-north2",
    "eu-south-1": "europe-west8",
    "eu-south-2": "europe-southwest1",
    "ap-southeast-1": "asia-southeast1",
    "ap-southeast-2": "australia-southeast1",
    "ap-southeast-3": "asia-southeast2",
    "ap-southeast-4": "australia-southeast2",
    "ap-northeast-1": "asia-northeast1",
    "ap-northeast-2": "asia-northeast3",
    "ap-northeast-3": "asia-northeast2",
    "ap-south-1": "asia-south1",
    "ap-south-2": "asia-south1",
    "ap-east-1": "asia-east2",
    "me-central-1": "me-central1",
    "me-south-1": "me-central2",
    "il-central-1": "me-west1",
    "af-south-1": "africa-south1",
    # Azure
    "eastus": "us-east4",
    "eastus2": "us-east4",
    "centralus": "us-central1",
    "northcentralus": "us-central1",
    "southcentralus": "us-south1",
    "westcentralus": "us-west3",
    "westus": "us-west2",
    "westus2": "us-west1",
    "westus3": "us-west4",
    "canadacentral": "northamerica-northeast2",
    "canadaeast": "northamerica-northeast1",
    "mexicocentral": "northamerica-south1",
    "brazilsouth": "southamerica-east1",
    "westeurope": "europe-west4",
    "northeurope": "europe-west1",
    "uksouth": "europe-west2",
    "ukwest": "europe-west2",
    "francecentral": "europe-west9",
    "germanywestcentral": "europe-west3",
    "switzerlandnorth": "europe-west6",
    "swedencentral": "europe-north2",
    "norwayeast": "europe-north1",
    "italynorth": "europe-west8",
    "spaincentral": "europe-southwest1",
    "polandcentral": "europe-central2",
    "southeastasia": "asia-southeast1",
    "eastasia": "asia-east2",
    "japaneast": "asia-northeast1",
    "japanwest": "asia-northeast2",
    "koreacentral": "asia-northeast3",
    "centralindia": "asia-south1",
    "australiaeast": "australia-southeast1",
    "australiasoutheast": "australia-southeast2",
    "southafricanorth": "africa-south1",
    "qatarcentral": "me-central1",
    "israelcentral": "me-west1",
}
# The first word of a region name -> the prefix of Google's regions in that geography.
GEOGRAPHIES = {
    "eu": "europe-",
    "europe": "europe-",
    "uk": "europe-",
    "us": "us-",
    "ca": "northamerica-",
    "northamerica": "northamerica-",
    "sa": "southamerica-",
    "southamerica": "southamerica-",
    "ap": "asia-",
    "asia": "asia-",
    "australia": "australia-",
    "me": "me-",
    "il": "me-",
    "af": "africa-",
    "africa": "africa-",
}


def region_hint(value: str) -> str:
    """`did you mean …?` with a region in the same place or geography, never across an ocean by spelling alone."""
    name = value.strip().lower()
    if name in GCP_REGIONS:
        return f"write it in lowercase: `{name}`"
    zone_of = re.sub(r"-[a-z]$", "", name)
    if zone_of in GCP_REGIONS:
        return f"did you mean `{zone_of}`? (`{name}` is a zone; give its region)"
    compact = re.sub(r"[\s_-]", "", name)
    if (same := OTHER_CLOUDS_REGIONS.get(name) or OTHER_CLOUDS_REGIONS.get(compact)) is not None:
        return f"did you mean `{same}`? (the Google Cloud region nearest to `{value}`)"
    prefix = GEOGRAPHIES.get(re.split(r"[-\s_]|(?<=[a-z])(?=\d)", name)[0])
    if not prefix:
        return "use one such as `europe-west1` or `us-central1` (`gcloud run regions list` lists them)"
    candidates = [r for r in GCP_REGIONS if r.startswith(prefix)]
    return nearest(name, candidates) or f"use one of {', '.join(f'`{r}`' for r in sorted(candidates)[:4])}"


def check_region(value: str) -> str:
    if value not in GCP_REGIONS:
        raise ValueError(f"{value!r} is not a Google Cloud region; {region_hint(value)}")
    return value


def check_private_cidr(value: str) -> str:
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise ValueError(f'{value!r} is not a CIDR range; write it like "10.10.0.0/24"') from None
    if network.version != 4 or not network.is_private:
        raise ValueError(f"{value!r} must be a private IPv4 range (10/8, 172.16/12, 192.168/16)")
    return value


def check_tier(tier: str) -> str:
    if not (match := SQL_TIER.match(tier)):
        raise ValueError(
            f"{tier!r} is not a Cloud SQL for PostgreSQL tier; use db-f1-micro, db-g1-small or "
            "db-custom-CPUS-MEMORY_MB (e.g. db-custom-1-3840)"
        )
    cpus, memory = int(match.group(2) or 1), int(match.group(3) or MIN_CUSTOM_MEMORY_MB)
    shape = (cpus == 1 or cpus % 2 == 0) and cpus <= 96 and not memory % 256 and memory >= MIN_CUSTOM_MEMORY_MB
    if not (shape and 0.9 * 1024 * cpus <= memory <= 6.5 * 1024 * cpus):
        raise ValueError(
            f"{tier!r} has no valid CPU/memory shape; use 1 or an even number of CPUs, 0.9-6.5 GB per CPU "
            "and at least 3840 MB, in multiples of 256 MB (e.g. db-custom-2-7680)"
        )
    return tier


def mebibytes(memory: str) -> int:
    match = MEMORY.match(memory)
    if match is None:
        raise ValueError(f'{memory!r} must look like "1Gi" or "768Mi"')
    number, unit = match.groups()
    return int(number) * (1024 if unit == "Gi" else 1)


def is_location(value: str) -> bool:
    return value in BUCKET_MULTI_REGIONS | GCP_REGIONS


Region = Annotated[str, AfterValidator(check_region), Field(json_schema_extra={"enum": sorted(GCP_REGIONS)})]
PrivateCidr = Annotated[str, AfterValidator(check_private_cidr)]
Percent = within(1, 100)
PROJECT_ID_PROBLEM = (
    "{value!r} is not a Google Cloud project id; use 6-30 lowercase letters, digits or hyphens, starting with a letter "
    '(e.g. "acme-mlflow-dev")'
)
Email = checked(EMAIL.match, '{value!r} is not an e-mail address; write e.g. "ml-platform@example.com"')
IamMember = checked(is_member, "{value!r} is not an IAM member; write user:EMAIL, group:EMAIL or serviceAccount:EMAIL")
OAuthClientId = checked(
    OAUTH_CLIENT_ID.match, "{value!r} is not an OAuth client id; write NUMBER-ID.apps.googleusercontent.com"
)
IapMember = checked(
    lambda v: is_member(v, ("user", "group", "serviceAccount", "domain")),
    "{value!r} is not an IAM member; write "
    "user:EMAIL, group:EMAIL, serviceAccount:EMAIL or domain:DOMAIN (allUsers and allAuthenticatedUsers are refused)",
)


class Section(BaseModel):
    """A TOML table: exact TOML types (no "2" for 2), no unknown keys, immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


PLACES = ["local", "bucket"]
AUTHS = ["iam", "password"]


class StateConfig(Section):
    """The Terraform state bucket the bootstrap stack makes: one for all environments, the same table in every file."""

    bucket: checked(
        lambda v: BUCKET.match(v) and ".." not in v and not v.startswith("goog"),
        "{value!r} is not a valid bucket name; "
        'use 3-63 lowercase letters, digits, hyphens, dots or underscores, e.g. "acme-mlflow-tfstate"',
    ) = Field(description="the bucket the bootstrap stack creates; one for all environments")
    project: checked(PROJECT_ID.match, PROJECT_ID_PROBLEM, empty_ok=True) = Field(
        "", description="the project that holds it; set it in every file when environments are in several projects"
    )
    location: checked(
        is_location, "{value!r} is not a bucket location; use a region or EU, US or ASIA", empty_ok=True
    ) = Field("", description="a region or EU, US, ASIA; fixed once the bucket exists")
    bootstrap_state: checked(
        lambda v: v in PLACES, '{value!r} is not a place; use "local" or "bucket"', enum=PLACES
    ) = Field(
        "local",
        description="where the bootstrap stack keeps its own state: `local` (a file beside `cdktf.json`) until the "
        "bucket exists, then `bucket` (see *Moving the bootstrap state*)",
    )


class NetworkConfig(Section):
    subnet_cidr: PrivateCidr = Field(
        "10.10.0.0/24", description="the subnet of Cloud Run's direct VPC egress; /26 or larger"
    )
    private_services_cidr: PrivateCidr = Field("10.20.0.0/20", description="peered to Google's services; /24 or larger")

    @model_validator(mode="after")
    def ranges_fit(self) -> NetworkConfig:
        subnet, services = ipaddress.ip_network(self.subnet_cidr), ipaddress.ip_network(self.private_services_cidr)
        _raise(
            [
                problem
                for wrong, problem in (
                    (
                        services.prefixlen > 24,
                        f"network.private_services_cidr: {services} is smaller than the /24 Google requires; "
                        "use /24 or larger (e.g. /20)",
                    ),
                    (
                        subnet.overlaps(services),
                        f"network: subnet_cidr {subnet} overlaps private_services_cidr {services}; "
                        "pick ranges that do not overlap",
                    ),
                    (
                        subnet.prefixlen > 26,
                        f"network.subnet_cidr: {subnet} is too small for Cloud Run direct VPC egress; "
                        "use /26 or larger",
                    ),
                )
                if wrong
            ]
        )
        return self


class DatabaseConfig(Section):
    tier: Annotated[str, AfterValidator(check_tier)] = Field(
        "db-f1-micro", description="Cloud SQL tier; sets `max_connections` (see *Connection budget*)"
    )
    disk_size_gb: within(10, 65536) = Field(10, description="SSD size in GB")
    version: checked(
        SQL_VERSION.match,
        "{value!r} is not supported; use POSTGRES_14 to POSTGRES_18 (default POSTGRES_18)",
        enum=[f"POSTGRES_{v}" for v in range(14, 19)],
    ) = Field("POSTGRES_18", description="PostgreSQL major version; Enterprise edition, PITR on")
    backup_retention_days: within(1, 365) = Field(7, description="days of automated backups kept")
    password_revision: within(1, why="; bump it to rotate") = Field(
        1, description='`auth = "password"` only: bump to rotate the generated password (user and secret follow)'
    )
    instance_name: checked(
        SQL_INSTANCE.match,
        "{value!r} is not a Cloud SQL instance name; use lowercase letters, digits and "
        "hyphens, starting with a letter, or remove it for <name_prefix>-db",
        empty_ok=True,
    ) = Field("", description="the Cloud SQL instance's name; set it only to adopt a restored clone (see *Restore*)")
    auth: checked(
        lambda v: v in AUTHS,
        '{value!r} is not a login method; use "iam" (no password, the default) or "password"',
        enum=AUTHS,
    ) = Field(
        "iam",
        description="`iam`: the server and the migration job log in as their service account's IAM database user, "
        "no password exists anywhere; `password`: a generated password in state and in Secret Manager (see *Security posture*)",
    )

    @property
    def max_connections(self) -> int:
        if self.tier in SHARED_CORE_MAX_CONNECTIONS:
            return SHARED_CORE_MAX_CONNECTIONS[self.tier]
        tier = SQL_TIER.match(self.tier)
        assert tier is not None, self.tier  # the field's own check admits only matching tiers
        memory_mb = int(tier.group(3))
        return next((c for below_mb, c in MEMORY_MAX_CONNECTIONS if memory_mb < below_mb), 1000)


class ServerConfig(Section):
    image: checked(
        IMAGE.match,
        "{value!r} is not a pinned image reference; write REGISTRY/PATH:TAG or REGISTRY/PATH@sha256:DIGEST, "
        "or remove it to use this environment's Artifact Registry",
        empty_ok=True,
    ) = Field("", description="pinned tag or digest; tags are immutable in the registry")
    cpu: checked(
        lambda v: v in CLOUD_RUN_MEMORY_PER_CPU,
        '{value!r} must be "1", "2", "4" or "8"',
        enum=list(CLOUD_RUN_MEMORY_PER_CPU),
    ) = Field("1", description="CPUs per instance (see *The server image and its sizing*)")
    memory: checked(
        lambda v: MEMORY.match(v) and 512 <= mebibytes(v) <= 32768,
        '{value!r} must look like "1Gi" or "768Mi", from 512Mi to 32Gi',
    ) = Field("1Gi", description="memory per instance; must fit the CPUs")
    min_instances: within(0) = Field(0, description="instances kept warm; 0 scales to zero when idle")
    max_instances: within(1, 100) = Field(2, description="most instances; part of the connection budget")
    concurrency: within(1, 1000) = Field(20, description="requests one instance serves at once")
    workers: within(1, 8) = Field(1, description="MLflow server workers per instance (see *Connection budget*)")
    pool_size: within(1) = Field(2, description="SQLAlchemy pool of each store (see *Connection budget*)")
    max_overflow: within(1, why="; MLflow ignores 0 and falls back to its default of 10") = Field(
        1, description="SQLAlchemy overflow of each store"
    )
    artifact_mount_path: checked(
        lambda v: v.startswith("/") and v not in {"/", CLOUDSQL_MOUNT},
        '{value!r} must be an absolute path such as "/mnt/gcs"',
    ) = Field("/mnt/gcs", description="where the GCS volume is mounted and MLflow writes artifacts")
    gateway_key_revision: within(1, why="; bump it to rotate") = Field(
        1, description="bump to generate a new key for the AI gateway's stored API keys (see *AI gateway secrets*)"
    )

    @model_validator(mode="after")
    def fits_cloud_run(self) -> ServerConfig:
        low, high = CLOUD_RUN_MEMORY_PER_CPU[self.cpu]
        _raise(
            [
                problem
                for wrong, problem in (
                    (
                        not low <= mebibytes(self.memory) <= high,
                        f"server.memory: {self.memory} does not fit {self.cpu} CPU on Cloud Run; "
                        f"use {low}Mi to {high // 1024}Gi or change server.cpu",
                    ),
                    (
                        self.max_instances < self.min_instances,
                        f"server.max_instances: {self.max_instances} must be at least min_instances "
                        f"({self.min_instances})",
                    ),
                )
                if wrong
            ]
        )
        return self


class DnsConfig(Section):
    existing_zone: checked(
        ZONE_NAME.match, "{value!r} is not a Cloud DNS zone name; leave it empty to create a zone", empty_ok=True
    ) = Field(
        "", description="name of an existing Cloud DNS zone to add the record to; empty creates a zone for `domain`"
    )


GITHUB_IDS_COMMAND = "gh api repos/OWNER/REPO --jq .id,.owner.id"


class CiConfig(Section):
    """GitHub's numeric ids are never reused: a deleted or renamed repository's name can be taken, its id cannot."""

    github_repository: checked(GITHUB_REPO.match, "{value!r} must be OWNER/REPO", empty_ok=True) = Field(
        "", description="`OWNER/REPO`: creates the Workload Identity Federation pool and the planner/deployer accounts"
    )
    repository_id: within(0) = Field(
        0,
        description=f"the repository's numeric id, the first line of `{GITHUB_IDS_COMMAND}`; required with `github_repository`",
    )
    repository_owner_id: within(0) = Field(
        0,
        description=f"its owner's numeric id, the second line of `{GITHUB_IDS_COMMAND}`; required with `github_repository`",
    )

    @model_validator(mode="after")
    def ids_name_the_repository(self) -> CiConfig:
        ids = (
            ("repository_id", self.repository_id, "first"),
            ("repository_owner_id", self.repository_owner_id, "second"),
        )
        if self.github_repository:
            _raise(
                [
                    f"ci.{key}: missing; the workload identity provider binds the repository by id, not name: write the "
                    f"{line} number `{GITHUB_IDS_COMMAND.replace('OWNER/REPO', self.github_repository)}` prints"
                    for key, value, line in ids
                    if not value
                ]
            )
        else:
            _raise(
                [
                    f"ci.{key}: {value} is set without ci.github_repository; set the repository too, or remove it"
                    for key, value, _ in ids
                    if value
                ]
            )
        return self


class IapOauthClientConfig(Section):
    """A custom OAuth client for IAP; its secret is never in a file (TF_VAR_iap_oauth_client_secret)."""

    client_id: checked(
        OAUTH_CLIENT_ID.match,
        "{value!r} is not an OAuth client id; write NUMBER-ID.apps.googleusercontent.com, "
        "or leave it empty for the Google-managed client",
        empty_ok=True,
    ) = Field(
        "", description="a custom OAuth client for IAP (see *Custom OAuth client*); empty: the Google-managed client"
    )
    secret_version: within(1, why="; bump it to send a new secret") = Field(
        1, description="bump after changing `TF_VAR_iap_oauth_client_secret`, so the apply sends it again"
    )


# --- [access]: teams on one server (docker/iap_access.py applies it) -------------------------------

MLFLOW_WORKSPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
RESERVED_WORKSPACES = frozenset({"workspaces", "api", "ajax-api", "static-files"})
OTHERS = ["none", "read"]
# With [access] each worker also opens MLflow's auth store and its workspace store, each with its own pool.
ACCESS_STORES_PER_WORKER = 2


def is_workspace_name(value: str) -> bool:
    return 2 <= len(value) <= 63 and bool(MLFLOW_WORKSPACE.match(value)) and value not in RESERVED_WORKSPACES


WORKSPACE_PROBLEM = (
    "{value!r} is not an MLflow workspace name; use 2-63 lowercase letters, digits and inner hyphens "
    "(not workspaces, api, ajax-api or static-files)"
)


class TeamConfig(Section):
    """One team: its members may create, change and delete everything in its workspace."""

    name: checked(is_workspace_name, WORKSPACE_PROBLEM) = Field(
        description="the team's name, MLflow-valid like a workspace's"
    )
    workspace: checked(is_workspace_name, WORKSPACE_PROBLEM, empty_ok=True) = Field(
        "",
        description="its MLflow workspace (experiments, models, and artifacts under `workspaces/<workspace>/` in the "
        "bucket); empty: the team's name; `default` for what a server without teams already holds (see *Teams and permissions*)",
    )
    members: listed(IamMember) = Field(
        min_length=1, description="user:, group: (resolved by Cloud Identity) or serviceAccount:"
    )

    @property
    def workspace_name(self) -> str:
        return self.workspace or self.name


class AccessConfig(Section):
    """No `[access]` table: everyone IAP admits may do everything (MLflow's auth app is not loaded)."""

    admins: listed(IamMember) = Field(
        (), description="MLflow admins: everything in every workspace, and MLflow's user and role APIs"
    )
    teams: Annotated[tuple[TeamConfig, ...], Field(strict=False)] = Field(
        (), description="`[[access.teams]]`: name, workspace, members"
    )
    others: checked(
        lambda v: v in OTHERS, '{value!r} is not a level; use "none" (the default) or "read"', enum=OTHERS
    ) = Field(
        "none",
        description="what a team's members get in other teams' workspaces: `none` or `read`; people in no team get nothing",
    )
    members_in_several_teams: bool = Field(
        False, description="allow a member in more than one team (refused by default)"
    )

    @model_validator(mode="after")
    def teams_apart(self) -> AccessConfig:
        names = [t.name for t in self.teams]
        workspaces = [t.workspace_name for t in self.teams]
        seen: dict[str, str] = {}
        twice = []
        for team in self.teams:
            for member in team.members:
                if (
                    other := seen.setdefault(member.lower(), team.name)
                ) != team.name and not self.members_in_several_teams:
                    twice.append(
                        f"access.teams: {member!r} is in teams {other} and {team.name}; keep each member in one "
                        "team, or set access.members_in_several_teams = true"
                    )
        _raise(
            [
                problem
                for wrong, problem in (
                    (
                        not self.teams,
                        "access.teams: no team; add [[access.teams]] with name and members, or remove [access]",
                    ),
                    (
                        len(set(names)) < len(names),
                        f"access.teams: team names {', '.join(sorted({n for n in names if names.count(n) > 1}))} "
                        "appear more than once; name each team once",
                    ),
                    (
                        len(set(workspaces)) < len(workspaces),
                        "access.teams: workspace "
                        f"{', '.join(sorted({w for w in workspaces if workspaces.count(w) > 1}))} belongs to more than one team; give each "
                        "team its own workspace",
                    ),
                )
                if wrong
            ]
            + twice
        )
        return self

    @property
    def groups(self) -> list[str]:
        return sorted({m for _, m in self.members if m.startswith("group:")})

    @property
    def members(self) -> list[tuple[str, str]]:
        """(where, member) for every member named."""
        return [("access.admins", m) for m in self.admins] + [
            (f"access.teams.{t.name}", m) for t in self.teams for m in t.members
        ]

    def server_model(self) -> dict[str, Any]:
        """What the server reads (MLFLOW_IAP_ACCESS, docker/iap_access.py)."""
        return {
            "admins": list(self.admins),
            "others": self.others,
            "teams": [{"name": t.name, "workspace": t.workspace_name, "members": list(t.members)} for t in self.teams],
        }


FRONT_DOOR_MODES = ["load_balancer", "direct_iap"]


class FrontDoorConfig(Section):
    """How users reach MLflow: the load balancer with IAP on its backend, or IAP on the Cloud Run service itself."""

    mode: checked(
        lambda v: v in FRONT_DOOR_MODES,
        '{value!r} is not a mode; use "load_balancer" (default) or "direct_iap"',
        enum=FRONT_DOOR_MODES,
    ) = Field(
        "load_balancer",
        description="`load_balancer`: the global external Application Load Balancer, a managed certificate "
        "for `domain`, DNS, IAP on the backend service; `direct_iap`: IAP on the Cloud Run service, reached at its run.app "
        "URL (`domain` must be that host), no load balancer, certificate or DNS, about a third of the idle cost (see *Two front doors*)",
    )


class AlertsConfig(Section):
    """No `[alerts]` table (no e-mails) means no channels, no policies and no dashboard."""

    emails: listed(Email, "address") = Field((), description="who gets the alerts; empty: no alerts (see *Operations*)")
    error_ratio_percent: Percent = Field(5, description="5xx responses, % of requests over 5 minutes")
    latency_p95_ms: within(1, 900_000, " (the request timeout)") = Field(
        2000, description="p95 request latency over 5 minutes"
    )
    sql_cpu_percent: Percent = Field(80, description="Cloud SQL CPU utilization")
    sql_disk_percent: Percent = Field(80, description="Cloud SQL disk utilization")
    connections_percent: Percent = Field(DEFAULT_CONNECTIONS_PERCENT, description="% of the tier's `max_connections`")

    @model_validator(mode="after")
    def someone_is_notified(self) -> AlertsConfig:
        if not self.emails and self.model_fields_set - {"emails"}:
            raise Problems(["alerts.emails: is empty; thresholds alone notify nobody, so list who gets the alerts"])
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.emails)


class BudgetConfig(Section):
    """No `[budget]` table means no budget; `billing_account` is what turns it on."""

    billing_account: checked(
        BILLING_ACCOUNT.match,
        "{value!r} is not a billing account id; write the XXXXXX-XXXXXX-XXXXXX that "
        "`gcloud billing projects describe PROJECT_ID` prints after billingAccounts/",
        empty_ok=True,
    ) = Field("", description="the billing account that pays for the project; turns the budget on")
    monthly_usd: within(0) = Field(
        0, description="whole US dollars a month; e-mails at 50%, 90%, 100% and a 100% forecast"
    )

    @model_validator(mode="after")
    def complete(self) -> BudgetConfig:
        if self.billing_account and self.monthly_usd < 1:
            raise Problems(
                [f"budget.monthly_usd: {self.monthly_usd} must be 1 or more; set the amount in whole US dollars"]
            )
        if self.monthly_usd and not self.billing_account:
            raise Problems(
                ["budget.billing_account: missing; a budget needs the billing account that pays for the project"]
            )
        return self


# The shipped examples' own values (config/example.toml, config/direct-iap.toml, config/teams.toml): copied into another
# environment they would deploy into someone else's project.
EXAMPLE_ENVIRONMENT = "example"
EXAMPLE_ENVIRONMENTS = (EXAMPLE_ENVIRONMENT, "small", "teams")
EXAMPLE_PLACEHOLDERS = {
    "project_id": ("example-mlflow-project", "example-mlflow-small", "example-mlflow-teams"),
    "project_number": ("123456789012",),
    "domain": ("mlflow.example.com",),
}
EXAMPLE_STATE_BUCKET = "example-mlflow-project-tfstate"
INIT_HINT = "python -m stacks.init ENV --project ID --region REGION --domain DOMAIN"


class Config(Section):
    environment: checked(
        ENVIRONMENT.match,
        '{value!r} is not 1-10 lowercase letters/digits starting with a letter; use e.g. "dev" or "prod"',
        pattern=ENVIRONMENT.pattern,
    ) = Field(description="1-10 lowercase letters/digits; names the stacks (`mlflow-<environment>`)")
    project_id: checked(PROJECT_ID.match, PROJECT_ID_PROBLEM, pattern=PROJECT_ID.pattern) = Field(
        description="the Google Cloud project to deploy into"
    )
    project_number: checked(
        PROJECT_NUMBER.match,
        "{value!r} is not a project number; quote the digits that `gcloud projects "
        "describe PROJECT_ID --format='value(projectNumber)'` prints",
        pattern=PROJECT_NUMBER.pattern,
    ) = Field(description="quoted: `gcloud projects describe PROJECT_ID --format='value(projectNumber)'`")
    region: Region = Field(description="a Google Cloud region")
    domain: checked(
        is_hostname, '{value!r} is not a lowercase hostname; use the name users will open, e.g. "mlflow.example.com"'
    ) = Field(description="the hostname users open; allowed host and CORS origin of the server")
    iap_members: listed(IapMember) = Field(
        min_length=1,
        description="who may use MLflow (`roles/iap.httpsResourceAccessor` on the backend service only). With the "
        "default Google-managed OAuth client IAP admits **only users of the project's organization**: for a project outside an "
        "organization, or members outside it, configure `[iap_oauth_client]`",
    )
    state: StateConfig = Field(description="the Terraform state bucket")
    name_prefix: checked(
        NAME_PREFIX.match,
        "{value!r} must be 2-15 lowercase letters, digits or hyphens, starting with a letter "
        "and not ending with a hyphen",
        pattern=NAME_PREFIX.pattern,
    ) = Field("mlflow", description="prefix of every resource name")
    artifact_location: checked(
        is_location,
        "{value!r} is not a bucket location; use a region or EU/US/ASIA, or remove it to use the region",
        empty_ok=True,
    ) = Field("", description="location of the artifact bucket")
    iap_programmatic_clients: listed(OAuthClientId, "client") = Field(
        (), description="OAuth client ids allowed to send ID tokens; not needed for the plugin"
    )
    client_impersonators: listed(IamMember) = Field(
        (),
        description="people/groups whose scripts reach MLflow: each gets a keyless client account of its own (`<prefix>-c-<hash>`), "
        "so the server records who wrote what; list people, not groups, to tell them apart (see *Using the tracking server*)",
    )
    network: NetworkConfig = NetworkConfig()
    database: DatabaseConfig = DatabaseConfig()
    server: ServerConfig = ServerConfig()
    dns: DnsConfig = DnsConfig()
    ci: CiConfig = CiConfig()
    allowed_domains: listed(checked(is_domain, '{value!r} is not a domain; write e.g. "example.com"'), "domain") = (
        Field(
            (),
            description="your directory's domains (domain-restricted sharing): synth refuses a `user:`/`group:`/`domain:` "
            "member of `iap_members`, `client_impersonators` or `image_builders` outside them, instead of the apply failing halfway",
        )
    )
    image_builders: listed(IamMember) = Field(
        (),
        description="who may run the `image_build_command` output besides owners/editors: `iam.serviceAccountUser` on the "
        "build account, a custom role to create and follow builds, objects of the build bucket",
    )
    iap_oauth_client: IapOauthClientConfig = IapOauthClientConfig()
    alerts: AlertsConfig = AlertsConfig()
    budget: BudgetConfig = BudgetConfig()
    front_door: FrontDoorConfig = FrontDoorConfig()
    access: AccessConfig | None = Field(
        None,
        description="teams, admins and what others may do, enforced by MLflow's own permissions (see *Teams and "
        "permissions*); absent: everyone IAP admits may do everything",
    )
    protect_data: bool = Field(
        True,
        description="Cloud SQL deletion protection and `prevent_destroy` on the database, the artifact bucket and the "
        "secret; `false` only to tear the environment down (see *Tear-down*; synth warns while it is off)",
    )

    @model_validator(mode="before")
    @classmethod
    def state_defaults_to_this_environment(cls, data: Any) -> Any:
        """The state bucket is in this environment's project and region unless [state] says otherwise."""
        if isinstance(data, dict) and isinstance(data.get("state"), dict):
            state = dict(data["state"])
            if (
                not state.get("project")
                and isinstance(data.get("project_id"), str)
                and PROJECT_ID.match(data["project_id"])
            ):
                state["project"] = data["project_id"]
            if not state.get("location") and data.get("region") in GCP_REGIONS:
                state["location"] = data["region"]
            data = {**data, "state": state}
        return data

    @model_validator(mode="after")
    def fits_direct_iap(self) -> Config:
        """direct_iap has no load balancer, certificate, DNS or custom OAuth client: settings for them are mistakes."""
        if self.front_door.mode != "direct_iap":
            return self
        fix = 'or use front_door.mode = "load_balancer"'
        _raise(
            [
                problem
                for wrong, problem in (
                    (
                        self.domain != self.direct_iap_host,
                        f"domain: {self.domain!r} is a custom domain, which direct_iap cannot serve "
                        f'(no load balancer, no certificate); write domain = "{self.direct_iap_host}" (the service\'s run.app host) {fix}',
                    ),
                    (
                        self.dns != DnsConfig(),
                        f"dns.existing_zone: direct_iap creates no DNS record (users open the run.app URL); "
                        f"remove the [dns] table {fix}",
                    ),
                    (
                        bool(self.iap_programmatic_clients),
                        "iap_programmatic_clients: only the load balancer's IAP settings are managed "
                        f"here; remove them in direct_iap (the client plugin needs none) {fix}",
                    ),
                    (
                        self.iap_oauth_client != IapOauthClientConfig(),
                        "iap_oauth_client.client_id: direct_iap is built here for the "
                        "Google-managed OAuth client only (project in an organization, members from it); remove [iap_oauth_client] "
                        + fix,
                    ),
                )
                if wrong
            ]
        )
        return self

    @model_validator(mode="after")
    def fits_the_organization(self) -> Config:
        """What an organization's policies would reject at apply, refused at synth."""
        allowed = {d.lower() for d in self.allowed_domains}
        members = [
            (key, m) for key in ("iap_members", "client_impersonators", "image_builders") for m in getattr(self, key)
        ]
        _raise(
            [
                f"{key}: {member!r} is outside allowed_domains ({', '.join(sorted(allowed))}), so domain-restricted sharing would "
                "refuse the grant; remove it, or add its domain to allowed_domains if your organization allows it"
                for key, member in members
                # A service account's email names its project, not a directory domain: not judged here.
                if allowed and not member.startswith("serviceAccount:") and member_domain(member) not in allowed
            ]
        )
        return self

    @model_validator(mode="after")
    def access_members_admitted_by_iap(self) -> Config:
        """A team member IAP does not admit never reaches MLflow: a mistake, refused here. A user or
        service account may be in a group of iap_members, which only the directory knows: not judged then."""
        if self.access is None:
            return self
        admitted = {m.lower() for m in self.iap_members}
        if self.client_impersonators:  # the keyless client account exists, and IAP admits it
            admitted.add(f"serviceaccount:{self.client_service_account_email}")
        domains = {m.partition(":")[2].lower() for m in self.iap_members if m.startswith("domain:")}
        iap_groups = any(m.startswith("group:") for m in self.iap_members)
        _raise(
            [
                f"{where}: {member!r} is not admitted by IAP (iap_members); add it, its group or its domain to iap_members"
                for where, member in self.access.members
                if member.lower() not in admitted
                and member_domain(member) not in domains
                and not (iap_groups and not member.startswith("group:"))
            ]
        )
        return self

    @model_validator(mode="after")
    def not_the_examples_placeholders(self) -> Config:
        if self.environment not in EXAMPLE_ENVIRONMENTS:
            copied = [
                f"{key}: {getattr(self, key)!r} is the example's placeholder; write this environment's own"
                for key, values in EXAMPLE_PLACEHOLDERS.items()
                if getattr(self, key) in values
            ]
            _raise(copied[:-1] + [f"{p} (`{INIT_HINT}` starts an environment without them)" for p in copied[-1:]])
        return self

    @model_validator(mode="after")
    def within_the_connection_budget(self) -> Config:
        (peak, allowed), s = self.connection_budget, self.server
        if peak > allowed:
            raise Problems(
                [
                    f"server: connection budget exceeded: {s.max_instances} instances x {s.workers} workers x "
                    f"{self.stores_per_worker} stores x ({s.pool_size} pool + {s.max_overflow} overflow) + "
                    f"{self.migration_connections} migration + {SQL_RESERVED_CONNECTIONS} reserved = {peak} > {allowed} "
                    f"max_connections of {self.database.tier}; "
                    "lower server.max_instances, workers or pool_size, or pick a larger database.tier"
                ]
            )
        return self

    @property
    def client_service_account_email(self) -> str:
        """The keyless client account (constructs/identity/client_identity.py), which IAP admits."""
        return f"{self.name_prefix}-client@{self.project_id}.iam.gserviceaccount.com"

    @property
    def stores_per_worker(self) -> int:
        return MLFLOW_STORES_PER_WORKER + (ACCESS_STORES_PER_WORKER if self.access else 0)

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
        per_instance = self.server.workers * self.stores_per_worker * (self.server.pool_size + self.server.max_overflow)
        peak = self.server.max_instances * per_instance + self.migration_connections
        return peak + SQL_RESERVED_CONNECTIONS, self.database.max_connections


def member_domain(member: str) -> str:
    kind, _, value = member.partition(":")
    return value.lower() if kind == "domain" else value.rpartition("@")[2].lower()


def alert_thresholds(cfg: Config) -> dict[str, Any]:
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


# --- pydantic's errors, one line each, in our words ---------------------------------------------------

KIND_PROBLEMS = {
    "bool_type": "must be true or false, got {input!r}; write true or false, without quotes",
    "int_type": "must be a whole number, got {input!r}; write digits, e.g. {key} = 2",
    "string_type": 'must be a quoted string, got {input!r}; put it in double quotes, e.g. {key} = "{input}"',
    "tuple_type": 'must be a list of quoted strings; write e.g. {key} = ["..."]',
    "too_short": 'is empty; list who may use MLflow, e.g. ["group:ml-team@example.com"]',
}
# A number or boolean written in quotes: TOML keeps it a string, the model wants the value itself.
QUOTED_VALUES = {
    "int_type": (re.compile(r"^-?[0-9]+$"), "drop the quotes: {key} = {input}"),
    "bool_type": (re.compile(r"^(true|false)$"), "drop the quotes: {key} = {input}"),
}


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel]:
    model: type[BaseModel] = Config
    for part in loc:
        annotation = model.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return model


def _problem(error: ErrorDetails) -> list[str]:
    loc = tuple(p for p in error["loc"] if isinstance(p, str))
    name, kind = ".".join(loc), error["type"]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, Problems):
        return cause.items
    if isinstance(cause, ValueError):
        return [f"{name}: {cause}"]
    if kind == "extra_forbidden":
        known = sorted(_model_at(loc[:-1]).model_fields)
        return [f"{name}: unknown key; " + (nearest(loc[-1], known) or f"remove it (known: {', '.join(known)})")]
    if kind == "missing":
        section = _model_at(loc) is not _model_at(loc[:-1])
        return [f"{name}: missing; add {f'a [{name}] table' if section else f'{name} = ...'} to the file"]
    if kind == "model_type":
        return [f"{name}: must be a [{name}] table"]
    value, key = error.get("input"), (loc[-1] if loc else name)
    quoted = QUOTED_VALUES.get(kind)
    if quoted and isinstance(value, str) and quoted[0].match(value.strip().lower()):
        fix = quoted[1].format(key=key, input=value.strip().lower())
        return [
            f"{name}: must be a {'whole number' if kind == 'int_type' else 'boolean'}, got the string {value!r}; {fix}"
        ]
    return [f"{name}: " + KIND_PROBLEMS.get(kind, error["msg"].split("\n")[0]).format(input=value, key=key)]


def _without_cascades(errors: list[ErrorDetails]) -> list[ErrorDetails]:
    """An item's own error, not also "the list is empty": pydantic counts only the valid items for min_length."""

    def item_failed(loc: tuple[int | str, ...]) -> bool:
        return any(len(e["loc"]) > len(loc) and tuple(e["loc"][: len(loc)]) == loc for e in errors)

    return [e for e in errors if not (e["type"] == "too_short" and item_failed(tuple(e["loc"])))]


def _checks_across_fields(data: Any, errors: list[ErrorDetails]) -> list[str]:
    """The model validators that pydantic skips once any field fails, run on the fields that are valid.

    A field with an error is left out, so a check that reads it stops with AttributeError and says
    nothing: no problem follows from another one, and every check that can run, runs.
    """
    if not isinstance(data, dict):
        return []
    for before in Config.__pydantic_decorators__.model_validators.values():
        if before.info.mode == "before":
            data = before.func.__func__(Config, data)  # type: ignore[attr-defined]  # a classmethod's function
    failed = {tuple(p for p in e["loc"] if isinstance(p, str)) for e in errors}
    return _partial(Config, data, failed, ())[1]


def _partial(
    model: type[BaseModel], data: dict[str, Any], failed: set[tuple[str, ...]], loc: tuple[str, ...]
) -> tuple[BaseModel, list[str]]:
    """`model` built from the valid fields of `data` only (the others absent), and its checks' problems."""
    values, problems = _valid_fields(model, data, failed, loc)
    partial = model.model_construct(**values)
    for name in set(model.model_fields) - set(values):
        partial.__dict__.pop(name, None)
    for after in model.__pydantic_decorators__.model_validators.values():
        if after.info.mode != "after":
            continue
        try:
            after.func(partial)
        except Problems as raised:
            problems += raised.items
        except (AttributeError, KeyError, TypeError):
            pass  # it reads a field that failed: that field's own problem is reported
    return partial, problems


def _valid_fields(
    model: type[BaseModel], data: dict[str, Any], failed: set[tuple[str, ...]], loc: tuple[str, ...]
) -> tuple[dict[str, Any], list[str]]:
    """The fields of `data` that validate (defaults for those absent), and the problems of its sections' checks."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, field in model.model_fields.items():
        here = (*loc, name)
        annotation = field.annotation
        if name not in data:
            if not field.is_required():
                values[name] = field.get_default(call_default_factory=True)
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if isinstance(data[name], dict):
                values[name], found = _partial(annotation, data[name], failed, here)
                problems += found
        elif not any(f[: len(here)] == here for f in failed):
            try:
                typed: Any = Annotated[annotation, *field.metadata] if field.metadata else annotation
                values[name] = TypeAdapter(typed).validate_python(data[name])
            except (ValidationError, TypeError):
                pass  # failed here although pydantic did not say so: left out like a failed field
    return values, problems


def parse_config(text: str, source: str = "<config>") -> Config:
    """Parse and validate one TOML document; raise ConfigError with every problem, one per line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError.of(source, [f"not valid TOML ({error}); fix the syntax"]) from None
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        errors = _without_cascades(error.errors())
        problems = [p for e in errors for p in _problem(e)] + _checks_across_fields(data, errors)
        raise ConfigError.of(source, problems) from None


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
            raise ConfigError.of(
                CONFIG_ENV_VAR,
                [f"cannot read {path!r} ({error.strerror}); set it to config files that exist, e.g. config/dev.toml"],
            ) from None
        configs.append(parse_config(text, path))
    _validate_together(configs, paths)
    return configs


def _validate_together(configs: list[Config], paths: list[str]) -> None:
    environments = [c.environment for c in configs]
    placements = [f"{c.project_id}/{c.name_prefix}" for c in configs]
    problems = [
        f"environment: {', '.join(sorted(twice))} appears in more than one file; give each file its own environment"
        for twice in [{e for e in environments if environments.count(e) > 1}]
        if twice
    ]
    problems += [
        f"name_prefix: environments share project and prefix {', '.join(sorted(twice))}, so their resource names "
        "collide; give each environment in a project its own name_prefix"
        for twice in [{p for p in placements if placements.count(p) > 1}]
        if twice
    ]
    # One bucket, made by one bootstrap stack: its settings may not depend on which file comes first.
    problems += [
        f"state.{key}: environments disagree on the one state bucket ({', '.join(sorted(values))}); write the same "
        f"[state] {key} = ... in every file"
        for key in StateConfig.model_fields
        if len(values := {getattr(c.state, key) for c in configs}) > 1
    ]
    if {c.state.bucket for c in configs} == {EXAMPLE_STATE_BUCKET} and not set(EXAMPLE_ENVIRONMENTS) & set(
        environments
    ):
        problems.append(
            f"state.bucket: {EXAMPLE_STATE_BUCKET!r} is the example's placeholder; name your own bucket "
            f'(e.g. "PROJECT_ID-tfstate"), or start the environment with `{INIT_HINT}`'
        )
    if problems:
        raise ConfigError.of(", ".join(paths), problems)


def bootstrap_owner(configs: list[Config]) -> Config:
    """The environment the bootstrap stack is built from: their [state] tables agree, so any; the first by name."""
    return min(configs, key=lambda c: c.environment)
