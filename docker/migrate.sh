#!/bin/sh
# Brings the backend store's schema to this MLflow's head revision: /app/migrate.sh, the command of
# the migration Cloud Run job (one task, no retries). On an empty database it creates MLflow's
# tables (and MLflow's auth tables, see below); on a current one it changes nothing. Take a backup
# before upgrading across MLflow versions.
# The server (start.sh) refuses to start until this has run.
#
#   MLFLOW_BACKEND_STORE_URI   required, the same URI the server gets.
#   MLFLOW_BACKEND_STORE_AUTH  password (the URI's) or iam (IAM access tokens), as the server.
set -eu

[ -n "${MLFLOW_BACKEND_STORE_URI:-}" ] || {
    echo "migrate.sh: MLFLOW_BACKEND_STORE_URI is not set" >&2
    exit 1
}
case $MLFLOW_BACKEND_STORE_URI in
    postgres://* | postgresql://*)
        # SQLAlchemy 2 maps a bare postgresql:// to psycopg 3, which the image does not have.
        echo "migrate.sh: MLFLOW_BACKEND_STORE_URI must start with postgresql+psycopg2://" >&2
        exit 1 ;;
esac

export MLFLOW_DISABLE_TELEMETRY=true
# `mlflow db upgrade URI`, run in-process so the URI (and its password) never appears in the
# process's command line, where any process listing would show it. With
# MLFLOW_BACKEND_STORE_AUTH=iam each connection logs in with an IAM access token (cloudsql_iam.py).
# Then, in the same process (one token, MLflow imported once), MLflow's auth tables (users, roles,
# grants; their own version table, alembic_version_auth), which teams ([access], iap_access.py) use:
# created here, empty, whether or not teams are configured, so turning teams on later needs no
# migration and the server still never migrates.
exec python -c 'import os, sys
sys.path.insert(0, sys.argv[1])
import cloudsql_iam
cloudsql_iam.install()
import sqlalchemy
from mlflow.cli import cli
from mlflow.server.auth.db.utils import migrate
uri = os.environ["MLFLOW_BACKEND_STORE_URI"]
try:
    cli.main(args=["db", "upgrade", uri], prog_name="mlflow", standalone_mode=False)
    engine = sqlalchemy.create_engine(uri)
    try:
        migrate(engine, "head")
    finally:
        engine.dispose()
except cloudsql_iam.TokenUnavailable as e:
    sys.exit(f"migrate.sh: cannot log in to the backend store with IAM: {e}")' "$(dirname "$0")"
