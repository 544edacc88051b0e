"""The Artifact Registry Docker repository the server image is pushed to."""

from __future__ import annotations

from dataclasses import dataclass

from constructs import Construct
from constructs.cdk.google.artifact_registry_repository import (
    ArtifactRegistryRepository,
    ArtifactRegistryRepositoryCleanupPolicies,
    ArtifactRegistryRepositoryCleanupPoliciesCondition,
    ArtifactRegistryRepositoryCleanupPoliciesMostRecentVersions,
    ArtifactRegistryRepositoryDockerConfig,
)
from constructs.cdk.google.artifact_registry_repository_iam_member import ArtifactRegistryRepositoryIamMember


@dataclass(frozen=True)
class ImageRegistryProps:
    project: str
    region: str
    repository_id: str
    # default: the 10 most recent versions are kept, untagged images older than 30 days are deleted.
    keep_recent_versions: int = 10

    def __post_init__(self) -> None:
        if not self.repository_id:
            raise ValueError("ImageRegistryProps.repository_id: is empty; name the repository")
        if self.keep_recent_versions < 1:
            raise ValueError(
                f"ImageRegistryProps.keep_recent_versions: {self.keep_recent_versions} must be 1 or more, "
                "or the image the service runs may be cleaned up"
            )


class ImageRegistry(Construct):
    """A regional Docker repository with immutable tags, so a tag in config always means one image."""

    def __init__(self, scope: Construct, id: str, props: ImageRegistryProps) -> None:
        super().__init__(scope, id)
        self._repository = ArtifactRegistryRepository(
            self,
            "repository",
            project=props.project,
            location=props.region,
            repository_id=props.repository_id,
            format="DOCKER",
            description="MLflow server images",
            docker_config=ArtifactRegistryRepositoryDockerConfig(immutable_tags=True),
            cleanup_policies=[
                ArtifactRegistryRepositoryCleanupPolicies(
                    id="keep-recent",
                    action="KEEP",
                    most_recent_versions=ArtifactRegistryRepositoryCleanupPoliciesMostRecentVersions(
                        keep_count=props.keep_recent_versions
                    ),
                ),
                ArtifactRegistryRepositoryCleanupPolicies(
                    id="delete-old-untagged",
                    action="DELETE",
                    condition=ArtifactRegistryRepositoryCleanupPoliciesCondition(
                        tag_state="UNTAGGED", older_than="2592000s"
                    ),
                ),
            ],
        )
        self._project = props.project
        self._region = props.region

    @property
    def repository_id(self) -> str:
        return self._repository.repository_id

    def grant_writer(self, key: str, member: str) -> None:
        """Push (and overwrite untagged) images in this repository only; for the build identity."""
        self._grant(key, member, "roles/artifactregistry.writer")

    def grant_reader(self, key: str, member: str) -> None:
        self._grant(key, member, "roles/artifactregistry.reader")

    def _grant(self, key: str, member: str, role: str) -> None:
        ArtifactRegistryRepositoryIamMember(
            self,
            key,
            project=self._project,
            location=self._region,
            repository=self._repository.name,
            role=role,
            member=member,
        )
