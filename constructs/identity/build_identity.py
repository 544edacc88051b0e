"""The identity `gcloud builds submit` runs the server image build as, and its own bucket.

Organizations created since 2024-05-03 enforce `iam.automaticIamGrantsForDefaultServiceAccounts`:
Cloud Build's default identity (the Compute Engine default service account) has no roles, so a build
cannot read its source or push. This account holds only what a build needs: write its logs, read its
source from and write its logs to its own bucket, and push to the one registry repository (granted
there, by the registry). Whoever submits a build must be allowed to act as it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from constructs import Construct
from constructs.cdk.google.project_iam_custom_role import ProjectIamCustomRole
from constructs.cdk.google.project_iam_member import ProjectIamMember
from constructs.cdk.google.service_account import ServiceAccount
from constructs.cdk.google.service_account_iam_member import ServiceAccountIamMember
from constructs.data.private_bucket import PrivateBucket, PrivateBucketProps
from constructs.identity.iam_members import keyed_members

ACCOUNT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9]$")


# What `gcloud builds submit` needs of Cloud Build, and nothing more: create a build and follow it
# (cloudbuild.builds.editor would add updating, cancelling and approving anyone's builds). Builds
# exist only at project level, so the role is granted there; a build runs as a user-specified account
# only for callers with actAs on it, which the builders hold on this account alone.
BUILDER_PERMISSIONS = ("cloudbuild.builds.create", "cloudbuild.builds.get")


@dataclass(frozen=True)
class BuildIdentityProps:
    project: str
    region: str
    account_id: str
    # Holds build sources (`source/`) and build logs (`logs/`) only.
    bucket_name: str
    # default: nobody beyond those who may already act as any account of the project (owners,
    # editors); each member listed here may submit builds as this account.
    submitters: tuple[str, ...] = ()
    # default: sources and logs of replaced builds are deleted a week after they became noncurrent.
    noncurrent_version_days: int = 7
    # default: the bucket is kept by `terraform destroy`; False (protect_data = false) deletes it
    # with its objects, which are only build sources and logs.
    protect_from_destroy: bool = True

    def __post_init__(self) -> None:
        if not ACCOUNT_ID.match(self.account_id):
            raise ValueError(
                f"account_id {self.account_id!r}: a service account id is 6-30 lowercase letters, digits, hyphens"
            )
        if not BUCKET_NAME.match(self.bucket_name):
            raise ValueError(f"bucket_name {self.bucket_name!r}: a bucket name is 3-63 lowercase letters, digits, -_.")


class BuildIdentity(Construct):
    def __init__(self, scope: Construct, id: str, props: BuildIdentityProps) -> None:
        super().__init__(scope, id)
        self._project, self._region = props.project, props.region
        self._account = ServiceAccount(
            self,
            "account",
            project=props.project,
            account_id=props.account_id,
            display_name="Builds the MLflow server image (gcloud builds submit)",
        )
        ProjectIamMember(self, "logWriter", project=props.project, role="roles/logging.logWriter", member=self.member)
        self._bucket = PrivateBucket(
            self,
            "bucket",
            PrivateBucketProps(
                project=props.project,
                name=props.bucket_name,
                location=props.region,
                noncurrent_version_days=props.noncurrent_version_days,
                protect_from_destroy=props.protect_from_destroy,
                force_destroy=not props.protect_from_destroy,
            ),
        )
        # Sources in, logs out, nothing else: object user (no bucket or IAM administration).
        self._bucket.grant_object_user("bucket-object-user", self.member)
        submitters = keyed_members("BuildIdentityProps.submitters", props.submitters)
        if not submitters:
            return
        builder = self._builder_role(props)
        for key, member in submitters.items():
            # Acting as the account, creating builds, uploading sources and streaming the build log.
            ServiceAccountIamMember(
                self,
                f"submitter-{key}-acts-as",
                service_account_id=self._account.name,
                role="roles/iam.serviceAccountUser",
                member=member,
            )
            ProjectIamMember(self, f"submitter-{key}-builds", project=props.project, role=builder.name, member=member)
            self._bucket.grant_object_user(f"submitter-{key}-bucket", member)

    def _builder_role(self, props: BuildIdentityProps) -> ProjectIamCustomRole:
        return ProjectIamCustomRole(
            self,
            "builder-role",
            project=props.project,
            # Custom role ids take letters, digits, `_` and `.`: the account id, made one.
            role_id=f"{props.account_id.replace('-', '_')}_submitter",
            title="MLflow image builder",
            description="Submits and follows Cloud Build builds (gcloud builds submit); nothing else",
            permissions=list(BUILDER_PERMISSIONS),
        )

    @property
    def email(self) -> str:
        return self._account.email

    @property
    def member(self) -> str:
        return self._account.member

    @property
    def bucket_name(self) -> str:
        return self._bucket.bucket_name

    def build_command(self, source_dir: str, image: str) -> str:
        """The complete `gcloud builds submit` that runs as this account, with its own bucket."""
        return (
            f"gcloud builds submit {source_dir} --project={self._project} --region={self._region} "
            f"--service-account=projects/{self._project}/serviceAccounts/{self.email} "
            f"--gcs-source-staging-dir=gs://{self.bucket_name}/source --gcs-log-dir=gs://{self.bucket_name}/logs "
            f"--tag={image}"
        )
