"""The README is part of the product: its configuration table and commands match the code."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from stacks.config import Config

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def documented_keys() -> set[str]:
    keys = set()
    for row in re.findall(r"^\| (`[^|]+) \|", README, re.M):
        section = re.match(r"`\[(\w+)\] ", row)
        for key in re.findall(r"`(?:\[\w+\] )?(\w+)`", row):
            keys.add(f"{section.group(1)}.{key}" if section else key)
    return keys


def config_keys() -> set[str]:
    """Every key of the config, `section.key` for the fields of each section: read from the model, so a
    new section or a required one (like [state]) needs no edit here."""
    keys = set()
    for name, field in Config.model_fields.items():
        section = field.annotation
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
    named = {"name_servers", "migration_command", "client_service_account", "image_build_command"}
    assert named <= outputs, named - outputs
    for name in named:
        assert f"`{name}`" in README or f"<{name} output>" in README, name


def test_the_readme_names_the_stacks_the_app_makes(app):
    for stack in ("bootstrap", "mlflow-<env>-project", "mlflow-<env>"):
        assert f"`{stack}`" in README


def test_the_image_tag_is_the_pinned_mlflow_version_and_the_readme_pushes_it(example_config):
    """Registry tags are immutable: a new MLflow pin must come with a new tag."""
    pinned = re.search(r"^mlflow==([\d.]+)", (REPO / "docker" / "requirements.txt").read_text(), re.M).group(1)
    tag = example_config.server_image.rsplit(":", 1)[1]
    assert tag == f"mlflow-{pinned}"
    assert re.findall(r"--tag=\S+:([\w.-]+)", README) == [tag]


def test_constructs_stays_a_namespace_portion_of_the_library_and_the_readme_says_why():
    assert not (REPO / "constructs" / "__init__.py").exists()
    assert "`constructs/` has no `__init__.py` on purpose" in README
    import constructs

    assert str(REPO / "constructs") in list(constructs.__path__) and hasattr(constructs, "Construct")
