"""checkov over every synthesized stack: zero findings beyond the reasoned skips in policy/."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SKIPS = tomllib.loads((REPO / "policy" / "checkov_skips.toml").read_text())["skip"]
CRASH = re.compile(r"Failed to run check (CKV2?_[A-Z]+_\d+) on [^:]*:(\S+)")


def scan(stack_dir: Path) -> tuple[dict, list[tuple[str, str]]]:
    """checkov's JSON report, plus (check, resource address) of every check that crashed."""
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "checkov"),
            "-d",
            str(stack_dir),
            "--framework",
            "terraform_json",
            "--skip-download",
            "--quiet",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
    )
    report = json.loads(result.stdout)
    crashes = CRASH.findall(result.stderr)
    return report, crashes


def construct_path(stack: dict, address: str) -> str:
    """`google_x.ID` or `resource.ID` -> the resource's construct path in its stack, e.g. `database/instance`."""
    logical_id = address.rsplit(".", 1)[-1]
    paths = {
        logical: body["//"]["metadata"]["path"].split("/", 1)[1]
        for items in stack["resource"].values()
        for logical, body in items.items()
    }
    return paths[logical_id]


def accepted(check: str, path: str) -> bool:
    return any(s["check"] == check and path.startswith(s["resource"]) for s in SKIPS)


def scannable_copy(stack_dir: Path, into: Path) -> Path:
    """The stack without `terraform.required_version` and `removed` blocks: checkov 3.3.30's
    terraform_json parser fails on either ("Failed to parse template") and then evaluates nothing. No
    check reads them (a `removed` block makes nothing; it only tells Terraform to forget an address)."""
    stack = json.loads((stack_dir / "cdk.tf.json").read_text())
    stack.get("terraform", {}).pop("required_version", None)
    stack.pop("removed", None)
    into.mkdir(parents=True)
    (into / "cdk.tf.json").write_text(json.dumps(stack, indent=2))
    return into


@pytest.fixture(scope="module")
def scans(app, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("checkov")
    return {name: scan(scannable_copy(app.stack_dir(name), tmp / name)) for name in app.stacks}


# The gate's ceiling: each skip is a finding accepted, not fixed.
MAX_SKIPS = 7


def test_skips_stay_few():
    assert len(SKIPS) <= MAX_SKIPS, (
        f"{len(SKIPS)} checkov skips; fix findings instead of accepting more than {MAX_SKIPS}"
    )


def test_every_skip_has_a_reason_worth_reading():
    for skip in SKIPS:
        assert len(skip["reason"]) >= 60, skip


def test_checkov_passes_every_stack_but_the_reasoned_skips(app, scans):
    unexplained, used = [], set()
    for name, (report, crashes) in scans.items():
        summary = report["summary"]
        assert summary["passed"] + summary["failed"] > 0, f"checkov evaluated nothing in {name}"
        findings = [(f["check_id"], f["resource"], "failed") for f in report["results"]["failed_checks"]]
        findings += [(check, address, "crashed (counts as failed)") for check, address in crashes]
        for check, address, how in findings:
            path = construct_path(app.stacks[name], address)
            if accepted(check, path):
                used.add((check, path.split("/")[0]))
            else:
                unexplained.append(f"{name}: {check} {how} on {path}")
    assert not unexplained, "fix these, or add a skip with a reason to policy/checkov_skips.toml:\n" + "\n".join(
        unexplained
    )
    stale = [s for s in SKIPS if (s["check"], s["resource"].split("/")[0]) not in used]
    assert not stale, f"skips that match no finding any more; remove them: {stale}"
