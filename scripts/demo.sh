#!/usr/bin/env bash
# Install DCS and bring the demo facility up on the embedded defaults
# (sqlite Tango database under var/); it keeps running until `dcs down`.
# Arguments go to `dcs up`, e.g. scripts/demo.sh facilities/other.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-packages.sh  # openssh-server for the demo's simulated DAQ worker node
python3 -m pip install --quiet --disable-pip-version-check -e '.[gui]'
export TANGO_HOST="${TANGO_HOST:-127.0.0.1:10000}"
# python3 -m rather than the dcs script: a just-installed script may not be on PATH yet (pyenv shims).
exec python3 -m clients.cli up "$@"
