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
        [str(Path(sys.executable).parent / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(TEXT.replace("runs-on: ubuntu-24.04", "runs_on: ubuntu-24.04", 1))
    result = subprocess.run(
        [str(Path(sys.executable).parent / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(broken)],
        capture_output=True, text=True,
    )
    assert result.returncode != 0


def test_every_action_is_pinned_to_a_full_commit_sha():
    uses = re.findall(r"uses:\s*(\S+)", TEXT)
    assert uses, "no actions found"
    for action in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", action), action


def test_it_runs_the_readme_setup_and_test_commands():
    readme = (REPO / "README.md").read_text()
    assert "./scripts/setup.sh" in readme and "pipenv run pytest" in readme
    assert TEXT.count("run: ./scripts/setup.sh") == 3 and "run: pipenv run pytest" in TEXT


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
