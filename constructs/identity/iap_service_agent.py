"""Makes sure the IAP service agent exists, so it can be granted run.invoker on the service.

The GA provider cannot create service identities (google_project_service_identity is beta-only), and
enabling iap.googleapis.com does not reliably create the agent; `gcloud beta services identity create`
does, idempotently, where Terraform runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from constructs import Construct
from constructs.cdk import LocalExecProvisioner, terraform_data


def iap_service_agent_member(project_number: str) -> str:
    """The identity IAP calls Cloud Run as."""
    return f"serviceAccount:service-{project_number}@gcp-sa-iap.iam.gserviceaccount.com"


@dataclass(frozen=True)
class IapServiceAgentProps:
    project: str
    project_number: str


class IapServiceAgent(Construct):
    def __init__(self, scope: Construct, id: str, props: IapServiceAgentProps) -> None:
        super().__init__(scope, id)
        terraform_data(
            self,
            "identity",
            input={"project": props.project},
            provisioners=[
                LocalExecProvisioner(
                    type="local-exec",
                    command=f"gcloud beta services identity create --service=iap.googleapis.com --project={props.project}",
                )
            ],
        )
        self._member = iap_service_agent_member(props.project_number)

    @property
    def member(self) -> str:
        return self._member
