#!/usr/bin/env bash
# Makes the Python virtual environment the example producer runs in, and prints its
# interpreter's path (the only thing written to standard output):
#
#   PY=$(examples/python/ensure-venv.sh) && "$PY" examples/python/producer.py --help
#
# The environment lives outside the repository, at $CLIO_CONNECT_PY_VENV (default
# ~/.cache/clio-connect/py-venv). The first run creates it and installs requirements.txt
# with pip (quietly, never prompting); later runs, while requirements.txt is unchanged,
# only print the path and need no network. Runs at once wait for each other.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REQUIREMENTS=$HERE/requirements.txt
VENV=${CLIO_CONNECT_PY_VENV:-${HOME}/.cache/clio-connect/py-venv}
PYTHON=$VENV/bin/python
STAMP=$VENV/.requirements

log() { printf 'ensure-venv: %s\n' "$*" >&2; }

ready() {
  [ -x "$PYTHON" ] && cmp -s "$REQUIREMENTS" "$STAMP"
}

if ready; then
  echo "$PYTHON"
  exit 0
fi

mkdir -p "$(dirname "$VENV")"
# Two test processes may ask at once: one installs, the other waits and reuses it.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$VENV.lock"
  flock 9
  if ready; then
    echo "$PYTHON"
    exit 0
  fi
fi

SYSTEM_PYTHON=$(command -v python3 || true)
if [ -z "$SYSTEM_PYTHON" ]; then
  log "python3 is needed (with its venv module, e.g. the python3-venv package)"
  exit 2
fi
log "creating $VENV and installing $(sed -e 's/#.*//' "$REQUIREMENTS" | xargs)"
rm -rf "$VENV"
if ! "$SYSTEM_PYTHON" -m venv "$VENV" >&2; then
  log "python3 cannot create a virtual environment; install its venv module (python3-venv)"
  exit 2
fi
if ! PIP_DISABLE_PIP_VERSION_CHECK=1 "$PYTHON" -m pip install --quiet --no-input \
    --requirement "$REQUIREMENTS" >&2; then
  log "pip could not install $REQUIREMENTS (is the package index reachable?)"
  rm -rf "$VENV"
  exit 2
fi
cp "$REQUIREMENTS" "$STAMP"
echo "$PYTHON"
