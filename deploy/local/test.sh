#!/usr/bin/env bash
# The test command (README, .ci/run): dependencies, format, lints, then every test of the
# workspace against real PostgreSQL, RabbitMQ and the Clio simulator.
set -euo pipefail
cd "$(dirname "$0")/../.."

deploy/local/ensure-deps.sh --browser

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== deploy manifests (Kubernetes, compose, Dockerfile; offline schemas)"
deploy/validate.sh

echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== Python example producer (its virtual environment; the e2e tests run it)"
CLIO_CONNECT_PYTHON=$(examples/python/ensure-venv.sh)
export CLIO_CONNECT_PYTHON

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --profile ci
else
  # nextest ships with this project's machines; plain cargo test runs the same tests.
  cargo test --workspace --locked
fi
