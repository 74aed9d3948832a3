#!/bin/sh
# SPDX-License-Identifier: MIT
# `ugpuctl stats` against a reference device (ugpu-sim on a scratch socket):
#  - --prometheus passes `promtool check metrics` (the format and Prometheus'
#    naming lint: _total counters, base units), every sample carries the
#    device label, and ugpu_vram_size_bytes is the device's VRAM;
#  - the latency histograms (runtime-PM wake, SVM fault service) are there
#    as histograms in seconds: cumulative buckets from le="1e-06" doubling
#    to +Inf, and _count equal to the +Inf bucket;
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

need promtool prometheus

start_sim "$B" "$tmp/sim" "$tmp/gpu.sock" --socket-path="$tmp/gpu.sock" --vram 64M
uri="vfio-user:$tmp/gpu.sock"

"$B/ugpuctl" stats --prometheus "$uri" >"$tmp/prom" 2>"$tmp/err" || fail "stats --prometheus: $(cat "$tmp/err")"
promtool check metrics <"$tmp/prom" >"$tmp/lint" 2>&1 || fail "promtool check metrics: $(cat "$tmp/lint")"
n=$(grep -c '^ugpu_' "$tmp/prom")
[ "$n" -ge 60 ] || fail "only $n samples"
grep '^ugpu_' "$tmp/prom" | grep -v "{device=\"$uri\"\(,le=\"[^\"]*\"\)\?} " >"$tmp/nolabel" && fail "samples without the device label: $(head -2 "$tmp/nolabel")"
grep -qx "ugpu_vram_size_bytes{device=\"$uri\"} 67108864" "$tmp/prom" || fail "no ugpu_vram_size_bytes of 64 MiB: $(grep vram_size "$tmp/prom")"
for h in ugpu_rpm_wake_latency_seconds ugpu_svm_pagefault_latency_seconds; do
	grep -qx "# TYPE $h histogram" "$tmp/prom" || fail "no histogram $h"
	python3 - "$tmp/prom" "$h" <<'PY' || fail "histogram $h is not consistent"
import re, sys
name = sys.argv[2]
b, count = [], None
for l in open(sys.argv[1]):
    m = re.match(name + r'_bucket\{[^}]*le="([^"]+)"\} (\d+)$', l)
    if m:
        b.append((m.group(1), int(m.group(2))))
    m = re.match(name + r'_count\{[^}]*\} (\d+)$', l)
    if m:
        count = int(m.group(1))
assert len(b) == 24 and b[-1][0] == "+Inf" and b[-1][1] == count, (b, count)
assert all(float(b[i][0]) == 1e-6 * 2 ** i for i in range(23)), b
assert all(b[i][1] <= b[i + 1][1] for i in range(23)), b
PY
done
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

finish "prom: ugpuctl stats passes promtool; JSON and table agree"
