#!/bin/sh
# SPDX-License-Identifier: MIT
# The README's library example, compiled from the README itself, run against
# a reference device (ugpu-sim on a scratch socket): it must write its 64 MiB,
# read them back, print its line and exit 0; and against a socket nobody
# serves it must print one error line naming the URI and exit 1.
# Usage: run.sh BUILD_DIR EXAMPLE
set -u
. "$(dirname "$0")/../sh_util.sh"
B=$1
ex=$2
tmp=$(mktemp -d /tmp/ugpu-readme-test.XXXXXX)
sim=
trap '[ -n "$sim" ] && kill "$sim" 2>/dev/null; rm -rf "$tmp"' EXIT

start_sim "$B" "$tmp/sim" "$tmp/gpu.sock" --socket-path="$tmp/gpu.sock" --vram 256M

"$ex" "vfio-user:$tmp/gpu.sock" >"$tmp/out" 2>&1 ||
	{ echo "FAIL: the README example failed: $(cat "$tmp/out")"; exit 1; }
grep -q "^vfio-user:$tmp/gpu.sock: 64 MiB written and read back$" "$tmp/out" ||
	{ echo "FAIL: unexpected output: $(cat "$tmp/out")"; exit 1; }

if "$ex" "vfio-user:$tmp/none.sock" >"$tmp/out" 2>&1; then
	echo "FAIL: the example succeeded on a socket nobody serves"
	exit 1
fi
grep -q "^vfio-user:$tmp/none.sock: " "$tmp/out" ||
	{ echo "FAIL: no error line naming the URI: $(cat "$tmp/out")"; exit 1; }
echo "readme_example: the README's example builds, runs and reports errors"
