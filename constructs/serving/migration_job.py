"""The Cloud Run job that migrates the MLflow schema; the server never migrates on start."""

from __future__ import annotations

from dataclasses import dataclass

from constructs import Construct
from constructs.cdk import LocalExecProvisioner, TerraformResource, terraform_data
from constructs.cdk.google.cloud_run_v2_job import (
    CloudRunV2Job,
    CloudRunV2JobTemplate,
    CloudRunV2JobTemplateTemplate,
    CloudRunV2JobTemplateTemplateContainers,
    CloudRunV2JobTemplateTemplateContainersResources,
)
from constructs.serving.server_container import (
    JOB_STRUCTS,
    RunPlacement,
    ServerContainerProps,
    cloudsql_mount,
    cloudsql_volume,
    mount_as_image_user,
    private_egress,
    server_env,
)

MIGRATE_COMMAND = "/app/migrate.sh"


@dataclass(frozen=True)
class MigrationJobProps:
    name: str
    placement: RunPlacement
    container: ServerContainerProps

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("MigrationJobProps.name: is empty; name the Cloud Run job")


class MigrationJob(Construct):
    """One task, no parallelism and no retries: `mlflow db upgrade` must never run twice at once.

    The job is executed by the apply itself whenever the image changes (and on the first apply), and
    the service waits for that execution: one `cdktf deploy` migrates, then rolls the new revision, so
    a server never starts on a schema older than its code (MLflow refuses to) and never migrates itself.
    """

    def __init__(self, scope: Construct, id: str, props: MigrationJobProps) -> None:
        super().__init__(scope, id)
        # The one definition of the command: the apply runs it, the stack's output shows it.
        self._execute_command = (
            f"gcloud run jobs execute {props.name} --project={props.placement.project} "
            f"--region={props.placement.region} --wait"
        )
        c = props.container
        s = JOB_STRUCTS
        # The job needs only the database; should it ever mount the bucket, it mounts it as the image's user.
        volumes = [cloudsql_volume(c, s)]
        self._job = CloudRunV2Job(
            self,
            "job",
            project=props.placement.project,
            location=props.placement.region,
            name=props.name,
            deletion_protection=False,
            template=CloudRunV2JobTemplate(
                task_count=1,
                parallelism=1,
                template=CloudRunV2JobTemplateTemplate(
                    service_account=props.placement.service_account_email,
                    max_retries=0,
                    timeout="900s",
                    vpc_access=private_egress(props.placement, s),
                    volumes=volumes,
                    containers=[
                        CloudRunV2JobTemplateTemplateContainers(
                            name="migrate",
                            image=c.image,
                            command=[MIGRATE_COMMAND],
                            env=server_env(c, s),
                            resources=CloudRunV2JobTemplateTemplateContainersResources(
                                limits={"cpu": "1", "memory": "1Gi"}
                            ),
                            volume_mounts=[cloudsql_mount(s)],
                        )
                    ],
                ),
            ),
        )
        mount_as_image_user(self._job, "template.template.volumes", volumes)

        self._execution = terraform_data(
            self,
            "execution",
            triggers_replace={"image": c.image, "job": self._job.name},
            provisioners=[
                LocalExecProvisioner(
                    type="local-exec",
                    command=self.execute_command,
                )
            ],
            depends_on=[self._job],
        )

    @property
    def execute_command(self) -> str:
        """Runs the migration and waits for it (what every apply that changes the image runs)."""
        return self._execute_command

    @property
    def job_name(self) -> str:
        return self._job.name

    @property
    def execution(self) -> TerraformResource:
        """Depend on this to start only after the schema matches the image."""
        return self._execution
