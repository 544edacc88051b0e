"""Arguments the API returns in its own order or form are sent that way, so a plan of an unchanged
deployment is empty. Read from the provider's source (hashicorp/terraform-provider-google):

* Cloud Run v2 `template.volumes` and `containers.volume_mounts` are TypeList, flattened in the order
  the API returns, which puts the Cloud SQL volume (and its mount) last: sent first, every plan would
  show them swapped (cloud-foundation-fabric's cloud-run-v2 module puts them last for this reason).
* Order-free already (TypeSet): containers `env`, SQL `database_flags`, registry `cleanup_policies`;
  IAM `member` is compared case-insensitively by the provider (`iamMemberCaseDiffSuppress`).
"""

from __future__ import annotations

import pytest

from tests.synth import all_resources

RUN_TEMPLATES = {
    "google_cloud_run_v2_service": lambda body: body["template"],
    "google_cloud_run_v2_job": lambda body: body["template"]["template"],
}


def run_templates(app):
    return [
        (f"{name}/{path}", RUN_TEMPLATES[type_](body))
        for name, stack in app.stacks.items()
        for type_, path, body in all_resources(stack)
        if type_ in RUN_TEMPLATES
    ]


def test_both_cloud_run_resources_are_checked(app):
    assert len(run_templates(app)) == 8  # a service and a job in each of the four environments


@pytest.mark.parametrize("part", ["volumes", "volume_mounts"])
def test_the_cloud_sql_volume_and_its_mount_come_last_as_the_api_returns_them(app, part):
    for where, template in run_templates(app):
        items = template["volumes"] if part == "volumes" else template["containers"][0]["volume_mounts"]
        names = [item["name"] for item in items]
        assert names[-1] == "cloudsql", f"{where}: {part} {names} must end with the Cloud SQL one"
