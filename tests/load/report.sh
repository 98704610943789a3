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

# perf pads every line to the terminal's width and prints comment headers.
trim() {
    grep -v '^#' | grep -v '^[[:space:]]*$' | cut -c1-170 | sed -e 's/[[:space:]]*$//'
}

profile_args=()
if [[ "${PROFILE:-1}" != 0 ]] && command -v perf >/dev/null; then
    records="${PROFILE_RECORDS:-200000}"
    rm -f "$work/import.perf.data"
    if "$tool" import --records "$records" --naive-records 1000 \
        --perf-data "$work/import.perf.data" >"$work/profiled-import.txt"; then
        # Inclusive time of the program's frames (runtime, thread, future-adapter and
        # kernel frames left out: they include everything or show in the object summary),
        # then self time by symbol and by object.
        {
            echo "# import of $records contacts: import-svc's process only, inclusive (children) time"
            perf report -i "$work/import.perf.data" --stdio --children --sort symbol -g none \
                --percent-limit 3 2>/dev/null | trim |
                grep -Ev '\[k\]|tokio::runtime|std::sys|start_thread|clone3|call_once|__rust_begin|0xffffffffffffffff|PollFn|MaybeDone|future::map::Map' |
                head -30 || true
            echo
            echo "# self time by symbol"
            perf report -i "$work/import.perf.data" --stdio --no-children --sort symbol -g none \
                --percent-limit 1.5 2>/dev/null | trim | head -20 || true
            echo
            echo "# self time by shared object"
            perf report -i "$work/import.perf.data" --stdio --no-children --sort dso -g none \
                --percent-limit 0.5 2>/dev/null | trim | head -8 || true
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
