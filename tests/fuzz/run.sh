#!/bin/sh
# Run the fuzz targets (vfio-user's two ends, ugpud's requests) of a UGPU_FUZZ build (see docs/testing.md).
# Usage: tests/fuzz/run.sh BUILD_DIR [SECONDS_PER_TARGET] [RUNS_PER_TARGET]
#
# For each target: replay every crash reproducer in tests/fuzz/regressions/
# (each must pass), then fuzz from the checked-in corpus (copied: the
# corpus in the tree is not changed) for SECONDS (default 20) or RUNS
# executions, whichever ends first (RUNS -1: no limit). Prints the seed (give it
# back with UGPU_FUZZ_SEED=N) and the executions reached. A finding is kept in
# BUILD_DIR/fuzz-artifacts/ with the command that replays it; the exit status
# is then non-zero.
set -eu

bld=${1:?usage: run.sh BUILD_DIR [SECONDS] [RUNS]}
secs=${2:-20}
runs=${3:--1}
here=$(cd "$(dirname "$0")" && pwd)
seed=${UGPU_FUZZ_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
arts=$bld/fuzz-artifacts
mkdir -p "$arts"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
trap 'exit 1' INT TERM
status=0

for t in fuzz_sim_request fuzz_client_reply fuzz_ugpud_request; do
	bin=$bld/tests/fuzz/$t
	[ -x "$bin" ] || { echo "fuzz: $bin not built (UGPU_FUZZ=ON, CC=clang)"; exit 1; }

	regs=$(find "$here/regressions/$t" -type f ! -name '*.md' | sort)
	if [ -n "$regs" ]; then
		# shellcheck disable=SC2086
		if ! "$bin" -timeout=10 $regs >"$work/$t.reg.log" 2>&1; then
			echo "fuzz: $t: a regression input fails again:"
			tail -n 30 "$work/$t.reg.log"
			status=1
			continue
		fi
		echo "fuzz: $t: $(echo "$regs" | wc -l) regression inputs pass"
	fi

	mkdir -p "$work/$t"
	if "$bin" -seed="$seed" -max_total_time="$secs" -runs="$runs" -timeout=10 \
		-rss_limit_mb=2048 -close_fd_mask=2 -print_final_stats=1 \
		-artifact_prefix="$arts/$t-" "$work/$t" "$here/corpus/$t" >"$work/$t.log" 2>&1; then
		execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log")
		rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/$t.log")
		cov=$(grep -E '^#[0-9]+.*(DONE|pulse)' "$work/$t.log" | tail -n 1 |
			sed -n 's/.*cov: \([0-9]*\) ft: \([0-9]*\) corp: \([^ ]*\).*/\1 edges, \2 features, corpus \3/p')
		echo "fuzz: $t: seed $seed, $execs executions ($rate/s), ${cov:-?}, no finding"
	else
		echo "fuzz: $t: FINDING (seed $seed); last lines:"
		tail -n 40 "$work/$t.log"
		cp "$work/$t.log" "$arts/$t.log"
		echo "fuzz: artifacts in $arts; replay with: $bin $arts/$t-<file>"
		status=1
	fi
done
exit $status
