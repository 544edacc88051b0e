"""`python -m stacks.init`: a new environment's file with its own values, validated before it is written.

`gcloud` here is a fake script on PATH that records how it was called: no test reaches Google.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stacks.config import parse_config

REPO = Path(__file__).resolve().parent.parent
ARGS = [
    "prod",
    "--project",
    "acme-ml",
    "--region",
    "us-central1",
    "--domain",
    "mlflow.acme.com",
    "--member",
    "group:ml@acme.com",
]


def init(
    tmp_path: Path, *args: str, gcloud: str | None = None, stdin: int = subprocess.DEVNULL
) -> subprocess.CompletedProcess:
    """Run the command with only a fake gcloud (or none) on PATH, writing into tmp_path/config; stdin no terminal unless given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if gcloud is not None:
        (bin_dir / "gcloud").write_text(f'#!/bin/sh\necho "$@" >> "{tmp_path}/gcloud.calls"\n{gcloud}\n')
        (bin_dir / "gcloud").chmod(0o755)
    (tmp_path / "config").mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "stacks.init", *args, "--config-dir", str(tmp_path / "config")],
        cwd=REPO,
        env={"PATH": str(bin_dir), "PYTHONPATH": str(REPO)},
        stdin=stdin,
        capture_output=True,
        text=True,
    )


def test_the_project_number_comes_from_gcloud_and_the_file_is_a_valid_environment(tmp_path):
    result = init(tmp_path, *ARGS, gcloud="echo 987654321098")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "gcloud.calls").read_text() == "projects describe acme-ml --format=value(projectNumber)\n"
    text = (tmp_path / "config" / "prod.toml").read_text()
    cfg = parse_config(text, "prod.toml")
    assert (cfg.environment, cfg.project_id, cfg.project_number, cfg.region) == (
        "prod",
        "acme-ml",
        "987654321098",
        "us-central1",
    )
    assert (cfg.domain, cfg.iap_members, cfg.state.bucket) == (
        "mlflow.acme.com",
        ("group:ml@acme.com",),
        "acme-ml-tfstate",
    )
    assert cfg.state.location == "us-central1"
    assert text.startswith("#:schema ./mlflow-config.schema.json\n") and "# [alerts]" in text


def test_a_given_project_number_needs_no_gcloud(tmp_path):
    result = init(tmp_path, *ARGS, "--project-number", "111222333444", gcloud="exit 1")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "gcloud.calls").exists()
    assert parse_config((tmp_path / "config" / "prod.toml").read_text()).project_number == "111222333444"


def test_without_gcloud_or_a_terminal_the_number_is_required_and_every_problem_shows_at_once(tmp_path):
    result = init(tmp_path, *[a if a != "us-central1" else "us-central" for a in ARGS])
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines), result.stderr
    assert lines[0] == (
        "error: project_number: unknown — gcloud is not installed and no terminal to ask on; pass --project-number "
        "with the digits `gcloud projects describe acme-ml '--format=value(projectNumber)'` prints"
    )
    assert "region: 'us-central' is not a Google Cloud region — did you mean `us-central1`?" in lines[1]
    assert not (tmp_path / "config" / "prod.toml").exists()


def test_on_a_terminal_without_gcloud_the_number_is_asked_for(tmp_path):
    terminal, user_side = os.openpty()
    os.write(terminal, b"444555666777\n")
    try:
        result = init(tmp_path, *ARGS, stdin=user_side)
    finally:
        os.close(terminal)
        os.close(user_side)
    assert result.returncode == 0, result.stderr
    assert "project number of acme-ml" in result.stdout
    assert parse_config((tmp_path / "config" / "prod.toml").read_text()).project_number == "444555666777"


def test_a_failing_gcloud_falls_back_to_requiring_the_number_and_says_what_gcloud_said(tmp_path):
    """gcloud not signed in prints several lines; the one that says why is kept, on the problem's line."""
    said = (
        "echo 'ERROR: (gcloud.projects.describe) You do not currently have an active account selected.' >&2; "
        "echo 'Please run:' >&2; echo '  $ gcloud auth login' >&2; exit 1"
    )
    result = init(tmp_path, *ARGS, gcloud=said)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        "error: project_number: unknown — `gcloud projects describe acme-ml '--format=value(projectNumber)'` "
        "failed (ERROR: (gcloud.projects.describe) You do not currently have an active account selected."
    )
    assert "gcloud auth login" in line and "no gcloud here" not in line and "not installed" not in line
    assert not (tmp_path / "config" / "prod.toml").exists()


def test_the_commands_it_prints_paste_into_a_shell(tmp_path):
    """`--format=value(projectNumber)` unquoted is a bash syntax error; the path after export is quoted when needed."""
    import shlex

    result = init(tmp_path, *ARGS, gcloud="exit 1")
    command = re.search(r"`(gcloud projects describe [^`]*)`", result.stderr).group(1)
    assert shlex.split(command) == ["gcloud", "projects", "describe", "acme-ml", "--format=value(projectNumber)"]
    result = init(tmp_path, *ARGS, "--project-number", "111222333444")
    assert result.returncode == 0, result.stderr
    assert f"export MLFLOW_CONFIG={tmp_path / 'config' / 'prod.toml'} CHECKPOINT_DISABLE=1" in result.stderr


def test_the_help_examples_are_commands_it_accepts():
    from stacks.init import parser

    text = parser().format_help()
    examples = re.findall(
        r"python -m stacks\.init (.*?)(?:#.*)?$", text.split("examples:")[1].replace("\\\n", " "), re.M
    )
    assert len(examples) == 2 and all("--member" in e for e in examples), examples
    for example in examples:
        parser().parse_args(example.split())


def test_client_impersonators_can_be_set_so_a_laptop_can_log_runs(tmp_path):
    result = init(
        tmp_path,
        *ARGS,
        "--project-number",
        "111222333444",
        "--client-impersonator",
        "group:ml@acme.com",
        "--client-impersonator",
        "user:ana@acme.com",
    )
    assert result.returncode == 0, result.stderr
    cfg = parse_config((tmp_path / "config" / "prod.toml").read_text())
    assert cfg.client_impersonators == ("group:ml@acme.com", "user:ana@acme.com")


def test_a_direct_iap_environment_gets_its_run_app_domain(tmp_path):
    args = [a for a in ARGS if a not in ("--domain", "mlflow.acme.com")]
    result = init(tmp_path, *args, "--project-number", "111222333444", "--front-door", "direct_iap")
    assert result.returncode == 0, result.stderr
    cfg = parse_config((tmp_path / "config" / "prod.toml").read_text())
    assert cfg.front_door.mode == "direct_iap"
    assert cfg.domain == "mlflow-server-111222333444.us-central1.run.app" == cfg.direct_iap_host


def test_a_load_balancer_environment_needs_its_domain(tmp_path):
    args = [a for a in ARGS if a not in ("--domain", "mlflow.acme.com")]
    result = init(tmp_path, *args, "--project-number", "111222333444")
    assert result.returncode == 2 and "error: --domain: missing" in result.stderr, result.stderr
    assert not (tmp_path / "config" / "prod.toml").exists()


@pytest.mark.parametrize("environment", ["example", "Prod"])
def test_the_same_model_refuses_the_values_before_writing(tmp_path, environment):
    result = init(tmp_path, environment, *ARGS[1:], "--project-number", "111222333444")
    assert result.returncode == 2 and "environment" in result.stderr, result.stderr
    assert list((tmp_path / "config").iterdir()) == []


def test_an_existing_file_is_kept_unless_forced(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "prod.toml").write_text("# mine\n")
    result = init(tmp_path, *ARGS, "--project-number", "111222333444")
    assert result.returncode == 2 and "exists; edit it, or pass --force" in result.stderr
    assert (tmp_path / "config" / "prod.toml").read_text() == "# mine\n"
    assert init(tmp_path, *ARGS, "--project-number", "111222333444", "--force").returncode == 0
