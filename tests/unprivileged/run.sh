#!/bin/sh
# SPDX-License-Identifier: MIT
# Run a test program as an ordinary user, as HPC users run ugpu (issue 19):
# as root, `runuser -u nobody -- PROGRAM ARGS...`. Where nobody may not use
# the full userfaultfd (no access to /dev/userfaultfd and
# vm.unprivileged_userfaultfd=0, Debian's default), the driver falls back to
# a userfaultfd that traps user-mode faults only and says so once in its log:
# with --expect-fallback-log (a program that shows the driver's warnings),
# this checks that it did; and always that the program passes that way.
#
# Exits 77 (skip) with the reason when it cannot: not root (the other tests
# already run as this user), no runuser or no user nobody, or the program is
# not reachable by nobody (a parent directory closed to others).
# Usage: run.sh [--expect-fallback-log] PROGRAM [ARGS...]
set -u
expect_log=0
if [ "$1" = --expect-fallback-log ]; then
	expect_log=1
	shift
fi
prog=$1
user=${UGPU_UNPRIVILEGED_USER:-nobody}
if [ "$(id -u)" -ne 0 ]; then
	echo "skip: not root; the tests already run as an ordinary user ($(id -un))"
	exit 77
fi
if ! command -v runuser >/dev/null 2>&1 || ! id "$user" >/dev/null 2>&1; then
	echo "skip: needs runuser and a user '$user'"
	exit 77
fi
if ! runuser -u "$user" -- test -x "$prog"; then
	echo "skip: $user cannot run $prog (a parent directory is closed to others; build elsewhere, e.g. under /tmp)"
	exit 77
fi
cd /tmp || exit 1
out=$(mktemp /tmp/ugpu-unprivileged.XXXXXX)
chmod 644 "$out"
runuser -u "$user" -- "$@" >"$out" 2>&1
rc=$?
cat "$out"
# Would nobody have had the full userfaultfd?
full=0
runuser -u "$user" -- test -r /dev/userfaultfd -a -w /dev/userfaultfd 2>/dev/null && full=1
[ "$(cat /proc/sys/vm/unprivileged_userfaultfd 2>/dev/null || echo 0)" = 1 ] && full=1
if [ $rc -eq 0 ] && [ $expect_log -eq 1 ] && [ $full -eq 0 ] && ! grep -q "userfaultfd: user-mode faults only" "$out"; then
	echo "FAIL: ran as $user without the full userfaultfd, but the driver never said it fell back to user-mode faults only"
	rc=1
fi
rm -f "$out"
exit $rc
