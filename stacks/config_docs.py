"""The configuration's JSON Schema and the configuration table (docs/configuration.md), both generated from the model.

Regenerate after changing a key:  python -m stacks.config_docs   (tests/test_config_docs.py fails until then)
"""

from __future__ import annotations

import json
import sys
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from stacks.config import REPO_ROOT, SERVER_IMAGE_TAG, Config

SCHEMA = REPO_ROOT / "config" / "mlflow-config.schema.json"
# The configuration reference the README links to; the table sits between the markers below.
README = REPO_ROOT / "docs" / "configuration.md"
REGENERATE = "python -m stacks.config_docs"
TABLE_START = f"<!-- configuration table: generated from stacks/config.py by `{REGENERATE}` -->"
TABLE_END = "<!-- end of the configuration table -->"
# Defaults computed from other keys, in words.
SHOWN_DEFAULTS = {
    "artifact_location": "the region",
    "state.project": "`project_id`",
    "state.location": "the region",
    "server.image": f"`REGION-docker.pkg.dev/PROJECT/PREFIX-images/mlflow-server:{SERVER_IMAGE_TAG}`",
    "budget.monthly_usd": "required with an account",
    "database.instance_name": "`<name_prefix>-db`",
    "access.teams.workspace": "the team's `name`",
}


def schema_text() -> str:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **Config.model_json_schema()}
    return json.dumps(schema, indent=2) + "\n"


def _default(key: str, field: FieldInfo) -> str:
    if key in SHOWN_DEFAULTS:
        return SHOWN_DEFAULTS[key]
    if field.default is PydanticUndefined:
        return "required"
    if field.default in ("", ()):
        return "empty" if field.default == "" else "`[]`"
    return f"`{field.default}`"


def _model_in(annotation: Any, container: type) -> type[BaseModel] | None:
    """The section model `annotation` is (`container` None: `Model` or `Model | None`; tuple: `tuple[Model, ...]`)."""
    if container is tuple:
        args = get_args(annotation) if get_origin(annotation) is tuple else ()
    else:
        args = (annotation, *get_args(annotation))
    return next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)


def _section_rows(title: str, prefix: str, section: type[BaseModel]) -> list[str]:
    rows = []
    for key, sub in section.model_fields.items():
        if table := _model_in(sub.annotation, tuple):
            rows += _section_rows(f"[[{prefix}.{key}]]", f"{prefix}.{key}", table)
        else:
            rows.append(f"| `{title} {key}` | {_default(f'{prefix}.{key}', sub)} | {sub.description} |")
    return rows


def _rows() -> list[str]:
    rows = []
    for name, field in Config.model_fields.items():
        if section := _model_in(field.annotation, type(None)):
            rows += _section_rows(f"[{name}]", name, section)
        else:
            rows.append(f"| `{name}` | {_default(name, field)} | {field.description} |")
    return rows


def table_text() -> str:
    return "\n".join([TABLE_START, "| key | default | notes |", "|---|---|---|", *_rows(), TABLE_END])


def readme_text(readme: str) -> str:
    """`readme` with the text between the table's markers replaced by the generated table."""
    start, end = readme.index(TABLE_START), readme.index(TABLE_END) + len(TABLE_END)
    return readme[:start] + table_text() + readme[end:]


def main() -> int:
    SCHEMA.write_text(schema_text())
    README.write_text(readme_text(README.read_text()))
    print(
        f"wrote {SCHEMA.relative_to(REPO_ROOT)} and the configuration table of {README.relative_to(REPO_ROOT)}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
