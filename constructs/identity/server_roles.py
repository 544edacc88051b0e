"""The few project roles the MLflow server's account needs, each as narrow as IAM allows.

Cloud SQL has no instance-level IAM policy, so connecting and logging in are project roles; a
condition on the instance's resource name limits them to this deployment's instance. Writing logs and
metrics has no resource to narrow to. Secret and bucket access are granted on those resources.
"""

from __future__ import annotations

from dataclasses import dataclass

from constructs import Construct
from constructs.cdk import TerraformResourceLifecycle, Token
from constructs.cdk.google.project_iam_member import ProjectIamMember, ProjectIamMemberCondition

SQL_CLIENT_ROLE = "roles/cloudsql.client"
# Logging in to Cloud SQL as the account's IAM database user (cloudsql.instances.login).
DATABASE_LOGIN_ROLE = "roles/cloudsql.instanceUser"
TELEMETRY_ROLES = ("roles/logging.logWriter", "roles/monitoring.metricWriter")
# Every project role the MLflow stack may grant (either login mode): the deployer may grant these only.
PROJECT_ROLES = (SQL_CLIENT_ROLE, DATABASE_LOGIN_ROLE, *TELEMETRY_ROLES)


def on_instance(project: str, instance_name: str) -> str:
    """The IAM condition that holds only for one Cloud SQL instance (its resource name)."""
    return (
        "resource.type == 'sqladmin.googleapis.com/Instance' && "
        f"resource.name == 'projects/{project}/instances/{instance_name}'"
    )


@dataclass(frozen=True)
class ServerRolesProps:
    project: str
    # `serviceAccount:EMAIL` of the server's account (made by the project stack).
    member: str
    # The one Cloud SQL instance the server may connect and log in to; known at synth.
    sql_instance_name: str
    # default: False, the account connects to Cloud SQL but logs in with a password. True: it logs in
    # as its IAM database user (DATABASE_LOGIN_ROLE).
    database_login: bool = False

    def __post_init__(self) -> None:
        if not self.member.startswith("serviceAccount:"):
            raise ValueError(f"ServerRolesProps.member: {self.member!r} must be serviceAccount:EMAIL")
        if not self.sql_instance_name or Token.is_unresolved(self.sql_instance_name):
            raise ValueError(
                "ServerRolesProps.sql_instance_name: must be the instance's name, known at synth (the condition names it)"
            )


class ServerRoles(Construct):
    """No admin, editor or owner role; Cloud SQL roles hold on the server's own instance only."""

    def __init__(self, scope: Construct, id: str, props: ServerRolesProps) -> None:
        super().__init__(scope, id)
        sql_roles = (SQL_CLIENT_ROLE,) + ((DATABASE_LOGIN_ROLE,) if props.database_login else ())
        condition = ProjectIamMemberCondition(
            title=f"only the instance {props.sql_instance_name}"[:100],
            description="Cloud SQL has no instance-level IAM: the project role holds for this instance alone",
            expression=on_instance(props.project, props.sql_instance_name),
        )
        # A grant that gains or changes its condition is replaced; the new binding is another binding of
        # the policy, so making it first leaves no moment without the role (new connections fail then).
        keep_access = TerraformResourceLifecycle(create_before_destroy=True)
        self._roles = [
            ProjectIamMember(
                self,
                role.split("/")[-1],
                project=props.project,
                role=role,
                member=props.member,
                condition=condition,
                lifecycle=keep_access,
            )
            for role in sql_roles
        ] + [
            ProjectIamMember(self, role.split("/")[-1], project=props.project, role=role, member=props.member)
            for role in TELEMETRY_ROLES
        ]

    @property
    def grants(self) -> list[ProjectIamMember]:
        return list(self._roles)
