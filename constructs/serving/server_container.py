"""What the MLflow server and its migration job share: environment, secret, volumes and mounts.

This is the Terraform side of `docker/start.sh`'s environment contract. The service and the job have
different (but same-shaped) jsii struct classes; building both through `RunStructs` keeps them from
drifting apart and keeps every field type-checked (a plain nested dict is passed through unchecked,
and jsii silently drops its snake_case keys).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from constructs.cdk import set_newer_provider_attribute
from constructs.cdk.google import cloud_run_v2_job, cloud_run_v2_service
from constructs.data.cloudsql_socket import CLOUDSQL_MOUNT

# The image's non-root user (docker/Dockerfile USER; tests/constructs/serving/test_server_container.py keeps them equal).
IMAGE_UID = 10001
IMAGE_GID = 10001


@dataclass(frozen=True)
class RunStructs:
    """Builds `<template><suffix>` structs of one Cloud Run resource type."""

    module: ModuleType
    template: str

    def __call__(self, suffix: str, **fields: Any) -> Any:
        return getattr(self.module, self.template + suffix)(**fields)


SERVICE_STRUCTS = RunStructs(cloud_run_v2_service, "CloudRunV2ServiceTemplate")
JOB_STRUCTS = RunStructs(cloud_run_v2_job, "CloudRunV2JobTemplateTemplate")


@dataclass(frozen=True)
class RunPlacement:
    """Where and as whom a Cloud Run resource of this deployment runs."""

    project: str
    region: str
    service_account_email: str
    network_name: str
    subnet_name: str


@dataclass(frozen=True)
class ServerContainerProps:
    image: str
    sql_connection_name: str
    artifact_bucket: str
    artifact_mount_path: str
    domain: str
    workers: int
    pool_size: int
    max_overflow: int
    # Password login: the backend store URI is a Secret Manager secret, pinned to a version.
    backend_store_secret_id: str = ""
    backend_store_secret_version: str = ""
    # IAM login: the URI names the IAM database user and holds no credential, so it is a plain value.
    iam_backend_store_uri: str = ""

    def __post_init__(self) -> None:
        if not self.image:
            raise ValueError("ServerContainerProps.image: is empty; give the server image reference")
        if bool(self.iam_backend_store_uri) == bool(self.backend_store_secret_id and self.backend_store_secret_version):
            raise ValueError(
                "ServerContainerProps: give either iam_backend_store_uri (IAM login) or backend_store_secret_id "
                "and backend_store_secret_version (password login), not both or neither"
            )
        for name in ("workers", "pool_size", "max_overflow"):
            if getattr(self, name) < 1:
                # start.sh refuses 0 as well: MLflow ignores a 0 pool size or overflow.
                raise ValueError(f"ServerContainerProps.{name}: {getattr(self, name)} must be 1 or more")
        path = self.artifact_mount_path
        if not path.startswith("/") or path in ("/", CLOUDSQL_MOUNT) or path.startswith(CLOUDSQL_MOUNT + "/"):
            raise ValueError(
                f"ServerContainerProps.artifact_mount_path: {path!r} must be an absolute path other than / and "
                f"{CLOUDSQL_MOUNT}, e.g. /mnt/gcs"
            )


def server_env(props: ServerContainerProps, s: RunStructs) -> list[Any]:
    """A URI with a password only ever comes from Secret Manager, pinned to a version; with IAM
    login the URI has none, and each connection's access token is fetched by the image."""
    plain = {
        "MLFLOW_ARTIFACTS_DESTINATION": props.artifact_mount_path,
        "MLFLOW_ALLOWED_HOSTS": props.domain,
        "MLFLOW_CORS_ALLOWED_ORIGINS": f"https://{props.domain}",
        "MLFLOW_WORKERS": str(props.workers),
        "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": str(props.pool_size),
        "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": str(props.max_overflow),
    }
    if props.iam_backend_store_uri:
        plain |= {"MLFLOW_BACKEND_STORE_AUTH": "iam", "MLFLOW_BACKEND_STORE_URI": props.iam_backend_store_uri}
        return [s("ContainersEnv", name=name, value=value) for name, value in plain.items()]
    env = [s("ContainersEnv", name=name, value=value) for name, value in plain.items()]
    secret_ref = s(
        "ContainersEnvValueSourceSecretKeyRef",
        secret=props.backend_store_secret_id,
        version=props.backend_store_secret_version,
    )
    env.append(
        s(
            "ContainersEnv",
            name="MLFLOW_BACKEND_STORE_URI",
            value_source=s("ContainersEnvValueSource", secret_key_ref=secret_ref),
        )
    )
    return env


IAP_AUDIENCE_ENV = "MLFLOW_IAP_AUDIENCE"
"""The audience start.sh's server verifies IAP's signed header against (docker/iap_identity.py)."""
IAP_AUDIENCE_SHAPES = (
    re.compile(r"/projects/[0-9]+/global/backendServices/[0-9]+"),
    re.compile(r"/projects/[0-9]+/locations/[a-z][a-z0-9-]*/services/[a-z][a-z0-9-]*"),
)


def iap_audience_problem(owner: str, audience: str) -> str | None:
    """Why `audience` cannot be IAP's (None: it can, or it is only known at apply)."""
    if not audience:
        return f"{owner}: is empty; give IAP's audience (the front door's iap_audience), the server refuses to start without"
    if "${" not in audience and not any(shape.fullmatch(audience) for shape in IAP_AUDIENCE_SHAPES):
        return (
            f"{owner}: {audience!r} must be /projects/NUMBER/global/backendServices/ID or "
            "/projects/NUMBER/locations/REGION/services/NAME"
        )
    return None


def iap_audience_env(audience: str, s: RunStructs) -> Any:
    return s("ContainersEnv", name=IAP_AUDIENCE_ENV, value=audience)


GATEWAY_KEY_ENV = "MLFLOW_CRYPTO_KEK_PASSPHRASE"
GATEWAY_KEY_VERSION_ENV = "MLFLOW_CRYPTO_KEK_VERSION"
"""What MLflow derives the AI gateway's key-encryption key from; start.sh refuses MLflow's default."""


@dataclass(frozen=True)
class GatewayKeyRef:
    """The AI gateway's passphrase in Secret Manager, pinned to a version, and MLflow's KEK version."""

    secret_id: str
    secret_version: str
    kek_version: int

    def __post_init__(self) -> None:
        if not (self.secret_id and self.secret_version):
            raise ValueError(
                "GatewayKeyRef: give secret_id and secret_version; without them MLflow would encrypt stored API keys "
                "with its published default passphrase"
            )
        if self.kek_version < 1:
            raise ValueError(f"GatewayKeyRef.kek_version: {self.kek_version} must be 1 or more")


def gateway_key_env(key: GatewayKeyRef, s: RunStructs) -> list[Any]:
    """Only the service gets it: the migration job stores and reads no gateway secret."""
    secret_ref = s("ContainersEnvValueSourceSecretKeyRef", secret=key.secret_id, version=key.secret_version)
    return [
        s("ContainersEnv", name=GATEWAY_KEY_ENV, value_source=s("ContainersEnvValueSource", secret_key_ref=secret_ref)),
        s("ContainersEnv", name=GATEWAY_KEY_VERSION_ENV, value=str(key.kek_version)),
    ]


def cloudsql_volume(props: ServerContainerProps, s: RunStructs) -> Any:
    return s(
        "Volumes",
        name="cloudsql",
        cloud_sql_instance=s("VolumesCloudSqlInstance", instances=[props.sql_connection_name]),
    )


def artifact_volume(props: ServerContainerProps, s: RunStructs) -> Any:
    return s("Volumes", name="artifacts", gcs=s("VolumesGcs", bucket=props.artifact_bucket, read_only=False))


def mount_as_image_user(resource: Any, volumes_path: str, volumes: list[Any]) -> None:
    """Mount every GCS volume in `volumes` as the image's user: GCS FUSE mounts as root by default,
    and user 10001 could not write artifacts.

    `volumes_path` is where `volumes` sit in `resource` (e.g. `template.volumes`). `mount_options`
    is not in the 6.50 binding: set through the escape hatch (typed on CDK Terrain).
    """
    for index, volume in enumerate(volumes):
        if volume.gcs is not None:
            set_newer_provider_attribute(
                resource, f"{volumes_path}.{index}.gcs.mount_options", [f"uid={IMAGE_UID}", f"gid={IMAGE_GID}"]
            )


def cloudsql_mount(s: RunStructs) -> Any:
    return s("ContainersVolumeMounts", name="cloudsql", mount_path=CLOUDSQL_MOUNT)


def artifact_mount(props: ServerContainerProps, s: RunStructs) -> Any:
    return s("ContainersVolumeMounts", name="artifacts", mount_path=props.artifact_mount_path)


def private_egress(placement: RunPlacement, s: RunStructs) -> Any:
    """Direct VPC egress; only private ranges (Cloud SQL) go through the VPC."""
    return s(
        "VpcAccess",
        egress="PRIVATE_RANGES_ONLY",
        network_interfaces=[
            s("VpcAccessNetworkInterfaces", network=placement.network_name, subnetwork=placement.subnet_name)
        ],
    )
