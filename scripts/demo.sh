#!/usr/bin/env bash
# Install DCS and bring the demo facility up on the embedded defaults
# (sqlite Tango database under var/); it keeps running until `dcs down`.
# Arguments go to `dcs up`, e.g. scripts/demo.sh facilities/other.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-packages.sh  # openssh-server for the demo's simulated DAQ worker node
# The interpreter itself, not a version manager's shim: pyenv's shim re-hashes after pip and fails
# the install when another install holds its lock.
PYTHON=$(python3 -c 'import sys; print(sys.executable)')
"$PYTHON" -m pip install --quiet --disable-pip-version-check -e '.[gui]'
command -v pyenv >/dev/null 2>&1 && { pyenv rehash 2>/dev/null || true; }  # so that `dcs` is on PATH
export TANGO_HOST="${TANGO_HOST:-127.0.0.1:10000}"
# python3 -m rather than the dcs script: a just-installed script may not be on PATH yet (pyenv shims).
exec "$PYTHON" -m clients.cli up "$@"
