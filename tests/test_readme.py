"""The README is part of the product: its configuration table and commands match the code."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

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
    keys = set()
    for field in dataclasses.fields(Config):
        if dataclasses.is_dataclass(field.default) or field.name == "state":
            section = field.default if dataclasses.is_dataclass(field.default) else None
            names = [f.name for f in dataclasses.fields(section)] if section else ["bucket", "location"]
            keys |= {f"{field.name}.{name}" for name in names}
        else:
            keys.add(field.name)
    return keys


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
