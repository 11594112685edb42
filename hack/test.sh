#!/usr/bin/env bash
# Runs every test tier (unit, dataplane, end-to-end) and summarises.
#
# Root-only tests skip, saying why, where they cannot run. With
# SVCPROXY_REQUIRE_ALL=1 (make test, and so CI) a skipped test is a failure:
# a green run then proves every tier really ran.
set -uo pipefail
cd "$(dirname "$0")/.."
timeout="${TEST_TIMEOUT:-25m}"
mkdir -p _output
log=_output/test.log

SVCPROXY_E2E=1 go test -count=1 -timeout "$timeout" -v ./... >"$log" 2>&1
rc=$?

# Package results, failures and skips, as go test prints them.
grep -E '^(ok|FAIL|panic:|\?)[[:space:]]|^[[:space:]]*--- (FAIL|SKIP)' "$log"
passed=$(grep -cE '^[[:space:]]*--- PASS' "$log")
failed=$(grep -cE '^[[:space:]]*--- FAIL' "$log")
skipped=$(grep -cE '^[[:space:]]*--- SKIP' "$log")
echo "full log: $log"
echo "tests: ${passed} passed, ${failed} failed, ${skipped} skipped"

if [[ $rc -ne 0 ]]; then
	grep -B2 -A20 -E '^[[:space:]]*--- FAIL' "$log" | head -200
	exit "$rc"
fi
if [[ "${SVCPROXY_REQUIRE_ALL:-0}" == 1 && $skipped -gt 0 ]]; then
	echo "FAIL: $skipped tests skipped but SVCPROXY_REQUIRE_ALL=1 demands every tier run:" >&2
	grep -A2 -E '^[[:space:]]*--- SKIP' "$log" >&2
	exit 1
fi
