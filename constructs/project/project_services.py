"""The Google APIs a stack uses, enabled in the project and left enabled on destroy."""

from __future__ import annotations

from dataclasses import dataclass

from constructs import Construct
from constructs.cdk import TerraformResource
from constructs.cdk.google.project_service import ProjectService


@dataclass(frozen=True)
class ProjectServicesProps:
    project: str
    services: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.services:
            raise ValueError("ProjectServicesProps.services: is empty; list the APIs the stack uses")
        for service in self.services:
            if self.services.count(service) > 1 or not service.endswith(".googleapis.com"):
                raise ValueError(
                    f"ProjectServicesProps.services: {service!r} must be a NAME.googleapis.com listed once"
                )


class ProjectServices(Construct):
    """Enables each API; disabling one on destroy would break whatever else in the project uses it."""

    def __init__(self, scope: Construct, id: str, props: ProjectServicesProps) -> None:
        super().__init__(scope, id)
        self._services = [
            ProjectService(
                self,
                service.split(".")[0],
                project=props.project,
                service=service,
                disable_on_destroy=False,
                disable_dependent_services=False,
            )
            for service in props.services
        ]

    @property
    def enabled(self) -> list[TerraformResource]:
        """Resources to depend on before using any of these APIs."""
        return list(self._services)
