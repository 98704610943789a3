#!/usr/bin/env bash
# Regenerates BENCHMARKS.md at the repository root from one run of every row of clio-load.
#
#   tests/load/report.sh                      # the issue's sizes
#   tests/load/report.sh --records 1000000    # any `clio-load all` option is passed on
#   BENCH_NOTE="quiet machine" tests/load/report.sh
#
# Needs Postgres and RabbitMQ as the tests do (CLIO_CONNECT_TEST_PG, CLIO_CONNECT_TEST_AMQP).
# With `perf` installed, a second, profiled import (PROFILE_RECORDS contacts, default
# 200000) adds import-svc's top symbols to "Where the time goes"; PROFILE=0 skips it.
# A missed target does not fail the script; a broken row does, after the file is written.

set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

cargo build --release --locked -p load
tool="$root/target/release/clio-load"
work="$root/target/load"
mkdir -p "$work"

status=0
"$tool" --json all "$@" >"$work/rows.json" || status=$?

profile_args=()
if [[ "${PROFILE:-1}" != 0 ]] && command -v perf >/dev/null; then
    records="${PROFILE_RECORDS:-200000}"
    rm -f "$work/import.perf.data"
    if "$tool" import --records "$records" --naive-records 1000 \
        --perf-data "$work/import.perf.data" >"$work/profiled-import.txt"; then
        {
            echo "# import of $records contacts, import-svc only; top symbols"
            perf report -i "$work/import.perf.data" --stdio --no-children --sort symbol \
                --percent-limit 1 2>/dev/null | grep -v '^#' | grep -v '^$' | head -30
            echo
            echo "# by shared object"
            perf report -i "$work/import.perf.data" --stdio --no-children --sort dso \
                --percent-limit 0.5 2>/dev/null | grep -v '^#' | grep -v '^$' | head -12
        } >"$work/profile.txt"
        profile_args=(--profile "$work/profile.txt")
    else
        echo "report.sh: the profiled import failed; BENCHMARKS.md has no profile" >&2
    fi
fi

revision="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain 2>/dev/null)" ]]; then
    revision="$revision (with uncommitted changes)"
fi
"$tool" render --input "$work/rows.json" "${profile_args[@]}" \
    --revision "$revision" \
    --command "tests/load/report.sh $*" \
    --note "${BENCH_NOTE:-Figures from one run of every row on this machine.}" \
    >"$root/BENCHMARKS.md"
echo "report.sh: wrote BENCHMARKS.md" >&2
exit "$status"
