"""docker/requirements.txt: the server image's Python packages, exactly the ones the tests run.

The image installs `mlflow`, `psycopg2-binary`, `zttp` (uvicorn's HTTP/2 implementation: start.sh
runs uvicorn with `--http zttp --http2` for Cloud Run's end-to-end HTTP/2) and `flask-wtf` (MLflow's
auth app, for [access]) and everything they
depend on, each pinned to the version installed in this environment (which `pipenv sync --dev`
installs from Pipfile.lock), with the hashes Pipfile.lock records for it.
`tests/server/test_image.py` checks the file still says so; after changing the pins in Pipfile and
relocking, regenerate it with

    python tests/server/image_requirements.py > docker/requirements.txt
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PIPFILE_LOCK = REPO / "Pipfile.lock"
ROOTS = ("mlflow", "psycopg2-binary", "zttp", "flask-wtf")
"""flask-wtf: mlflow[auth], what MLflow's auth app needs (teams, [access])."""


def dependency_closure(roots: tuple[str, ...] = ROOTS) -> dict[NormalizedName, str]:
    """Every installed distribution the roots need here (markers evaluated), name -> version."""
    extras_seen: dict[NormalizedName, set[str]] = {}
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset()) for root in roots]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key in extras_seen and extras <= extras_seen[key]:
            continue
        extras_seen.setdefault(key, set()).update(extras)
        for spec in importlib.metadata.distribution(name).requires or []:
            req = Requirement(spec)
            active = [{"extra": extra} for extra in (extras_seen[key] or {""})]
            if req.marker is None or any(req.marker.evaluate(env) for env in active):
                todo.append((req.name, frozenset(req.extras)))
    return {key: importlib.metadata.version(key) for key in sorted(extras_seen)}


def locked_hashes() -> dict[NormalizedName, tuple[str, list[str]]]:
    """Pipfile.lock's packages (both sections): name -> (version, hashes)."""
    lock = json.loads(PIPFILE_LOCK.read_text())
    entries = {**lock["develop"], **lock["default"]}
    return {
        canonicalize_name(name): (e["version"].removeprefix("=="), sorted(e["hashes"])) for name, e in entries.items()
    }


def render() -> str:
    locked = locked_hashes()
    lines = [
        "# The MLflow server image's packages: mlflow, psycopg2-binary, zttp (uvicorn's HTTP/2) and",
        "# flask-wtf (MLflow's auth app, for [access]) with everything they need, at the versions the",
        "# tests run (Pipfile.lock), with its hashes.",
        "# Generated; do not edit:",
        "#   python tests/server/image_requirements.py > docker/requirements.txt",
        "# Installed with `pip install --require-hashes`.",
    ]
    for name, version in dependency_closure().items():
        if name not in locked:
            raise SystemExit(
                f"{name} {version} is installed but not in Pipfile.lock: add it to Pipfile and run pipenv lock"
            )
        locked_version, hashes = locked[name]
        if locked_version != version:
            raise SystemExit(
                f"{name} {version} is installed but Pipfile.lock has {locked_version}: run pipenv sync --dev"
            )
        lines.append(f"{name}=={version} \\")
        lines.extend(f"    --hash={h} \\" for h in hashes[:-1])
        lines.append(f"    --hash={hashes[-1]}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
