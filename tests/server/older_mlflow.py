"""The MLflow release before the image's, in a virtual environment of its own, for the upgrade test.

OLDER_VERSION is the newest MLflow release before the image's whose schema head differs from the
image's (3.17.0 and 3.17.1 share 3.17.2's head, so upgrading from them migrates nothing; 3.16.1 is
two revisions behind). When the image's MLflow moves, move this to the release before it that has
an older head (`alembic heads` on its `mlflow/store/db_migrations`).

The environment is built once with pip from the package index and kept under `.cache/` in the
repository (ignored by git), so a rerun starts at once; a half-built one (no OK marker) is rebuilt.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

from tests.server.proc import REPO

OLDER_VERSION = "3.16.1"
# The driver the image has (docker/requirements.txt).
PSYCOPG2 = "psycopg2-binary==2.9.13"
CACHE = REPO / ".cache" / f"mlflow-{OLDER_VERSION}-py{sys.version_info.major}.{sys.version_info.minor}"


def older_mlflow_python() -> Path:
    """The Python of an environment with MLflow OLDER_VERSION installed; builds it on first use."""
    python, marker = CACHE / "bin" / "python", CACHE / "OK"
    if marker.exists():
        return python
    shutil.rmtree(CACHE, ignore_errors=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(CACHE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_REQUIRE", "VIRTUAL_ENV"))}
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
         f"mlflow=={OLDER_VERSION}", PSYCOPG2],
        env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"installing mlflow=={OLDER_VERSION} into {CACHE} failed:\n{result.stdout}{result.stderr}")
    marker.write_text(f"mlflow=={OLDER_VERSION}\n")
    return python


if __name__ == "__main__":
    print(older_mlflow_python())
