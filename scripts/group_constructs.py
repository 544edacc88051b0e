#!/usr/bin/env python3
"""Group constructs/ into sub-packages by concern: `git mv` each module and its test, write each
sub-package's `__init__.py`, and rewrite every reference to the old paths in tracked text files.

Run from the repository root on a clean tree: `python3 scripts/group_constructs.py`. It is
idempotent: a module already moved is left alone and a reference already rewritten no longer
matches, so after merging work that still edits or imports the old flat paths, run it again (move
any new flat module by adding it to GROUPS first). Nothing but paths and import names changes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# group -> (its __init__ docstring: what lives there and what it may import, the modules it holds).
# tests/test_architecture.py checks the "may import" rules against the code.
GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "network": (
        "The VPC, its subnet and firewall, and private services access (Cloud SQL's private IP range).\n\n"
        "May import: constructs.cdk only.",
        ("network",),
    ),
    "data": (
        "What holds the users' data and the server's secrets: Cloud SQL, the artifact bucket, the\n"
        "backend-store and AI-gateway-key secrets, and the Cloud SQL socket path both the backend-store\n"
        "secret's URI and the server's mount use.\n\n"
        "May import: constructs.cdk and this package.",
        ("sql_database", "private_bucket", "backend_store_secret", "gateway_key_secret", "cloudsql_socket"),
    ),
    "identity": (
        "Service accounts and who may act as them: the server's (and its project roles), each person's\n"
        "client account, CI's (keyless, WIF), the image build's, the IAP service agent, the keyed IAM\n"
        "member helpers every grant uses, and what MLflow's own permissions give each verified user\n"
        "([access]: the bootstrap admin's secret and the access model the server reads).\n\n"
        "May import: constructs.cdk, this package, and constructs.data (the build identity's bucket).",
        (
            "server_identity",
            "server_roles",
            "client_identity",
            "ci_identity",
            "build_identity",
            "iap_service_agent",
            "iam_members",
            "access_control",
        ),
    ),
    "serving": (
        "The tracking server on Cloud Run: the service, the migration job, the schema-upgrade window, the\n"
        "container both run, and the run.app address and IAP audience of a service.\n\n"
        "May import: constructs.cdk, this package, and constructs.data (the Cloud SQL socket path).",
        ("tracking_service", "migration_job", "schema_upgrade", "server_container", "run_url"),
    ),
    "front_door": (
        "How users reach the server: the external Application Load Balancer with IAP, or IAP directly\n"
        "on the Cloud Run service, and the DNS zone that points the domain at the load balancer.\n\n"
        "May import: constructs.cdk, this package, and constructs.identity (keyed IAM members).",
        ("front_door", "cloud_run_iap", "dns_zone"),
    ),
    "operations": (
        "Watching and paying for it: alert policies and the dashboard, the billing budget, and the\n"
        "Data Access audit logs of Cloud Storage.\n\n"
        "May import: constructs.cdk only.",
        ("monitoring", "billing_budget", "storage_audit_logs"),
    ),
    "project": (
        "Project plumbing applied before the server: the enabled APIs and the image registry.\n\n"
        "May import: constructs.cdk only.",
        ("project_services", "image_registry"),
    ),
}
# The one module that stays at the top: the runtime door.
TOP_LEVEL = ("cdk",)
# Text files whose references follow the moves (the snapshots hold no module paths).
TEXT_SUFFIXES = {".py", ".md", ".toml", ".yml", ".yaml", ".sh", ".json", ".ini", ".cfg", ".txt"}
# How a test under tests/constructs/ finds the repository root, before and after the move.
ROOT_FROM_FLAT_TEST = "Path(__file__).resolve().parents[2]"
ROOT_FROM_GROUPED_TEST = "Path(__file__).resolve().parents[3]"
SKIP = ("tests/snapshots/", "Pipfile.lock", "package-lock.json", "scripts/group_constructs.py")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, check=True, capture_output=True, text=True).stdout


def rewrites() -> list[tuple[re.Pattern[str], str]]:
    """(pattern, replacement) for each module: dotted imports, file paths, test paths, runpy paths."""
    rules = []
    for group, (_, modules) in GROUPS.items():
        for m in modules:
            # Not followed by ".name": `constructs.network.network` must not become `...network.network`.
            rules += [
                (re.compile(rf"\bconstructs\.{m}\b(?!\.\w)"), f"constructs.{group}.{m}"),
                (re.compile(rf"\btests\.constructs\.test_{m}\b"), f"tests.constructs.{group}.test_{m}"),
                (re.compile(rf"(?<![\w/])constructs/{m}\.py\b"), f"constructs/{group}/{m}.py"),
                (re.compile(rf"\btests/constructs/test_{m}\.py\b"), f"tests/constructs/{group}/test_{m}.py"),
                (re.compile(rf'"constructs" / "{m}\.py"'), f'"constructs" / "{group}" / "{m}.py"'),
            ]
    # Globs over the flat folder now walk the sub-packages too.
    rules.append((re.compile(r'\(REPO / "constructs"\)\.glob\("\*\.py"\)'), '(REPO / "constructs").rglob("*.py")'))
    return rules


def move() -> None:
    for group, (doc, modules) in GROUPS.items():
        package = REPO / "constructs" / group
        package.mkdir(exist_ok=True)
        (REPO / "tests" / "constructs" / group).mkdir(parents=True, exist_ok=True)
        init = package / "__init__.py"
        if not init.exists():
            init.write_text(f'"""{doc}\n"""\n')
            git("add", str(init.relative_to(REPO)))
        for m in modules:
            pairs = [
                (f"constructs/{m}.py", f"constructs/{group}/{m}.py"),
                (f"tests/constructs/test_{m}.py", f"tests/constructs/{group}/test_{m}.py"),
            ]
            for old, new in pairs:
                if (REPO / old).exists():
                    git("mv", old, new)
                    print(f"{old} -> {new}")
                    if new.startswith("tests/"):
                        test = REPO / new
                        # One folder deeper: the repository root is one parent further up.
                        test.write_text(test.read_text().replace(ROOT_FROM_FLAT_TEST, ROOT_FROM_GROUPED_TEST))


def rewrite() -> None:
    rules = rewrites()
    for name in git("ls-files").splitlines():
        path = REPO / name
        if (
            (path.suffix not in TEXT_SUFFIXES and path.name != "Dockerfile")
            or name.startswith(SKIP)
            or not path.is_file()
        ):
            continue
        text = path.read_text()
        new = text
        for pattern, replacement in rules:
            new = pattern.sub(replacement, new)
        if new != text:
            path.write_text(new)
            print(f"rewrote {name}")


def main() -> int:
    flat = sorted(p.stem for p in (REPO / "constructs").glob("*.py"))
    grouped = {m for _, modules in GROUPS.values() for m in modules}
    unknown = [m for m in flat if m not in grouped and m not in TOP_LEVEL]
    if unknown:
        print(f"error: constructs/{unknown[0]}.py has no group; add it to GROUPS in {__file__}", file=sys.stderr)
        return 2
    move()
    rewrite()
    return 0


if __name__ == "__main__":
    sys.exit(main())
