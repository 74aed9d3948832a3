#!/bin/sh
# Install the Debian packages ugpu needs, but only those that are missing:
# on a machine that has them all this prints one line and installs nothing.
# Usage: scripts/install-deps.sh [extra-package ...]
set -eu

PKGS="build-essential cmake pkg-config libxxhash-dev liburing-dev libpciaccess-dev libjson-c-dev libsystemd-dev libmicrohttpd-dev $*"

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done

if [ -z "$missing" ]; then
	echo "deps: all present ($PKGS)"
	exit 0
fi

echo "deps: installing:$missing"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO="sudo"
	else
		echo "deps: missing packages and not root (no sudo): install$missing" >&2
		exit 1
	fi
fi
$SUDO apt-get update -q
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
