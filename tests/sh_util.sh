# SPDX-License-Identifier: MIT
# Helpers for the shell tests (sourced).

# wait_for COMMAND: evaluate the shell COMMAND (a string, evaluated anew each
# time) every 10 ms until it succeeds, at most 5 s; returns 1 if it never did.
wait_for() {
	_i=0
	while ! eval "$1" >/dev/null 2>&1; do
		[ $_i -ge 500 ] && return 1
		sleep 0.01
		_i=$((_i + 1))
	done
	return 0
}

# start_sim BUILD_DIR LOG SOCKET ARGS...: start ugpu-sim in the background
# with ARGS; sets $sim to its pid and waits until SOCKET (the one it is to
# serve first) is a socket, else prints why and exits 1.
start_sim() {
	_b=$1 _log=$2 _sock=$3
	shift 3
	"$_b/ugpu-sim" "$@" >"$_log" 2>&1 &
	sim=$!
	wait_for '[ -S "$_sock" ]' || { echo "FAIL: ugpu-sim did not start: $(cat "$_log")"; exit 1; }
}

# fail MESSAGE: report one failure and go on; finish SUCCESS_LINE at the end
# prints the count and exits 1 if there was any, else prints SUCCESS_LINE.
fails=0
fail() {
	echo "FAIL: $*"
	fails=$((fails + 1))
}
finish() {
	[ "$fails" -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
	echo "$1"
}

# need COMMAND PACKAGE: exit 1 (a failure, never a skip) when COMMAND is
# missing, naming the Debian package make test installs it from.
need() {
	command -v "$1" >/dev/null || { echo "FAIL: $1 missing (make test installs $2)"; exit 1; }
}
