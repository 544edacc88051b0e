"""`mlflow server`, minus the two things a Cloud Run instance cannot afford. Run by start.sh only.

The arguments are `mlflow server`'s own and go through its CLI unchanged (all of its validation
included). What this adds, checked against MLflow 3.17.2's source:

1. MLflow never migrates here. `mlflow server` builds its stores before it starts uvicorn, and the
   tracking and registry stores run every migration (`_initialize_tables`) whenever one of the
   ORM's tables is missing: on an empty database, and also on an older schema if the newer
   MLflow adds a table. On Cloud Run that would be each new instance upgrading the schema at the
   same time. So the schema must already be at this MLflow's head revision (migrate.sh, a Cloud
   Run job, puts it there); anything else stops the start with one line, before MLflow connects.

2. No idle parent process. `mlflow server` starts uvicorn as a child and then only waits for it,
   keeping ~265 MB of RSS (all of MLflow imported) and one pooled database connection per store
   for the life of the container. Here uvicorn replaces it instead (exec), so uvicorn gets
   Cloud Run's SIGTERM itself, and with one worker the container is a single process.
   This stands in for `mlflow.server._exec_cmd`, the one call `_run_server` makes to start uvicorn;
   start.sh turns job execution off, so nothing in `_run_server` is meant to run after that call.

3. uvicorn serves mlflow_asgi.py's app (next to this file), which is MLflow's app behind IAP
   verification, with uvicorn's HTTP/2 protocol mended (see there): the command MLflow built is
   otherwise run as it is. The IAP settings are checked first (iap_identity.py), before the database.

4. With MLFLOW_BACKEND_STORE_AUTH=iam, every database connection here and in uvicorn logs in with
   an IAM access token (cloudsql_iam.py, next to this file); a token that cannot be had or that the
   database refuses stops the start with one line.
"""

from __future__ import annotations

import os
import sys
import time

import iap_identity

PROG = "start.sh"
MLFLOW_APP = "mlflow.server.fastapi_app:app"
APP = "mlflow_asgi:app"
"""What uvicorn serves instead of MLFLOW_APP; mlflow_asgi.py is in this file's directory."""


def fail(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


# Cloud SQL's socket can take a while to appear on a cold start; a wrong password will not get better.
DB_WAIT_SECONDS = 60
TRANSIENT = ("could not connect", "connection refused", "no such file or directory", "timeout", "starting up")


def schema_revision(backend_store_uri: str, wait_seconds: float = DB_WAIT_SECONDS) -> str | None:
    """The database's alembic revision (None: no MLflow schema). Waits while it is unreachable."""
    import sqlalchemy
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy.pool import NullPool

    from cloudsql_iam import TokenUnavailable, enabled

    engine = sqlalchemy.create_engine(backend_store_uri, poolclass=NullPool)
    deadline = time.monotonic() + wait_seconds
    try:
        for attempt in range(1, 1_000):
            try:
                with engine.connect() as connection:
                    return MigrationContext.configure(connection).get_current_revision()
            except TokenUnavailable as e:
                fail(f"cannot log in to the backend store with IAM: {e}")
            except sqlalchemy.exc.OperationalError as e:
                # The driver's message runs over several lines; the first names the cause.
                cause = str(e.orig).strip().splitlines()[0]
                if not any(t in cause.lower() for t in TRANSIENT) or time.monotonic() >= deadline:
                    if enabled() and "authentication failed" in cause:
                        cause += (
                            f" (IAM login as {engine.url.username}: the service account needs "
                            "roles/cloudsql.instanceUser and a CLOUD_IAM_SERVICE_ACCOUNT database user)"
                        )
                    fail(f"cannot reach the backend store: {cause}")
                time.sleep(min(0.25 * 2**attempt, 5.0))
    finally:
        engine.dispose()
    return None


def require_migrated_schema(backend_store_uri: str) -> None:
    from mlflow.store.db.utils import _get_latest_schema_revision

    current = schema_revision(backend_store_uri)
    head = _get_latest_schema_revision()
    if current != head:
        found = f"at revision {current}" if current else "empty (no MLflow schema)"
        fail(
            f"the backend store database is {found}, this MLflow needs revision {head}; "
            "run /app/migrate.sh (the migration job) first - the server never migrates"
        )


def dispose_store_engines() -> None:
    """Close the connections the CLI's stores pooled, so none outlive the exec."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

    for store_class in (TrackingStore, RegistryStore):
        for engine in store_class._engine_map.values():
            engine.dispose()


def exec_in_place(cmd, *, extra_env=None, **_kwargs):
    """Replaces `mlflow.server._exec_cmd(full_command, extra_env=..., synchronous=False)`."""
    argv = [str(part) for part in cmd]
    # `python -m uvicorn OPTIONS... APP`: APP is always the last argument.
    if argv[-1] != MLFLOW_APP:
        fail(f"mlflow server would have uvicorn serve {argv[-1]}, not {MLFLOW_APP}")
    argv[-1:] = ["--app-dir", os.path.dirname(os.path.abspath(__file__)), APP]
    dispose_store_engines()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, {**os.environ, **(extra_env or {})})


def main() -> None:
    try:
        iap_identity.settings_from_environ()
    except ValueError as e:
        fail(str(e))
    backend_store_uri = os.environ.get("MLFLOW_BACKEND_STORE_URI", "")
    if not backend_store_uri:
        fail("MLFLOW_BACKEND_STORE_URI is not set")
    import cloudsql_iam

    cloudsql_iam.install()
    require_migrated_schema(backend_store_uri)

    import mlflow.server
    from mlflow.cli import cli

    mlflow.server._exec_cmd = exec_in_place
    # The URI stays in the environment (`--backend-store-uri` reads MLFLOW_BACKEND_STORE_URI), out
    # of every process's argv.
    cli.main(args=["server", *sys.argv[1:]], prog_name="mlflow")


if __name__ == "__main__":
    main()
