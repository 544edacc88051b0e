"""Teams on one server (`[access]`): what the tracking service needs for MLflow's own permissions.

MLflow's auth app insists on a bootstrap admin with a password before it starts. Here it is
generated at deploy (an ephemeral `random_password`: in no plan or state), written to Secret Manager
only (write-only version) and read by the server from there: nobody types it, and it opens nothing,
because every request is authenticated as its IAP-verified e-mail (docker/iap_access.py) and the
bootstrap admin's name has no '@'. The access model itself is not secret: a plain environment value the server applies at start.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from constructs import Construct
from constructs.cdk import ephemeral_random_password
from constructs.cdk.google.secret_manager_secret_iam_member import SecretManagerSecretIamMember
from constructs.data.write_only_secret import grant_secret_access, regional_secret, write_only_version

ACCESS_ENV = "MLFLOW_IAP_ACCESS"
ADMIN_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"


@dataclass(frozen=True)
class AccessControlProps:
    project: str
    region: str
    secret_id: str
    # The server's access model: {"admins": [...], "others": ..., "teams": [{name, workspace, members}]}.
    model: dict[str, Any]
    # default: `terraform destroy` refuses to delete the secret.
    protect_from_destroy: bool = True

    def __post_init__(self) -> None:
        if not self.secret_id:
            raise ValueError("AccessControlProps.secret_id: is empty; name the bootstrap admin's secret")
        if not self.model.get("teams"):
            raise ValueError(
                "AccessControlProps.model: has no teams; give at least one team or no access control at all"
            )


class AccessControl(Construct):
    def __init__(self, scope: Construct, id: str, props: AccessControlProps) -> None:
        super().__init__(scope, id)
        self._model = json.dumps(props.model, sort_keys=True, separators=(",", ":"))
        # Ephemeral: in no plan and no state. Write-only, sent once: MLflow reads it only to create the
        # bootstrap admin, so a later version would change nothing.
        password = ephemeral_random_password(self, "admin-password", length=40)
        self._secret = regional_secret(
            self,
            "admin-secret",
            project=props.project,
            secret_id=props.secret_id,
            region=props.region,
            protect_from_destroy=props.protect_from_destroy,
        )
        self._version = write_only_version(self, "admin-secret-version", secret=self._secret, data=password, revision=1)

    @property
    def model_json(self) -> str:
        return self._model

    @property
    def secret_id(self) -> str:
        return self._secret.secret_id

    def grant_access(self, key: str, member: str) -> SecretManagerSecretIamMember:
        return grant_secret_access(self, key, self._secret, member)

    def env(self, s: Any) -> list[Any]:
        """The tracking service's variables (`s`: server_container.RunStructs of the service)."""
        secret_ref = s(
            "ContainersEnvValueSourceSecretKeyRef", secret=self._secret.secret_id, version=self._version.version
        )
        return [
            s("ContainersEnv", name=ACCESS_ENV, value=self._model),
            s(
                "ContainersEnv",
                name=ADMIN_PASSWORD_ENV,
                value_source=s("ContainersEnvValueSource", secret_key_ref=secret_ref),
            ),
        ]
