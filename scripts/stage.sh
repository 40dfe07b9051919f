#!/usr/bin/env bash
# Run one stage of `make test` and say how long it took: `scripts/stage.sh NAME COMMAND...`.
# Each line also goes to .stages (reset by the first stage of a run), which `make test` prints
# as a summary at the end: CI shows where its time goes.
set -uo pipefail
name=$1
shift
start=$(date +%s.%N)
"$@"
status=$?
end=$(date +%s.%N)
line=$(awk -v n="$name" -v s="$start" -v e="$end" -v rc="$status" \
  'BEGIN { printf "stage %-8s %7.1f s%s", n, e - s, (rc == 0 ? "" : "  FAILED (exit " rc ")") }')
echo "== $line"
echo "$line" >> .stages
exit "$status"
