"""docs/architecture.md stays true: the imports the code makes follow its table, it names every
package, and every resource type the app synthesizes has a place on it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAGE = (REPO / "docs" / "architecture.md").read_text()
DOCKER_MODULES = {p.stem for p in (REPO / "docker").glob("*.py")}
CONSTRUCT_GROUPS = sorted(p.parent.name for p in (REPO / "constructs").glob("*/__init__.py"))


def section(title: str) -> str:
    start = PAGE.index(f"## {title}\n")
    end = PAGE.find("\n## ", start + 1)
    return PAGE[start : end if end != -1 else None]


def import_rules() -> dict[str, list[str]]:
    """{package: what it may import}, read from the page's Imports table."""
    rules = {}
    for row in re.findall(r"^\| `([\w.]+)` \| (.+) \|$", section("Imports"), re.M):
        rules[row[0]] = re.findall(r"`([\w.*]+)`", row[1])
    return rules


def package_of(module: str) -> str | None:
    """The page's package a dotted module name belongs to; None for the standard library, installed
    packages and the `constructs` library itself."""
    parts = module.split(".")
    if parts[0] == "constructs" and len(parts) > 1 and (parts[1] == "cdk" or parts[1] in CONSTRUCT_GROUPS):
        return f"constructs.{parts[1]}"
    if parts[0] in ("main", "stacks", "tests"):
        return parts[0]
    if parts[0] in DOCKER_MODULES:
        return "docker"
    if parts[0] == "mlflow_iap_auth":
        return "client"
    return None


def package_of_file(path: Path) -> str:
    parts = path.relative_to(REPO).parts
    if parts[0] == "constructs":
        return f"constructs.{Path(parts[1]).stem}"
    return {"main.py": "main", "stacks": "stacks", "docker": "docker", "client": "client"}[parts[0]]


def imports_of(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append(node.module)
    return found


def violations(path_package: str, imported: list[str], rules: dict[str, list[str]]) -> list[str]:
    allowed = rules[path_package]
    problems = []
    for module in imported:
        target = package_of(module)
        if target is None or target == path_package:
            continue
        if not any(target == a or (a.endswith(".*") and target.startswith(a[:-1])) for a in allowed):
            problems.append(f"{path_package} imports {module} ({target}); the page allows {allowed or 'nothing'}")
    return problems


def code_files() -> list[Path]:
    return sorted(
        [REPO / "main.py"]
        + [p for folder in ("stacks", "constructs", "docker", "client") for p in (REPO / folder).rglob("*.py")]
    )


def test_every_import_follows_the_pages_table():
    rules = import_rules()
    files = code_files()
    assert len(files) > 40, f"found only {len(files)} files: the walk is looking in the wrong place"
    problems = []
    for path in files:
        package = package_of_file(path)
        assert package in rules, f"{path.relative_to(REPO)}: package {package} has no row in the Imports table"
        problems += [f"{path.relative_to(REPO)}: {p}" for p in violations(package, imports_of(path.read_text()), rules)]
    assert not problems, "imports against docs/architecture.md:\n  " + "\n  ".join(problems)


def test_an_import_against_the_table_is_caught():
    rules = import_rules()
    assert violations("constructs.network", ["constructs.data.private_bucket"], rules)
    assert violations("constructs.data", ["stacks.config"], rules)
    assert violations("docker", ["constructs.cdk"], rules)
    assert violations("client", ["iap_identity"], rules)
    assert violations("stacks", ["main"], rules)
    assert not violations("stacks", ["constructs.serving.tracking_service", "constructs", "pydantic"], rules)
    assert not violations("constructs.identity", ["constructs.data.private_bucket", "constructs.cdk.google.x"], rules)


def test_the_page_names_every_package_and_every_group_has_a_rule_and_a_docstring():
    packages = section("The packages")
    rules = import_rules()
    for folder in ("stacks/", "docker/", "client/", "constructs/cdk.py", "main.py"):
        assert f"`{folder}`" in packages, f"docs/architecture.md: the packages table does not name {folder}"
    assert len(CONSTRUCT_GROUPS) >= 5, CONSTRUCT_GROUPS
    for group in CONSTRUCT_GROUPS:
        assert f"`constructs/{group}/`" in packages, f"docs/architecture.md: no row for constructs/{group}/"
        assert f"constructs.{group}" in rules, f"docs/architecture.md: no Imports row for constructs.{group}"
        doc = ast.get_docstring(ast.parse((REPO / "constructs" / group / "__init__.py").read_text())) or ""
        assert "May import:" in doc, f"constructs/{group}/__init__.py: the docstring must say what it may import"
    flat = sorted(p.name for p in (REPO / "constructs").glob("*.py"))
    assert flat == ["cdk.py"], f"constructs/ holds {flat} at the top: put each module in its group"


def test_every_synthesized_resource_type_is_on_the_page(app):
    where = section("Where each cloud resource is made")
    types = {t for stack in app.stacks.values() for kind in ("resource", "data") for t in stack.get(kind, {})}
    assert len(types) > 30, types
    missing = sorted(t for t in types if f"`{t}`" not in where)
    assert not missing, f"docs/architecture.md does not say where these are made: {missing}"
