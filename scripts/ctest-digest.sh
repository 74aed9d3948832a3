#!/bin/sh
# After a failed ctest run: the lines that say what failed (cmocka's failed
# checks and cases, the sanitizers' summaries), at the end of the output,
# where a log cut in its middle still shows them.
# Usage: scripts/ctest-digest.sh BUILD_DIR
log=${1:?usage: ctest-digest.sh BUILD_DIR}/Testing/Temporary/LastTest.log
[ -r "$log" ] || exit 0
echo "== what failed (the whole output: $log):"
grep -aE '^[0-9]+/[0-9]+ Testing: |^\[  ERROR   \]|^\[   LINE   \]|^\[  FAILED  \] [A-Za-z_]|^SUMMARY: |^WARNING: ThreadSanitizer|runtime error:|^Test time =.*|Test (Failed|Timeout)' "$log" |
	grep -av 'Test time' | awk '
		/ Testing: / { name = $0; next }
		{ if (name != "") { print name; name = "" } print }' | tail -n 60
