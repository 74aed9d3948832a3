#!/bin/sh
# SPDX-License-Identifier: MIT
# ugpu-bench plot draws each kind of benchmark output to a PNG with gnuplot
# (Debian's gnuplot-nox, which make test installs): copy lines, suspend
# phases, suspend --incremental lines, latency and throughput bars, buddy,
# rpm, p2p; results it cannot draw are refused;
# the input may carry log lines; no results or no --out are errors.
# Usage: run.sh BUILD_DIR
set -u
. "$(dirname "$0")/../sh_util.sh"
B=$1
tmp=$(mktemp -d /tmp/ugpu-plot-test.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
need gnuplot gnuplot-nox

# draw NAME: the lines on stdin must become a PNG of 1000 x 600
draw() {
	"$B/ugpu-bench" plot --out "$tmp/$1.png" >"$tmp/out" 2>&1 || fail "$1: $(cat "$tmp/out")"
	# a PNG: its signature, then an IHDR of 1000 x 600
	sig=$(od -An -tx1 -N24 "$tmp/$1.png" 2>/dev/null | tr -d ' \n')
	case $sig in
	89504e470d0a1a0a0000000d49484452000003e800000258) ;;
	*) fail "$1: not a 1000x600 PNG: $sig" ;;
	esac
}

cat <<'EOF2' | draw copy
ugpu-bench copy: a log line the plot skips
{"bench":"copy","dir":"vram_to_sys","bytes":4096,"gbps":1.2,"memcpy_gbps":5.0,"ratio":0.2}
{"bench":"copy","dir":"vram_to_sys","bytes":1048576,"gbps":4.2,"memcpy_gbps":9.0,"ratio":0.4}
{"bench":"copy","dir":"sys_to_vram","bytes":4096,"gbps":1.0,"memcpy_gbps":5.1,"ratio":0.2}
{"bench":"copy","dir":"sys_to_vram","bytes":1048576,"gbps":3.9,"memcpy_gbps":8.9,"ratio":0.4}
EOF2
cat <<'EOF2' | draw suspend
{"bench":"suspend","shape":"1x128MiB","bos":1,"bytes":134217728,"prepare_ms":40.1,"critical_ms":20.3,"resume_ms":19.9,"gbps":6.6,"memcpy_ms":19.8,"noprep_critical_ms":41.0,"critical_over_memcpy":1.03,"noprep_over_critical":2.02}
{"bench":"suspend","shape":"2048x64KiB","bos":2048,"bytes":134217728,"prepare_ms":60.1,"critical_ms":25.3,"resume_ms":22.9,"gbps":5.3,"memcpy_ms":19.8,"noprep_critical_ms":55.0,"critical_over_memcpy":1.28,"noprep_over_critical":2.17}
EOF2
cat <<'EOF2' | draw incremental
{"bench":"suspend","case":"incremental","vram_mib":256,"dirty_pct":1,"critical_ms":2.1,"full_critical_ms":40.0}
{"bench":"suspend","case":"incremental","vram_mib":256,"dirty_pct":10,"critical_ms":6.0,"full_critical_ms":40.2}
{"bench":"suspend","case":"incremental","vram_mib":1024,"dirty_pct":1,"critical_ms":6.1,"full_critical_ms":160.0}
EOF2
cat <<'EOF2' | draw exec
{"bench":"exec","case":"empty","n":100,"p50_us":30.1,"p99_us":80.2}
{"bench":"exec","case":"write_4k","n":100,"p50_us":40.1,"p99_us":95.2}
EOF2
cat <<'EOF2' | draw svm
{"bench":"svm","case":"gpu_fault_2m","mib":64,"gbps":1.2,"migrate_gbps":1.9,"memcpy_gbps":8.0}
{"bench":"svm","case":"cpu_fault_2m","mib":64,"gbps":1.4,"memcpy_gbps":8.1}
EOF2
cat <<'EOF2' | draw svm-race
{"bench":"svm-race","case":"store_race","mechanism":"move","kib":2048,"n":10,"window_mean_us":594.7,"window_p50_le_us":512,"window_p99_le_us":4096,"store_wait_p50_us":6100.1,"store_wait_p99_us":9129.9,"store_wait_max_us":9129.9,"memcpy_us":43.9,"timeslice_ms":5,"lost":0}
{"bench":"svm-race","case":"store_race","mechanism":"write_protect","kib":2048,"n":10,"window_mean_us":909.1,"window_p50_le_us":1024,"window_p99_le_us":4096,"store_wait_p50_us":5668.6,"store_wait_p99_us":7769.3,"store_wait_max_us":7769.3,"memcpy_us":43.9,"timeslice_ms":5,"lost":0}
EOF2
cat <<'EOF2' | draw buddy
{"bench":"buddy","workload":"frag","ms":12.0,"ops_per_s":800000}
{"bench":"buddy","workload":"churn","ms":10.0,"ops_per_s":900000}
EOF2

cat <<'EOF2' | draw rpm
{"bench":"rpm","placement":"one-cpu","cpus":"0","mappings":256,"rounds":200,"release_ms":0.588,"touch_p50_us":291.2,"touch_p99_us":409.1,"uffd_p50_us":8.26,"uffd_interleaved_p50_us":15.62,"uffd_loop_p50_us":8.26,"wake_us":276,"wake_model_us":100,"target_us":300.8,"ok":true}
{"bench":"rpm","placement":"free","cpus":"any","mappings":256,"rounds":200,"release_ms":0.993,"touch_p50_us":461.1,"touch_p99_us":3462.2,"uffd_p50_us":28.87,"uffd_interleaved_p50_us":28.87,"uffd_loop_p50_us":50.73,"wake_us":402,"wake_model_us":100,"target_us":488.6,"ok":true}
EOF2
cat <<'EOF2' | draw p2p
{"bench":"p2p","case":"migrate_2m","direct_gbps":7.201,"via_system_gbps":4.902,"memcpy_gbps":12.234}
{"bench":"p2p","case":"peer_read","peer_gbps":8.882,"local_gbps":16.077}
EOF2

# results with nothing it knows how to draw: a message, no PNG, exit 1
echo '{"bench":"new-bench","case":"x","frobs":1}' | "$B/ugpu-bench" plot --out "$tmp/unknown.png" >"$tmp/out" 2>&1
[ $? -eq 1 ] && grep -q "nothing in these new-bench results" "$tmp/out" && [ ! -e "$tmp/unknown.png" ] ||
	fail "unknown keys: not exit 1 with a message and no file: $(cat "$tmp/out")"

echo "not json" | "$B/ugpu-bench" plot --out "$tmp/none.png" >"$tmp/out" 2>&1
[ $? -eq 1 ] && grep -q "no benchmark results" "$tmp/out" || fail "no results: not exit 1 with a message: $(cat "$tmp/out")"
echo '{"bench":"copy"}' | "$B/ugpu-bench" plot >"$tmp/out" 2>&1
[ $? -eq 2 ] || fail "no --out: not a usage error"
"$B/ugpu-bench" plot --in "$tmp/missing" --out "$tmp/x.png" >/dev/null 2>&1
[ $? -eq 1 ] || fail "a missing --in file is not exit 1"

finish "plot: every kind of benchmark output drawn to a PNG"
