"""The day-2 runbooks work as written: their environment-dependent commands are outputs with real names
and Terraform addresses, checked here against the synthesized stacks, and the README's commands match."""

from __future__ import annotations

import re

import pytest

from stacks.runbook import restored_instance_name
from tests.synth import one
from tests.test_readme import DOCS, README

RUNBOOK_OUTPUTS = (
    "deploy_command",
    "restore_clone_command",
    "restore_adopt_command",
    "empty_artifact_bucket_command",
    "destroy_command",
)


def output(stack, name):
    return stack["output"][name]["value"]


def reference(expression: str) -> tuple[str, str, str]:
    """`${type.name.attribute}` -> (type, name, attribute)."""
    return re.fullmatch(r"\$\{(\w+)\.([\w-]+)\.(\w+)\}", expression).groups()


def resolved(stack, text: str) -> str:
    """`text` with each `${type.name.attr}` replaced by that resource's literal attribute, when it has one."""

    def value(match):
        type_, name, attribute = reference(match.group(0))
        literal = stack["resource"][type_][name][attribute]
        return literal if "${" not in literal else match.group(0)

    return re.sub(r"\$\{[\w.-]+\}", value, text)


@pytest.mark.parametrize("name", ["mlflow-example", "mlflow-prod", "mlflow-small"])
def test_every_environment_prints_its_runbook_commands(app, name):
    assert set(RUNBOOK_OUTPUTS) <= set(app.stacks[name]["output"]), name


@pytest.mark.parametrize("name", ["mlflow-example", "mlflow-prod"])
def test_restore_adopts_the_clone_at_the_addresses_the_stack_has(app, name):
    """IAM login (example) and password login (prod) have different users; both are adopted."""
    stack = app.stacks[name]
    clone = output(stack, "restore_clone_command")
    current = one(stack, "google_sql_database_instance")["name"]
    project = stack["provider"]["google"][0]["project"]
    assert clone == f"gcloud sql instances clone {current} {current}-restored --project={project} --point-in-time=TIME"
    adopt = output(stack, "restore_adopt_command")
    assert app.stack_dir(name).is_dir()
    inner = re.fullmatch(rf"\(cd cdktf\.out/stacks/{name} && terraform init && (.*)\)", adopt).group(1)
    removed, *imports = inner.split(" && ")
    addresses = removed.removeprefix("terraform state rm ").split()
    types = [a.split(".")[0] for a in addresses]
    assert types == ["google_sql_database_instance", "google_sql_database", "google_sql_user"]
    for address in addresses:
        type_, key = address.split(".")
        assert key in stack["resource"][type_], f"{address} is not in the synthesized {name}"
    restored = f"{current}-restored"
    targets = dict(re.fullmatch(r"terraform import (\S+) (\S+)", line).groups() for line in imports)
    assert list(targets) == addresses
    instance, database, user = addresses
    assert targets[instance] == f"projects/{project}/instances/{restored}"
    database_name = one(stack, "google_sql_database")["name"]
    assert resolved(stack, targets[database]) == f"projects/{project}/instances/{restored}/databases/{database_name}"
    # The user's name is computed at apply (IAM login: the server account's e-mail, trimmed): the output
    # names that very user's `name`.
    assert re.fullmatch(rf"{project}/{restored}/\$\{{{re.escape(user)}\.name\}}", targets[user]), targets[user]


def test_a_restored_instance_is_restored_again_under_a_new_name():
    """An instance's name cannot be reused for about a week after it is deleted."""
    assert restored_instance_name("mlflow-db") == "mlflow-db-restored"
    assert restored_instance_name("mlflow-db-restored") == "mlflow-db-restored2"
    assert restored_instance_name("mlflow-db-restored2") == "mlflow-db-restored3"


def test_tear_down_empties_the_artifact_bucket_and_destroys_both_stacks(app):
    stack = app.stacks["mlflow-example"]
    bucket = one(stack, "google_storage_bucket")["name"]
    empty = resolved(stack, output(stack, "empty_artifact_bucket_command"))
    assert empty == f"gcloud storage rm --recursive --all-versions 'gs://{bucket}/**'"
    assert output(stack, "destroy_command") == "npx cdktf destroy mlflow-example mlflow-example-project"


def test_deploy_names_every_stack_cdktf_needs(app):
    """cdktf refuses `deploy mlflow-prod` alone: `dependencies are not included in the stacks to run`."""
    for name in ("mlflow-example", "mlflow-prod", "mlflow-small"):
        stacks = output(app.stacks[name], "deploy_command").removeprefix("npx cdktf deploy ").split()
        dependencies = app.manifest["stacks"][name]["dependencies"]
        assert dependencies and stacks == [*dependencies, name]


def test_every_cdktf_deploy_and_destroy_in_the_docs_names_the_stacks_it_needs():
    lines = re.findall(r"npx cdktf (?:deploy|destroy) [^`#\n]*", DOCS)
    assert len(lines) >= 5
    for line in lines:
        for environment in re.findall(r"(?<![\w-])mlflow-(\w+)(?![\w-])", line):
            assert f"mlflow-{environment}-project" in line, f"{line!r} lacks mlflow-{environment}-project"


def test_the_readme_runbooks_print_what_the_outputs_print(app):
    """The example's outputs, with its project as PROJECT_ID and the environment as the README's `prod`."""
    stack = app.stacks["mlflow-example"]
    project = stack["provider"]["google"][0]["project"]

    def as_in_readme(name):
        return (
            resolved(stack, output(stack, name)).replace(project, "PROJECT_ID").replace("mlflow-example", "mlflow-prod")
        )

    assert as_in_readme("ds_record_command") in README
    assert as_in_readme("empty_artifact_bucket_command") in README
    assert as_in_readme("destroy_command") in README
    assert as_in_readme("deploy_command") in README
    clone = as_in_readme("restore_clone_command").replace("=TIME", "=2026-12-01T09:30:00Z")
    assert clone in README
    for name in RUNBOOK_OUTPUTS:
        assert f"`{name}`" in README, name
    assert "ADDRESS_OF" not in README and "USER_NAME" not in README
