#!/bin/sh
# SPDX-License-Identifier: MIT
# `ugpuctl stats` against a reference device (ugpu-sim on a scratch socket):
#  - --prometheus passes `promtool check metrics` (the format and Prometheus'
#    naming lint: _total counters, base units), every sample carries the
#    device label, and ugpu_vram_size_bytes is the device's VRAM;
#  - --json is one valid JSON object per counter, the same names as the
#    table;
#  - --json with --prometheus is a usage error.
# Usage: run.sh BUILD_DIR
set -u
. "$(dirname "$0")/../sh_util.sh"
B=$1
tmp=$(mktemp -d /tmp/ugpu-prom-test.XXXXXX)
sim=
trap '[ -n "$sim" ] && kill "$sim" 2>/dev/null; rm -rf "$tmp"' EXIT
fails=0
fail() {
	echo "FAIL: $*"
	fails=$((fails + 1))
}

command -v promtool >/dev/null || { echo "FAIL: promtool missing (make test installs prometheus)"; exit 1; }

start_sim "$B" "$tmp/sim" "$tmp/gpu.sock" --socket-path="$tmp/gpu.sock" --vram 64M
uri="vfio-user:$tmp/gpu.sock"

"$B/ugpuctl" stats --prometheus "$uri" >"$tmp/prom" 2>"$tmp/err" || fail "stats --prometheus: $(cat "$tmp/err")"
promtool check metrics <"$tmp/prom" >"$tmp/lint" 2>&1 || fail "promtool check metrics: $(cat "$tmp/lint")"
n=$(grep -c '^ugpu_' "$tmp/prom")
[ "$n" -ge 60 ] || fail "only $n samples"
grep '^ugpu_' "$tmp/prom" | grep -v "{device=\"$uri\"} " >"$tmp/nolabel" && fail "samples without the device label: $(head -2 "$tmp/nolabel")"
grep -qx "ugpu_vram_size_bytes{device=\"$uri\"} 67108864" "$tmp/prom" || fail "no ugpu_vram_size_bytes of 64 MiB: $(grep vram_size "$tmp/prom")"
grep '^# TYPE .* counter$' "$tmp/prom" | grep -v '_total counter$' >"$tmp/bad" && fail "counters without _total: $(head -2 "$tmp/bad")"

"$B/ugpuctl" stats --json "$uri" >"$tmp/json" 2>"$tmp/err" || fail "stats --json: $(cat "$tmp/err")"
python3 -c '
import json, sys
names = [json.loads(l)["name"] for l in open(sys.argv[1])]
assert len(names) == len(set(names)) and len(names) >= 60, names
print("\n".join(names))' "$tmp/json" >"$tmp/jnames" || fail "stats --json is not one object per counter"
"$B/ugpuctl" stats "$uri" | awk '{print $2}' >"$tmp/tnames"
cmp -s "$tmp/jnames" "$tmp/tnames" || fail "--json and the table list different counters"

"$B/ugpuctl" stats --json --prometheus "$uri" >/dev/null 2>&1
[ $? -eq 2 ] || fail "--json --prometheus is not a usage error"

[ $fails -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "prom: ugpuctl stats passes promtool; JSON and table agree"
