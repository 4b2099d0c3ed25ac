#!/usr/bin/env bash
# Install DCS with its test extras and run the test suite (the README's test command).
# Extra arguments go to pytest, e.g. scripts/test.sh -m slow, or -k hv.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-packages.sh
# The interpreter itself, not a version manager's shim: pyenv's shim re-hashes after pip and fails
# the install when another install holds its lock.
PYTHON=$(python3 -c 'import sys; print(sys.executable)')
"$PYTHON" -m pip install --quiet --disable-pip-version-check -e '.[test]'
set +e
"$PYTHON" -m pytest -n 2 "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$code"
