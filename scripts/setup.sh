#!/usr/bin/env bash
# Everything synth and the tests need, without root: pipenv in a project-level tools environment
# (.tools/, as pipenv's docs suggest where the system Python is externally managed, PEP 668), the
# locked Python packages in .venv, the pinned CLI and Node.js in node_modules; then PostgreSQL's server
# binaries for the end-to-end tests and Chromium with ChromeDriver for the UI test, where this machine
# lets us install them (root, passwordless sudo, or Homebrew for PostgreSQL), and otherwise one line
# saying what to install. CI=true makes that line an error.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
PIPENV_VERSION=2026.10.3

need() { command -v "$1" >/dev/null 2>&1 || { echo "setup: $1 not found; install $2 and re-run" >&2; exit 1; }; }
need "$PYTHON" "Python 3.11 (Debian/Ubuntu: apt-get install python3.11 python3.11-venv; macOS: brew install python@3.11), or set PYTHON"
need npm "Node.js with npm (any version: the supported Node.js comes from the npm registry into node_modules)"
"$PYTHON" -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || {
  echo "setup: $PYTHON is not a Python 3.11 with venv; install python3.11 and python3.11-venv, or set PYTHON" >&2
  exit 1
}

if [ "$(.tools/bin/pipenv --version 2>/dev/null)" != "pipenv, version $PIPENV_VERSION" ]; then
  rm -rf .tools
  "$PYTHON" -m venv .tools
  .tools/bin/python -m pip install --quiet --disable-pip-version-check "pipenv==$PIPENV_VERSION"
fi
PIPENV_VENV_IN_PROJECT=1 PIPENV_PYTHON="$(command -v "$PYTHON")" .tools/bin/pipenv sync --categories "packages dev-packages cdktn"
# The pinned Node first (its own npm package, into .tools/node), then `npm ci` running on it: npm checks
# the packages' engines (cdktn-cli: node >=22.19) against the Node it runs on, so on an older system
# Node it would warn EBADENGINE although everything then runs on the pinned one.
NODE_VERSION=$(node -p "require('./package.json').devDependencies.node")
if [ "$(.tools/node/node_modules/.bin/node --version 2>/dev/null)" != "v$NODE_VERSION" ]; then
  rm -rf .tools/node && mkdir -p .tools/node
  echo '{"private": true, "allowScripts": {"node": true}}' > .tools/node/package.json
  npm install --silent --no-save --no-package-lock --no-audit --no-fund --prefix .tools/node "node@$NODE_VERSION"
fi
PATH="$PWD/.tools/node/node_modules/.bin:$PATH" npm ci --no-audit --no-fund

postgres_bindir() {
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$found" ] && [ -x "$found/initdb" ] && { echo "$found"; return; }
  command -v initdb >/dev/null 2>&1 && dirname "$(command -v initdb)"
}

have_browser() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }

can_apt() { command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
apt_updated=
apt_install() {
  [ -n "$apt_updated" ] || { as_root apt-get update -qq; apt_updated=1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if [ -z "$(postgres_bindir)" ]; then
  if can_apt; then
    apt_install postgresql
  elif command -v brew >/dev/null 2>&1; then
    brew install --quiet postgresql@16 && brew link --quiet postgresql@16 || true
  fi
fi
if ! have_browser && can_apt; then
  apt_install chromium chromium-driver
fi

missing=()
if bindir=$(postgres_bindir) && [ -n "$bindir" ]; then
  have="PostgreSQL in $bindir"
else
  have=""
  missing+=("PostgreSQL server binaries not found; the end-to-end tests need them: sudo apt-get install postgresql (Debian/Ubuntu) or brew install postgresql@16 (macOS)")
fi
if have_browser; then
  have="${have:+$have, }Chromium and ChromeDriver"
else
  missing+=("Chromium and ChromeDriver not found; the UI test needs them: sudo apt-get install chromium chromium-driver (Debian/Ubuntu)")
fi
if [ "${CI:-}" = true ] && [ ${#missing[@]} -gt 0 ]; then
  printf 'setup: %s\n' ${missing[@]+"${missing[@]}"} >&2
  exit 1
fi
echo "setup: done (.venv, node_modules${have:+, $have})"
for msg in ${missing[@]+"${missing[@]}"}; do echo "setup: $msg"; done
