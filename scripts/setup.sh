#!/usr/bin/env bash
# Everything a fresh machine needs for synth and tests: pipenv + the locked Python packages in .venv,
# the pinned cdktf CLI in node_modules, and PostgreSQL's server binaries for the end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1 || { echo "setup: $1 not found; install $2 and re-run" >&2; exit 1; }; }
need python3.11 "Python 3.11"
need npm "Node.js 20+ with npm"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! python3.11 -m pipenv --version >/dev/null 2>&1; then
  python3.11 -m pip install --quiet "pipenv==2026.10.3"
fi
PIPENV_VENV_IN_PROJECT=1 python3.11 -m pipenv sync --categories "packages dev-packages cdktn"
npm ci --no-audit --no-fund

if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
echo "setup: done (.venv, node_modules, PostgreSQL $(ls /usr/lib/postgresql))"
