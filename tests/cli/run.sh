#!/bin/sh
# SPDX-License-Identifier: MIT
# The command line of every tool, as a user meets it (tools/common/cli.h):
#  - every command and subcommand answers -h/--help (exit 0, a usage line on
#    stdout, defaults shown) and --version (exit 0, "NAME (ugpu) X.Y.Z");
#  - a bad number is refused with exit 2 and the accepted range, printed
#    once on stderr, nothing on stdout;
#  - an unknown command or option is exit 2; a failure to open a device is
#    exit 1 with exactly one line.
# Usage: run.sh BUILD_DIR
set -u
. "$(dirname "$0")/../sh_util.sh"
B=$1
tmp=$(mktemp -d /tmp/ugpu-cli-test.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# expect CODE PATTERN CMD...: exit code CODE, PATTERN (grep -E) in the output
expect() {
	code=$1 pat=$2
	shift 2
	"$@" >"$tmp/out" 2>"$tmp/err"
	got=$?
	[ "$got" -eq "$code" ] || fail "'$*': exit $got, expected $code; $(cat "$tmp/out" "$tmp/err" | head -3)"
	cat "$tmp/out" "$tmp/err" | grep -Eq -- "$pat" ||
		fail "'$*': no '$pat' in: $(cat "$tmp/out" "$tmp/err" | head -3)"
}

# help and version: on stdout, exit 0
help_version() {
	name=$1
	shift
	for h in -h --help; do
		expect 0 "^usage: $name" "$@" $h
		[ -s "$tmp/err" ] && fail "'$* $h' wrote to stderr: $(head -1 "$tmp/err")"
	done
	expect 0 "^${name%% *} \(ugpu\) [0-9]+\.[0-9]+\.[0-9]+$" "$@" --version
}

# bad_number PATTERN CMD...: exit 2, PATTERN in the one error line, nothing
# on stdout, the error printed once
bad_number() {
	pat=$1
	shift
	expect 2 "$pat" "$@"
	[ -s "$tmp/out" ] && fail "'$*' wrote to stdout: $(head -1 "$tmp/out")"
	n=$(grep -vc "^Try '" "$tmp/err")
	[ "$n" -eq 1 ] || fail "'$*': $n error lines, expected 1: $(cat "$tmp/err")"
}

for t in ugpuctl ugpu-sim ugpu-demo ugpu-bench ugpud; do
	[ -x "$B/$t" ] || { echo "skip: $B/$t not built"; exit 77; }
	help_version "$t" "$B/$t"
done
for c in list bind unbind suspend resume unplug status stats clients kill; do
	help_version "ugpuctl $c" "$B/ugpuctl" $c
done
for c in all buddy copy exec suspend rpm svm svm-prefetch svm-race p2p uffd daemon; do
	help_version "ugpu-bench $c" "$B/ugpu-bench" $c
done
# defaults are in the usage
expect 0 "default 16\)" "$B/ugpuctl" suspend --help
expect 0 "--vram SIZE .*default 256M\)" "$B/ugpu-sim" --help
expect 0 "--vram SIZE .*default 128M\)" "$B/ugpu-demo" --help
expect 0 "--reps N .*default 5\)" "$B/ugpu-bench" buddy --help

# strict numbers, with the range in the message
bad_number "--fill-mib: 'abc' is not a number; expected an integer in 0\.\.65536" \
	"$B/ugpuctl" suspend --fill-mib abc vfio-user:/nonexistent
bad_number "--fill-mib: '12x' is not a number" "$B/ugpuctl" suspend --fill-mib 12x vfio-user:/x
bad_number "--hold-ms: '-1' is not a number; expected an integer in 0\.\.3600000" \
	"$B/ugpuctl" suspend --hold-ms -1 vfio-user:/nonexistent
bad_number "--hold-ms: '3600001' is too large \(at most 3600000\)" \
	"$B/ugpuctl" suspend --hold-ms=3600001 vfio-user:/nonexistent
bad_number "--dev: '16' is too large \(at most 15\); expected an integer in 0\.\.15" \
	"$B/ugpuctl" unplug request --control /nonexistent --dev 16
bad_number "--vram: '0' is too small \(at least 1M\); expected a size in 1M\.\.1T" \
	"$B/ugpu-sim" --socket-path=/nonexistent/s --vram 0
bad_number "--vram: '2T' is too large" "$B/ugpu-sim" --socket-path=/nonexistent/s --vram 2T
bad_number "--vram: '3M' is not a power of two" "$B/ugpu-sim" --socket-path=/nonexistent/s --vram 3M
bad_number "--vram: '1Q' is not a size" "$B/ugpu-sim" --socket-path=/nonexistent/s --vram 1Q
bad_number "--devices: '0' is too small \(at least 1\); expected an integer in 1\.\.16" \
	"$B/ugpu-sim" --socket-path=/nonexistent/s --devices 0
bad_number "--slow-link: '1-1' is not accepted; expected A-B" \
	"$B/ugpu-sim" --socket-path=/nonexistent/s --devices 2 --slow-link 1-1
bad_number "--fd: 'x' is not accepted; expected a file descriptor" "$B/ugpu-sim" --fd=x
bad_number "--vram: '0' is too small \(at least 16M\)" "$B/ugpu-demo" --vram 0
bad_number "--vram: 'abc' is not a size; expected a size in 16M\.\.1T" "$B/ugpu-demo" --vram abc
bad_number "--reps: '65' is too large" "$B/ugpu-bench" buddy --reps 65
bad_number "--min-ms: 'x' is not a number" "$B/ugpu-bench" copy --min-ms x
bad_number "--max-bytes: 4097 is not a multiple of 4096" "$B/ugpu-bench" copy --max-bytes 4097
bad_number "--n: '5' is too small \(at least 100\)" "$B/ugpu-bench" exec --n 5
bad_number "--total-mib: '-3' is not a number" "$B/ugpu-bench" suspend --total-mib -3
bad_number "--shape: '0x4K' is not accepted" "$B/ugpu-bench" suspend --shape 0x4K
bad_number "--dirty-pct: '1,0' is not accepted; expected up to 8 numbers in 1\.\.100" \
	"$B/ugpu-bench" suspend --incremental --dirty-pct 1,0
bad_number "ID: 'x' is not a number" "$B/ugpuctl" kill /nonexistent/s x
bad_number "--max-clients: '0' is too small \(at least 1\)" "$B/ugpud" --device sim --max-clients 0
bad_number "--socket-mode: '0999' is not accepted; expected octal 0000\.\.0777" \
	"$B/ugpud" --device sim --socket-mode 0999
bad_number "no --device" "$B/ugpud" --socket /nonexistent/s
bad_number "--vram-quota: '1Q' is not a size" "$B/ugpud" --device sim --vram-quota 1Q
bad_number "--incr-vram-mib: '100' is not accepted; expected up to 8 multiples of 64" \
	"$B/ugpu-bench" suspend --incremental --incr-vram-mib 100
bad_number "--spill-mib: '10' is too small \(at least 64\)" "$B/ugpu-bench" suspend --spill --spill-mib 10
bad_number "N \(mappings\): '0' is too small \(at least 1\); expected an integer in 1\.\.4096" \
	"$B/ugpu-bench" rpm 0
bad_number "ROUNDS: 'many' is not a number" "$B/ugpu-bench" rpm 8 many
bad_number "unknown placement .sideways." "$B/ugpu-bench" rpm 8 2 0 sideways
bad_number "--mib: 65 is odd" "$B/ugpu-bench" svm --mib 65
bad_number "--mib: 3 is odd" "$B/ugpu-bench" svm-prefetch --mib 3
bad_number "N \(mappings\): '1' is too small" "$B/ugpu-bench" uffd 1

# sizes with suffixes are accepted as documented: 1T starts (sparse memfd)
: >"$tmp/sim"
"$B/ugpu-sim" --socket-path="$tmp/s" --vram 1T >"$tmp/sim" 2>&1 &
sim=$!
i=0
while [ $i -lt 50 ] && ! grep -q "listening" "$tmp/sim"; do sleep 0.1; i=$((i + 1)); done
# (a sanitizer's runtime cannot map 1 TiB: there the size must still parse,
# and the start fail only for memory)
if [ -n "${UGPU_SANITIZER:-}" ] && grep -q "Cannot allocate memory" "$tmp/sim"; then
	echo "ugpu-sim --vram 1T: parsed; not mappable under $UGPU_SANITIZER"
else
	grep -q "vram 1048576 MiB" "$tmp/sim" || fail "ugpu-sim --vram 1T: $(cat "$tmp/sim")"
fi
kill "$sim" 2>/dev/null
wait "$sim"

# usage errors and failures
expect 2 "missing COMMAND" "$B/ugpuctl"
expect 2 "unknown command 'frob'" "$B/ugpuctl" frob
expect 2 "unknown option '--frob'" "$B/ugpuctl" list --frob
expect 2 "missing argument: URI" "$B/ugpuctl" suspend
expect 2 "unexpected argument 'b'" "$B/ugpuctl" resume a b
expect 2 "neither request nor surprise" "$B/ugpuctl" unplug sideways --control /x
expect 2 "--control PATH is required" "$B/ugpuctl" unplug request
expect 2 "unknown benchmark 'frob'" "$B/ugpu-bench" frob
expect 2 "unexpected argument .x." "$B/ugpu-bench" all x
expect 2 "give one of --socket-path and --fd" "$B/ugpu-sim"
expect 1 "^ugpuctl resume: cannot open vfio-user:$tmp/none: " "$B/ugpuctl" resume "vfio-user:$tmp/none"
n=$(wc -l <"$tmp/err")
[ "$n" -eq 1 ] || fail "ugpuctl resume on a missing device: $n lines on stderr, expected 1: $(cat "$tmp/err")"

# ugpuctl status --control: the reference device's own view, read-only (a
# table, or one JSON object), and the usage errors.
start_sim "$B" "$tmp/st.log" "$tmp/st.sock" --socket-path="$tmp/st.sock" --control "$tmp/st.ctl"
st=$sim
wait_for '[ -S "$tmp/st.ctl" ]' || fail "ugpu-sim made no control socket"
expect 0 "^power +D0$" "$B/ugpuctl" status --control "$tmp/st.ctl"
grep -Eq "^client +no$" "$tmp/out" || fail "status --control: no 'client no' line: $(cat "$tmp/out")"
expect 0 '"power":"D0"' "$B/ugpuctl" status --json --control "$tmp/st.ctl"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["dma_maps"] == 0, d' "$tmp/out" ||
	fail "status --json --control is not the JSON expected: $(cat "$tmp/out")"
expect 1 "cannot connect to control socket" "$B/ugpuctl" status --control "$tmp/none.ctl"
expect 2 "missing argument" "$B/ugpuctl" status
# --daemon: nothing listening is a failure naming the socket; with another
# source a usage error (test_ugpud runs it against a daemon)
expect 1 "cannot open ugpud:$tmp/none.sock" "$B/ugpuctl" status --daemon "$tmp/none.sock"
expect 2 "give one of" "$B/ugpuctl" status --daemon "$tmp/none.sock" --control "$tmp/st.ctl"
expect 2 "seen only through its owner" "$B/ugpuctl" status "vfio-user:$tmp/st.sock"
kill "$st" 2>/dev/null
wait "$st"

# The demo stopped by SIGINT or SIGTERM removes its device's socket: wait
# for the socket to appear, stop the demo, the socket must be gone (TMPDIR
# is the scratch directory, so nothing else's socket is looked at).
# (Not under a sanitizer: TSan defers a signal's handler to its next safe
# point, and the process may be gone first.)
[ -n "${UGPU_SANITIZER:-}" ] && sigs="" || sigs="INT TERM"
for sig in $sigs; do
	# (a shell starts background jobs with SIGINT ignored: env gives it back)
	TMPDIR=$tmp env --default-signal=INT,TERM "$B/ugpu-demo" >"$tmp/demo" 2>&1 &
	demo=$!
	wait_for 'ls "$tmp"/ugpu-sim-*.sock'
	kill -$sig "$demo" 2>/dev/null
	wait "$demo"
	ls "$tmp"/ugpu-sim-*.sock >/dev/null 2>&1 &&
		fail "ugpu-demo stopped by SIG$sig left its socket: $(ls "$tmp"/ugpu-sim-*.sock)"
	rm -f "$tmp"/ugpu-sim-*.sock
done

finish "cli: every tool's help, version, numbers and errors as specified"
