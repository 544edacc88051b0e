"""The README is part of the product: its configuration table and commands match the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

from pydantic import BaseModel

from stacks.config import Config
from tests.synth import one, resource

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
# The README and the reference it links to (docs/*.md), read as one document.
DOCS = README + "".join(p.read_text() for p in sorted((REPO / "docs").glob("*.md")))


def documented_keys() -> set[str]:
    keys = set()
    for row in re.findall(r"^\| (`[^|]+) \|", DOCS, re.M):
        if table := re.match(r"`\[\[(\w+)\.(\w+)\]\] ", row):  # an array of tables: [[section.key]] field
            keys.add(f"{table.group(1)}.{table.group(2)}")
            continue
        section = re.match(r"`\[(\w+)\] ", row)
        for key in re.findall(r"`(?:\[\w+\] )?(\w+)`", row):
            keys.add(f"{section.group(1)}.{key}" if section else key)
    return keys


def config_keys() -> set[str]:
    """Every key of the config, `section.key` for the fields of each section: read from the model, so a
    new section or a required one (like [state]) needs no edit here."""
    keys = set()
    for name, field in Config.model_fields.items():
        # A section, or an optional one (`Section | None`, like [access]).
        section = next((a for a in (field.annotation, *get_args(field.annotation)) if isinstance(a, type)), None)
        if isinstance(section, type) and issubclass(section, BaseModel):
            keys |= {f"{name}.{key}" for key in section.model_fields}
        else:
            keys.add(name)
    return keys


def test_sections_are_found_from_the_types_including_required_ones():
    assert {"state.bucket", "state.location", "server.workers", "ci.github_repository"} <= config_keys()
    assert not {"state", "server"} & config_keys()


def test_every_configuration_key_is_documented():
    assert config_keys() <= documented_keys(), config_keys() - documented_keys()


def test_every_output_the_readme_names_exists(app):
    outputs = {name for stack in app.stacks.values() for name in stack.get("output", {})}
    named = {"name_servers", "migration_command", "client_service_accounts", "image_build_command"}
    assert named <= outputs, named - outputs
    for name in named:
        assert f"`{name}`" in DOCS or f"<{name} output>" in DOCS, name


def test_the_readme_names_the_stacks_the_app_makes(app):
    for stack in ("bootstrap", "mlflow-<env>-project", "mlflow-<env>"):
        assert f"`{stack}`" in DOCS


def test_the_image_tag_is_the_pinned_mlflow_version_and_the_readme_pushes_it(example_config):
    """Registry tags are immutable: a new MLflow pin must come with a new tag."""
    pinned = re.search(r"^mlflow==([\d.]+)", (REPO / "docker" / "requirements.txt").read_text(), re.M).group(1)
    tag = example_config.server_image.rsplit(":", 1)[1]
    assert tag == f"mlflow-{pinned}"
    assert re.search(r'^mlflow = "==([\d.]+)"', (REPO / "Pipfile").read_text(), re.M).group(1) == pinned
    assert re.findall(r"--tag=\S+:([\w.-]+)", README) == [tag]


def test_constructs_stays_a_namespace_portion_of_the_library_and_the_readme_says_why():
    assert not (REPO / "constructs" / "__init__.py").exists()
    assert "`constructs/` has no `__init__.py` on purpose" in DOCS
    import constructs

    assert str(REPO / "constructs") in list(constructs.__path__) and hasattr(constructs, "Construct")


def runbooks() -> str:
    start = README.index("## Day 2: runbooks")
    return README[start : README.index("\n## ", start + 1)]


def deployer_roles_table() -> str:
    return re.search(r"<!-- deployer-roles -->\n(.*?)<!-- /deployer-roles -->", DOCS, re.S).group(1)


def test_the_deployer_roles_the_readme_lists_are_the_ones_ci_grants():
    from constructs.identity.ci_identity import DEPLOYER_IAM_ADMIN_ROLE, DEPLOYER_ROLES

    assert re.findall(r"^\| `(roles/[\w.]+)` \|", deployer_roles_table(), re.M) == [
        *DEPLOYER_ROLES,
        DEPLOYER_IAM_ADMIN_ROLE,
    ]


def test_the_readme_names_every_role_the_deployer_may_grant():
    from constructs.identity.server_roles import PROJECT_ROLES

    [row] = [line for line in deployer_roles_table().splitlines() if "projectIamAdmin" in line]
    assert "modifiedGrantsByRole" in row
    assert sorted(re.findall(r"`(\w+\.\w+)`(?=[,)]| \()", row)) == sorted(
        r.removeprefix("roles/") for r in PROJECT_ROLES
    )


def test_the_runbooks_name_what_the_default_prefix_creates(mlflow, example_config):
    """The runbooks' commands work as pasted for `name_prefix = "mlflow"`: the names they use are the
    names the example stack gives its instance, bucket, backend service and job."""
    assert example_config.name_prefix == "mlflow"
    project = example_config.project_id
    named = {
        "google_sql_database_instance": one(mlflow, "google_sql_database_instance")["name"],
        "google_compute_backend_service": one(mlflow, "google_compute_backend_service")["name"],
        "google_storage_bucket": resource(mlflow, "google_storage_bucket", "artifacts/bucket")["name"].replace(
            project, "PROJECT_ID"
        ),
    }
    text = runbooks()
    for type_, name in named.items():
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), (
            f"{type_} {name!r} is not the name the runbooks use"
        )
    # The database's and the user's names are in the restore_adopt_command output (tests/test_runbook.py).


def test_tear_down_lifts_exactly_the_protection_the_stack_has(mlflow):
    protected = sorted(
        type_
        for type_, items in mlflow["resource"].items()
        for body in items.values()
        if body.get("lifecycle", {}).get("prevent_destroy")
    )
    assert protected, "nothing carries prevent_destroy: the tear-down runbook describes protection that is gone"
    text = runbooks()
    for type_ in protected:
        assert {
            "google_sql_database_instance": "Cloud SQL",
            "google_storage_bucket": "artifact bucket",
            "google_secret_manager_secret": "secret",
        }[type_] in text
