#!/bin/sh
# The MLflow tracking server: the image's CMD (/app/start.sh). Runs outside the image too, with
# the same variables, given a Python that has docker/requirements.txt on PATH.
#
#   MLFLOW_BACKEND_STORE_URI    required. postgresql+psycopg2://USER:PASSWORD@/DB?host=/cloudsql/P:R:I
#                               (password URL-encoded). Never put on a command line.
#   MLFLOW_BACKEND_STORE_AUTH   password   password: the URI's. iam: the URI names the service
#                                          account's IAM database user (USER%40PROJECT.iam@) and
#                                          has no password; each new connection logs in with an
#                                          access token from Application Default Credentials.
#   PORT                        8080       listen on 0.0.0.0:$PORT (Cloud Run sets it)
#   MLFLOW_ARTIFACTS_DESTINATION /mnt/gcs  where proxied artifacts go (the GCS volume mount)
#   MLFLOW_ALLOWED_HOSTS        unset      comma list of accepted Host headers; others get 403
#                                          (/health is always answered). Unset: MLflow's default,
#                                          localhost and private addresses only.
#   MLFLOW_CORS_ALLOWED_ORIGINS unset      comma list of origins allowed to send state-changing
#                                          API requests (MLflow's default: localhost only)
#   MLFLOW_IAP_VERIFICATION     on         on: every request but /health needs IAP's signed header
#                                          (x-goog-iap-jwt-assertion) for MLFLOW_IAP_AUDIENCE, and runs
#                                          and model versions record its e-mail as their user (see
#                                          iap_identity.py); off: neither (a local server, no IAP)
#   MLFLOW_IAP_AUDIENCE         unset      required when on: /projects/NUMBER/global/backendServices/ID
#                                          (or .../locations/REGION/services/NAME, IAP on Cloud Run)
#   MLFLOW_CRYPTO_KEK_PASSPHRASE unset     required while the AI gateway is on: the key MLflow encrypts
#                                          the API keys users store with (32+ characters, the
#                                          deployment's Secret Manager secret); MLflow's published
#                                          default is refused (gateway_key.py)
#   MLFLOW_CRYPTO_KEK_VERSION   1          MLflow's KEK version of that key (the secret's revision;
#                                          docker/rotate_gateway_key.py moves stored keys to the next)
#   MLFLOW_ENABLE_AI_GATEWAY    true       false: MLflow's AI gateway is off, nothing can store an
#                                          API key, and no passphrase is needed
#   MLFLOW_IAP_ACCESS           unset      teams ([access], JSON): MLflow's auth app and workspaces decide
#                                          what the IAP-verified user may do (iap_access.py); needs
#                                          verification on and MLFLOW_AUTH_ADMIN_PASSWORD (12+ characters,
#                                          the bootstrap admin MLflow creates; from Secret Manager)
#   MLFLOW_IAP_ACCESS_GROUPS_TTL_SECONDS 300  how long a group membership answer is kept (1-300)
#   MLFLOW_WORKERS              1          uvicorn worker processes
#   MLFLOW_SQLALCHEMYSTORE_POOL_SIZE    2  per engine; each worker has 2 engines (tracking, registry)
#   MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW 1  per engine, >= 1 (MLflow ignores 0)
#
# It never migrates: a database not at this MLflow's schema head stops it (see serve.py, which
# runs `mlflow server` with these flags); run migrate.sh first. MLflow's job execution (huey job runner) is off. Every configuration error is
# one line on stderr and exit status 1.
set -eu

fail() {
    printf 'start.sh: %s\n' "$*" >&2
    exit 1
}

# require_int NAME MIN [MAX] [WHY]: $NAME must be a whole number in [MIN, MAX].
require_int() {
    eval "value=\${$1}"
    case $value in
        '' | *[!0-9]*) fail "$1 must be a whole number, got '$value'" ;;
    esac
    while [ "${value#0}" != "$value" ] && [ "$value" != 0 ]; do value=${value#0}; done
    if [ ${#value} -gt 9 ] || [ "$value" -lt "$2" ] || { [ -n "${3:-}" ] && [ "$value" -gt "$3" ]; }; then
        if [ -n "${3:-}" ]; then range="from $2 to $3"; else range="at least $2"; fi
        fail "$1 must be $range${4:+ ($4)}, got $value"
    fi
    eval "$1=\$value"
}

[ -n "${MLFLOW_BACKEND_STORE_URI:-}" ] ||
    fail "MLFLOW_BACKEND_STORE_URI is not set (e.g. postgresql+psycopg2://USER:PASSWORD@/DB?host=/cloudsql/PROJECT:REGION:INSTANCE)"
case $MLFLOW_BACKEND_STORE_URI in
    postgresql+psycopg2://*) ;;
    postgres://* | postgresql://* | postgresql+*://*)
        # SQLAlchemy 2 maps a bare postgresql:// to psycopg 3, which the image does not have.
        fail "MLFLOW_BACKEND_STORE_URI must start with postgresql+psycopg2:// (the only PostgreSQL driver installed)" ;;
esac

MLFLOW_BACKEND_STORE_AUTH=${MLFLOW_BACKEND_STORE_AUTH:-password}
case $MLFLOW_BACKEND_STORE_AUTH in
    password) ;;
    iam)
        # A colon in the userinfo (before the @) starts a password, which IAM login would ignore.
        authority=${MLFLOW_BACKEND_STORE_URI#*://}
        authority=${authority%%/*}
        case $authority in
            *:*@*) fail "MLFLOW_BACKEND_STORE_URI has a password, but MLFLOW_BACKEND_STORE_AUTH=iam logs in with access tokens; remove the password from the URI" ;;
        esac ;;
    *) fail "MLFLOW_BACKEND_STORE_AUTH must be password or iam, got '$MLFLOW_BACKEND_STORE_AUTH'" ;;
esac

PORT=${PORT:-8080}
MLFLOW_ARTIFACTS_DESTINATION=${MLFLOW_ARTIFACTS_DESTINATION:-/mnt/gcs}
MLFLOW_ALLOWED_HOSTS=${MLFLOW_ALLOWED_HOSTS:-}
MLFLOW_CORS_ALLOWED_ORIGINS=${MLFLOW_CORS_ALLOWED_ORIGINS:-}
MLFLOW_IAP_VERIFICATION=${MLFLOW_IAP_VERIFICATION:-on}
MLFLOW_IAP_AUDIENCE=${MLFLOW_IAP_AUDIENCE:-}
MLFLOW_CRYPTO_KEK_PASSPHRASE=${MLFLOW_CRYPTO_KEK_PASSPHRASE:-}
MLFLOW_CRYPTO_KEK_VERSION=${MLFLOW_CRYPTO_KEK_VERSION:-1}
MLFLOW_ENABLE_AI_GATEWAY=${MLFLOW_ENABLE_AI_GATEWAY:-true}
MLFLOW_WORKERS=${MLFLOW_WORKERS:-1}
MLFLOW_SQLALCHEMYSTORE_POOL_SIZE=${MLFLOW_SQLALCHEMYSTORE_POOL_SIZE:-2}
MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW=${MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW:-1}

require_int PORT 1 65535
require_int MLFLOW_WORKERS 1
require_int MLFLOW_CRYPTO_KEK_VERSION 1 '' 'MLflow derives the key of each version'
# MLflow passes these to SQLAlchemy only when truthy: a 0 would silently become SQLAlchemy's
# defaults (pool_size 5, max_overflow 10) and break the database connection budget.
require_int MLFLOW_SQLALCHEMYSTORE_POOL_SIZE 1 '' 'MLflow ignores 0'
require_int MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW 1 '' 'MLflow ignores 0 and uses 10'
[ -n "$MLFLOW_ARTIFACTS_DESTINATION" ] || fail "MLFLOW_ARTIFACTS_DESTINATION is empty"

# A mount this user cannot write to fails here, in the startup probe of the apply, rather than at
# the first artifact upload. Missing directories are created, as MLflow itself would.
artifacts_writable() {
    mkdir -p "$MLFLOW_ARTIFACTS_DESTINATION" 2>/dev/null || return 1
    probe=$(mktemp "$MLFLOW_ARTIFACTS_DESTINATION/.start-sh-write-check.XXXXXX" 2>/dev/null) || return 1
    rm -f "$probe" 2>/dev/null
}
artifacts_writable ||
    fail "cannot create and delete a file in MLFLOW_ARTIFACTS_DESTINATION=$MLFLOW_ARTIFACTS_DESTINATION as uid $(id -u); mount it read-write for this user (Cloud Run GCS volume: read_only false, mount options uid=$(id -u),gid=$(id -g)) or point MLFLOW_ARTIFACTS_DESTINATION at a writable directory"

# MLflow reads the pool settings itself, in every worker; iap_identity.py reads the IAP ones (serve.py
# checks them first, before the database); cloudsql_iam.py reads MLFLOW_BACKEND_STORE_AUTH; MLflow
# reads the gateway's three, which gateway_key.py checks (in serve.py, before the database). The
# passphrase stays in the environment, never on a command line.
export MLFLOW_SQLALCHEMYSTORE_POOL_SIZE MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW MLFLOW_IAP_VERIFICATION MLFLOW_IAP_AUDIENCE \
    MLFLOW_BACKEND_STORE_AUTH MLFLOW_CRYPTO_KEK_PASSPHRASE MLFLOW_CRYPTO_KEK_VERSION MLFLOW_ENABLE_AI_GATEWAY
# No huey job runner and consumers (7 extra processes, ~1 GB): nothing here uses MLflow jobs.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
# No usage reporting to MLflow's telemetry endpoint from a private server.
export MLFLOW_DISABLE_TELEMETRY=true

# Cloud Run kills the container 10 s after SIGTERM; in-flight requests get 8 of them.
# --http zttp --http2: every connection on $PORT is sniffed, HTTP/2 cleartext with prior knowledge
# (what Cloud Run sends to a container port named h2c: no 32 MiB request limit, so artifacts over
# 32 MiB can be uploaded) or HTTP/1.1 (Cloud Run's startup and liveness probes, local use).
set -- \
    --host 0.0.0.0 \
    --port "$PORT" \
    --workers "$MLFLOW_WORKERS" \
    --serve-artifacts \
    --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
    --uvicorn-opts "--timeout-graceful-shutdown 8 --http zttp --http2"
if [ -n "$MLFLOW_ALLOWED_HOSTS" ]; then
    set -- "$@" --allowed-hosts "$MLFLOW_ALLOWED_HOSTS"
fi
if [ -n "$MLFLOW_CORS_ALLOWED_ORIGINS" ]; then
    set -- "$@" --cors-allowed-origins "$MLFLOW_CORS_ALLOWED_ORIGINS"
fi

exec python "$(dirname "$0")/serve.py" "$@"
