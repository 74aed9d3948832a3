#!/bin/sh
# SPDX-License-Identifier: MIT
# ugpud's Prometheus endpoint: a daemon serving two embedded reference
# devices answers GET /metrics with text that passes `promtool check
# metrics`, each counter once with one sample per device (labelled with its
# URI; histograms with one bucket series per device), ugpud_up 1 and
# ugpud_devices 2; another path is 404, POST is 405; a
# malformed --metrics is refused at start.
# Usage: ugpud_metrics.sh BUILD_DIR
set -u
. "$(dirname "$0")/../sh_util.sh"
B=$1
tmp=$(mktemp -d /tmp/ugpu-metrics-test.XXXXXX)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
need promtool prometheus

"$B/ugpud" --device sim:64M --device sim:32M --socket "$tmp/d.sock" --metrics 127.0.0.1:0 \
	>"$tmp/log" 2>&1 &
pid=$!
wait_for 'grep -q "metrics on http://" "$tmp/log"' || { echo "FAIL: no metrics line: $(cat "$tmp/log")"; exit 1; }
url=$(sed -n 's|.*metrics on \(http://[0-9.:]*/metrics\).*|\1|p' "$tmp/log" | head -n 1)

fetch() { # fetch METHOD URL: the status code on line 1, then the body
	python3 - "$1" "$2" <<'PY'
import sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[2], method=sys.argv[1])
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print(r.status); sys.stdout.write(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code)
PY
}

fetch GET "$url" >"$tmp/resp"
[ "$(head -n 1 "$tmp/resp")" = 200 ] || fail "GET /metrics: $(head -n 3 "$tmp/resp")"
tail -n +2 "$tmp/resp" >"$tmp/prom"
promtool check metrics <"$tmp/prom" >"$tmp/lint" 2>&1 || fail "promtool: $(cat "$tmp/lint")"
grep -qx "ugpud_up 1" "$tmp/prom" || fail "no ugpud_up 1"
grep -qx "ugpud_devices 2" "$tmp/prom" || fail "no ugpud_devices 2"
grep -qx 'ugpu_vram_size_bytes{device="sim:64M"} 67108864' "$tmp/prom" || fail "no sim:64M VRAM sample"
grep -qx 'ugpu_vram_size_bytes{device="sim:32M"} 33554432' "$tmp/prom" || fail "no sim:32M VRAM sample"
n=$(grep -c '^# TYPE ugpu_vram_size_bytes ' "$tmp/prom")
[ "$n" -eq 1 ] || fail "ugpu_vram_size_bytes has $n TYPE lines"
grep -qx "# TYPE ugpu_svm_pagefault_latency_seconds histogram" "$tmp/prom" || fail "no SVM fault histogram"
n=$(grep -c '^ugpu_rpm_wake_latency_seconds_bucket{device="sim:[0-9]*M",le="+Inf"} ' "$tmp/prom")
[ "$n" -eq 2 ] || fail "the wake histogram has $n +Inf buckets, not one per device"
[ "$(fetch GET "${url%/metrics}/other" | head -n 1)" = 404 ] || fail "another path is not 404"
[ "$(fetch POST "$url" | head -n 1)" = 405 ] || fail "POST is not 405"
kill "$pid"
wait "$pid"
pid=

"$B/ugpud" --device sim --socket "$tmp/e.sock" --metrics nonsense >"$tmp/log2" 2>&1
[ $? -ne 0 ] && grep -q "is not ADDR:PORT" "$tmp/log2" || fail "--metrics nonsense was not refused: $(cat "$tmp/log2")"

finish "ugpud_metrics: /metrics passes promtool, one sample per device"
