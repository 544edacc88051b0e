"""The apply's upgrade window around the schema migration: backup, writers stopped, reopened after."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from constructs import Construct
from constructs.cdk import LocalExecProvisioner, TerraformResource, Token, terraform_data

# gcloud's names for the service's ingress settings.
CLOSED_INGRESS = "internal"
"""Only VPC-internal sources: the external load balancer, the one way in, is refused."""
OPEN_INGRESSES = {
    "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER": "internal-and-cloud-load-balancing",
    "INGRESS_TRAFFIC_ALL": "all",
}
"""What the service may declare (behind the load balancer; direct IAP, with IAP on the service
checking every request), by its API name, and gcloud's name for it."""


@dataclass(frozen=True)
class SchemaUpgradeProps:
    project: str
    region: str
    sql_instance_name: str
    service_name: str
    """The Cloud Run service's plain name, never a reference to it: the window must close before
    the service's new revision, so nothing here may wait for the service."""
    image: str
    # default: requests already inside the old revision when the ingress closes get 20 s to finish.
    drain_seconds: int = 20
    # default: the load balancer only. What `reopen` sets back: the ingress the service declares
    # (TrackingService.ingress), by its API name.
    open_ingress: str = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"

    def __post_init__(self) -> None:
        if not self.service_name or Token.is_unresolved(self.service_name):
            raise ValueError(
                f"SchemaUpgradeProps.service_name: {self.service_name!r} must be the service's plain name; "
                "a reference to the service would make the upgrade wait for the revision it must precede"
            )
        if self.open_ingress not in OPEN_INGRESSES:
            raise ValueError(
                f"SchemaUpgradeProps.open_ingress: {self.open_ingress!r} must be one of {', '.join(OPEN_INGRESSES)} "
                "(the ingress the service declares)"
            )
        if not 0 <= self.drain_seconds <= 600:
            raise ValueError(f"SchemaUpgradeProps.drain_seconds: {self.drain_seconds} must be 0 to 600")


class SchemaUpgrade(Construct):
    """What every apply that changes the image does around the migration job, in this order:

    1. `backup`: an on-demand Cloud SQL backup (the restore point; README "Migrations and upgrades").
    2. `close`: the service's ingress set to internal only, then `drain_seconds` for requests in
       flight. Every client comes through the external load balancer, so this stops every writer at
       Cloud Run's front end at once, without a new revision and without touching IAM (whose changes
       take minutes to spread). Traffic cannot go to zero on Cloud Run (a service always routes 100%
       to some revision), and scaling the old revision to zero would only queue requests, not refuse
       them. Skipped on the first apply, when no service exists yet and nothing writes.
    3. the migration job's execution, which the stack makes wait for `close`;
    4. the service's new revision, which waits for the migration (the stack wires it);
    5. `reopen`: the ingress back to what the service declares, once the new revision serves.

    A failed step stops the apply there: a failed migration leaves the old revision in place behind
    the closed ingress, never a new revision on a half-migrated schema. Each step is a
    `terraform_data` replaced when the image changes, so it runs again on the next image only.
    """

    def __init__(self, scope: Construct, id: str, props: SchemaUpgradeProps) -> None:
        super().__init__(scope, id)
        where = f"--project={props.project} --region={props.region}"
        service = f"gcloud run services update {props.service_name} {where} --quiet"
        self._reopen_command = f"{service} --ingress={OPEN_INGRESSES[props.open_ingress]}"
        exists = (
            f"gcloud run services list {where} --filter=metadata.name={props.service_name} "
            "--format='value(metadata.name)'"
        )
        description = shlex.quote(f"before the MLflow schema upgrade to {props.image}")
        steps = {
            "backup": f"gcloud sql backups create --instance={props.sql_instance_name} "
            f"--project={props.project} --description={description}",
            # A failing `list` fails the step: only a service that is really absent is not closed.
            "close": f'found=$({exists}) && if [ -n "$found" ]; then {service} --ingress={CLOSED_INGRESS} '
            f"&& sleep {props.drain_seconds}; fi",
            "reopen": self._reopen_command,
        }
        self._steps: dict[str, TerraformResource] = {}
        previous: list[TerraformResource] = []
        for step, command in steps.items():
            self._steps[step] = terraform_data(
                self,
                step,
                triggers_replace={"image": props.image},
                provisioners=[LocalExecProvisioner(type="local-exec", command=command)],
                depends_on=previous or None,
            )
            previous = [self._steps[step]]

    @property
    def writers_stopped(self) -> TerraformResource:
        """The migration waits for this: backed up, ingress closed, in-flight requests drained."""
        return self._steps["close"]

    @property
    def reopen(self) -> TerraformResource:
        """Make this wait for the service: the ingress reopens on the new revision only."""
        return self._steps["reopen"]

    @property
    def reopen_command(self) -> str:
        """Reopens the service by hand, after a failed upgrade has been dealt with."""
        return self._reopen_command
