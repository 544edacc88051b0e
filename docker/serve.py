"""`mlflow server`, minus the three things a Cloud Run instance cannot afford. Run by start.sh only.

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
   for the life of the container. Here the command MLflow built is run in this process instead,
   so uvicorn gets Cloud Run's SIGTERM itself, and with one worker the container is a single
   process. This stands in for `mlflow.server._exec_cmd`, the one call `_run_server` makes to
   start uvicorn; start.sh turns job execution off, so nothing in `_run_server` is meant to run
   after that call.

3. MLflow is imported once per start. With one worker uvicorn runs in this process (its own CLI,
   given the options MLflow built), so the app it loads finds MLflow's modules already imported by
   MLflow's CLI: half the cold start of a second interpreter importing them again. With more
   workers uvicorn replaces this process (exec) as before: its supervisor then holds no MLflow,
   and each worker imports it once, as it must.

4. No cyclic garbage collection while MLflow is imported (the collector would walk the hundreds
   of thousands of objects the imports create, again and again: ~15% of the start); what the
   imports built is then frozen out of the collector's generations for the process's life, and it
   is back on before uvicorn serves.

5. uvicorn serves mlflow_asgi.py's app (next to this file), which is MLflow's app behind IAP
   verification, with uvicorn's HTTP/2 protocol mended (see there): the command MLflow built is
   otherwise run as it is. The IAP settings are checked first (iap_identity.py), before the database.

6. The AI gateway's key is never MLflow's published default passphrase (gateway_key.py, next to
   this file): checked before the database, like the IAP settings.

7. With MLFLOW_BACKEND_STORE_AUTH=iam, every database connection here and in uvicorn logs in with
   an IAM access token (cloudsql_iam.py, next to this file); a token that cannot be had or that the
   database refuses stops the start with one line.

8. With MLFLOW_IAP_ACCESS (teams, iap_access.py): `--app-name basic-auth --enable-workspaces` are
   added, MLflow's auth app configured (its tables in the backend store's database, which migrate.sh
   made: checked like the schema), its bootstrap admin created and the access model applied, all
   before uvicorn starts; uvicorn still serves mlflow_asgi.py's app, which then wraps the auth app.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import time
from collections.abc import Iterable, Mapping
from typing import NoReturn

import gateway_key
import iap_access
import iap_identity

PROG = "start.sh"
MLFLOW_APP = "mlflow.server.fastapi_app:app"
MLFLOW_AUTH_APP = "mlflow.server.auth:create_app"
"""What `mlflow server --app-name basic-auth` has uvicorn serve (as a factory) with [access] on."""
APP = "mlflow_asgi:app"
"""What uvicorn serves instead of MLFLOW_APP; mlflow_asgi.py is in this file's directory."""
APP_DIR = os.path.dirname(os.path.abspath(__file__))


def fail(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


# Cloud SQL's socket can take a while to appear on a cold start; a wrong password will not get better.
DB_WAIT_SECONDS = 60
TRANSIENT = ("could not connect", "connection refused", "no such file or directory", "timeout", "starting up")


def schema_revision(
    backend_store_uri: str, wait_seconds: float = DB_WAIT_SECONDS, version_table: str = "alembic_version"
) -> str | None:
    """The database's alembic revision in `version_table` (None: no such schema). Waits while it is unreachable."""
    import sqlalchemy
    from alembic.runtime.migration import MigrationContext
    from cloudsql_iam import TokenUnavailable, enabled
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(backend_store_uri, poolclass=NullPool)
    deadline = time.monotonic() + wait_seconds
    try:
        for attempt in range(1, 1_000):
            try:
                with engine.connect() as connection:
                    return MigrationContext.configure(
                        connection, opts={"version_table": version_table}
                    ).get_current_revision()
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
    """Close the connections the CLI's stores pooled: the server starts holding none (a store reopens
    its pool on first use), and none outlive an exec."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

    for store_class in (TrackingStore, RegistryStore):
        for engine in store_class._engine_map.values():
            engine.dispose()
    if os.environ.get(iap_access.ACCESS_ENV):
        from mlflow.server.auth import store as auth_store

        auth_store.engine.dispose()


def uvicorn_argv(cmd: Iterable[object]) -> list[str]:
    """`python -m uvicorn OPTIONS... APP`, as MLflow built it, serving APP from this directory."""
    argv = [str(part) for part in cmd]
    if argv[1:3] != ["-m", "uvicorn"]:
        fail(f"mlflow server would start {' '.join(argv[:3])}, not python -m uvicorn")
    # APP is always the last argument; MLflow's auth app comes with --factory before it.
    if argv[-1] == MLFLOW_AUTH_APP and argv[-2] == "--factory":
        argv[-2:] = [MLFLOW_APP]
    if argv[-1] != MLFLOW_APP:
        fail(f"mlflow server would have uvicorn serve {argv[-1]}, not {MLFLOW_APP}")
    argv[-1:] = ["--app-dir", APP_DIR, APP]
    return argv


def import_app() -> None:
    """Imports APP's module as uvicorn would (it then finds it imported), with the collector still off."""
    sys.path.insert(0, APP_DIR)
    try:
        importlib.import_module(APP.split(":")[0])
    except ValueError as e:  # iap_identity.wrap: a route nobody has reviewed
        fail(str(e))


def worker_count(argv: list[str]) -> int:
    """MLflow puts `--workers N` after the user's uvicorn options, so the last one is what uvicorn uses."""
    last = max(i for i, arg in enumerate(argv) if arg == "--workers")
    return int(argv[last + 1])


def serve_in_place(cmd: Iterable[object], *, extra_env: Mapping[str, str] | None = None, **_kwargs: object) -> NoReturn:
    """Replaces `mlflow.server._exec_cmd(full_command, extra_env=..., synchronous=False)`; never returns."""
    argv = uvicorn_argv(cmd)
    dispose_store_engines()
    # What MLflow meant for the child's environment (store URIs, artifact settings) the app reads here.
    os.environ.update(extra_env or {})
    # The command line uvicorn runs with (no secret is on it), for the logs: with one worker no
    # process shows it.
    print(f"{PROG}: uvicorn {' '.join(argv[3:])}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    if worker_count(argv) == 1:
        from uvicorn.main import main as uvicorn_cli

        import_app()
        # What the imports built stays; the collector only watches what serving creates.
        gc.freeze()
        gc.enable()
        uvicorn_cli.main(args=argv[3:], prog_name="uvicorn")
        sys.exit(0)
    os.execve(argv[0], argv, dict(os.environ))


def main() -> None:
    try:
        iap_identity.settings_from_environ()
        access = iap_access.model_from_environ()
    except ValueError as e:
        fail(str(e))
    gc.disable()
    try:
        gateway_key.check()
    except ValueError as e:
        fail(str(e))
    backend_store_uri = os.environ.get("MLFLOW_BACKEND_STORE_URI", "")
    if not backend_store_uri:
        fail("MLFLOW_BACKEND_STORE_URI is not set")
    import cloudsql_iam

    cloudsql_iam.install()
    require_migrated_schema(backend_store_uri)
    access_args = [] if access is None else start_access(access, backend_store_uri)

    import mlflow.server
    from mlflow.cli import cli

    mlflow.server._exec_cmd = serve_in_place  # type: ignore[attr-defined]  # MLflow's private launcher
    # The URI stays in the environment (`--backend-store-uri` reads MLFLOW_BACKEND_STORE_URI), out
    # of every process's argv.
    cli.main(args=["server", *sys.argv[1:], *access_args], prog_name="mlflow")


def require_migrated_auth_schema(backend_store_uri: str) -> None:
    """MLflow's auth tables (migrate.sh makes them) at this MLflow's head: its auth store would
    migrate them itself, from every instance starting at once."""
    from alembic.script import ScriptDirectory
    from mlflow.server.auth.db.utils import _get_alembic_config

    head = ScriptDirectory.from_config(_get_alembic_config(backend_store_uri)).get_current_head()
    current = schema_revision(backend_store_uri, version_table="alembic_version_auth")
    if current != head:
        found = f"at revision {current}" if current else "missing"
        fail(
            f"MLflow's auth tables (alembic_version_auth) are {found}, this MLflow needs revision {head}; "
            "run /app/migrate.sh (the migration job) first - the server never migrates"
        )


def start_access(access: iap_access.AccessModel, backend_store_uri: str) -> list[str]:
    """[access] on (iap_access.py): MLflow's auth app, its workspaces, the model applied; the extra
    `mlflow server` arguments."""
    password = os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD", "")
    if len(password) < 12:
        fail(
            "MLFLOW_AUTH_ADMIN_PASSWORD must be set (12 characters or more) with MLFLOW_IAP_ACCESS: the bootstrap "
            "admin MLflow's auth app creates (the deployment keeps it in Secret Manager)"
        )
    if os.environ.get("MLFLOW_BASIC_AUTH_FAIL_CLOSED", "true").lower() not in ("true", "1"):
        fail("MLFLOW_BASIC_AUTH_FAIL_CLOSED must stay on with MLFLOW_IAP_ACCESS: routes no validator claims are denied")
    os.environ["MLFLOW_BASIC_AUTH_FAIL_CLOSED"] = "true"
    os.environ["MLFLOW_AUTH_ADMIN_USERNAME"] = iap_access.BOOTSTRAP_ADMIN
    os.environ.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", iap_access.flask_secret_key(password))
    os.environ["MLFLOW_AUTH_CONFIG_PATH"] = iap_access.auth_config_file(backend_store_uri)
    os.environ["MLFLOW_ENABLE_WORKSPACES"] = "true"
    require_migrated_auth_schema(backend_store_uri)
    try:
        import mlflow.server.auth

        mlflow.server.auth.bootstrap_admin_user()
        iap_access.apply_at_start(access, backend_store_uri)
    except Exception as e:  # one line, whatever MLflow's store raised
        fail(f"cannot apply MLFLOW_IAP_ACCESS: {str(e).splitlines()[0]}")
    return ["--app-name", "basic-auth", "--enable-workspaces"]


if __name__ == "__main__":
    main()
