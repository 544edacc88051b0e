"""The schema editors check TOML against and the README's configuration table are generated from the model."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import jsonschema
import pytest

from stacks.config import parse_config
from stacks.config_docs import README, REGENERATE, SCHEMA, readme_text, schema_text

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted((REPO / "config").glob("*.toml"))
DIRECTIVE = "#:schema ./mlflow-config.schema.json"


def validator() -> jsonschema.Draft202012Validator:
    schema = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    schema.check_schema(schema.schema)
    return schema


def test_the_committed_schema_is_the_models():
    assert SCHEMA.read_text() == schema_text(), f"{SCHEMA.name} is stale; regenerate it with: {REGENERATE}"


def test_the_readme_configuration_table_is_the_models():
    readme = README.read_text()
    assert readme == readme_text(readme), f"README's configuration table is stale; regenerate it with: {REGENERATE}"


def test_the_table_documents_a_default_of_every_kind():
    readme = README.read_text()
    for row in (
        "| `environment` | required |",
        "| `[server] workers` | `1` |",
        "| `[dns] existing_zone` | empty |",
        "| `[state] location` | the region |",
        "| `allowed_domains` | `[]` |",
    ):
        assert row in readme, row


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_names_the_schema_and_passes_it(path):
    text = path.read_text()
    assert text.splitlines()[0] == DIRECTIVE, f"{path.name}: start it with the taplo directive {DIRECTIVE!r}"
    assert list(validator().iter_errors(tomllib.loads(text))) == []
    parse_config(text, path.name)


@pytest.mark.parametrize(
    "edit, where",
    [
        (("[server]\n", "[server]\nreplicas = 3\n"), "replicas"),
        (("region = ", 'regoin = "europe-west1"\nregion = '), "regoin"),
        (("workers = 1", 'workers = "1"'), "'1' is not of type 'integer'"),
        (('region = "europe-west1"', 'region = "us-central"'), "'us-central' is not one of"),
    ],
)
def test_the_schema_rejects_what_the_model_rejects(edit, where):
    example = (REPO / "config" / "example.toml").read_text()
    assert example.count(edit[0]) == 1
    errors = [error.message for error in validator().iter_errors(tomllib.loads(example.replace(*edit)))]
    assert any(where in message for message in errors), errors
