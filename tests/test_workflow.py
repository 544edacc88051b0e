"""The pull-request workflow: valid against GitHub's schema, actions pinned, keyless, gated apply."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = REPO / ".github" / "workflows" / "terraform.yml"
TEXT = WORKFLOW.read_text()


def test_the_workflow_validates_against_githubs_workflow_schema():
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--builtin-schema",
            "vendor.github-workflows",
            str(WORKFLOW),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(TEXT.replace("runs-on: ubuntu-24.04", "runs_on: ubuntu-24.04", 1))
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--builtin-schema",
            "vendor.github-workflows",
            str(broken),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0


def test_every_action_is_pinned_to_a_full_commit_sha():
    uses = re.findall(r"uses:\s*(\S+)", TEXT)
    assert uses, "no actions found"
    for action in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", action), action


def readme_commands() -> tuple[str, str]:
    """The README's two commands: set-up + synth, and the tests (the code blocks of its first section)."""
    section = (REPO / "README.md").read_text().split("## The two commands", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)\n```", section, re.S)
    assert len(blocks) == 2, f"expected two command blocks in the README's first section, found {blocks}"
    return blocks[0].strip(), blocks[1].strip()


def test_it_runs_the_readme_setup_and_test_commands():
    setup, tests = readme_commands()
    assert setup.startswith("./scripts/setup.sh && "), setup
    assert TEXT.count("run: ./scripts/setup.sh") == 3 and f"run: {tests}" in TEXT


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert "./scripts/setup.sh" in ci and readme_commands()[1] in ci, ci


def test_google_auth_is_keyless_and_plans_never_lock_or_apply():
    assert "credentials_json" not in TEXT
    assert "workload_identity_provider: ${{ vars.WIF_PROVIDER }}" in TEXT
    plan_job = TEXT.split("\n  plan:\n")[1].split("\n  apply:\n")[0]
    assert "-lock=false" in plan_job and "apply" not in plan_job.replace("applies", "")
    assert "service_account: ${{ vars.PLANNER_SERVICE_ACCOUNT }}" in plan_job


def test_apply_runs_only_on_main_in_the_approved_environment():
    apply_job = TEXT.split("\n  apply:\n")[1]
    assert "if: github.event_name == 'push' && github.ref == 'refs/heads/main'" in apply_job
    assert "environment: ${{ vars.DEPLOY_ENVIRONMENT }}" in apply_job
    assert "service_account: ${{ vars.DEPLOYER_SERVICE_ACCOUNT }}" in apply_job


def test_the_deployer_applies_the_mlflow_stack_of_its_environment_only():
    """The project stack holds the pool and the deployer's own roles: a person applies it."""
    apply_job = TEXT.split("\n  apply:\n")[1]
    deploys = [line.strip() for line in apply_job.splitlines() if "cdktf deploy" in line]
    assert deploys == [
        'run: npx cdktf deploy "mlflow-${DEPLOY_ENVIRONMENT}" --ignore-missing-stack-dependencies --auto-approve'
    ]
    assert "DEPLOY_ENVIRONMENT: ${{ vars.DEPLOY_ENVIRONMENT }}" in apply_job


def test_the_deployer_may_apply_only_from_the_ref_the_apply_job_runs_on():
    from constructs.identity.ci_identity import DEPLOY_REF

    apply_job = TEXT.split("\n  apply:\n")[1]
    assert f"github.ref == '{DEPLOY_REF}'" in apply_job
