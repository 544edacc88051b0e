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


def test_the_readme_names_the_stack_and_output_names_the_code_uses(app):
    assert "name_servers" in app.stacks["mlflow-example"]["output"]
    assert "migration_command" in app.stacks["mlflow-example"]["output"]
    assert "client_service_account" in app.stacks["mlflow-prod"]["output"]
    for stack in ("bootstrap", "mlflow-<env>-project", "mlflow-<env>"):
        assert f"`{stack}`" in README


def test_the_first_deploy_pushes_the_tag_the_service_runs(example_config):
    assert example_config.server_image.rsplit(":", 1)[1] in README
