#!/bin/sh
# SPDX-License-Identifier: MIT
# The MPI example (examples/mpi) with Debian's Open MPI on this machine:
# mpirun -np 2 and -np 4 (oversubscribed), each rank with a reference device
# of its own (ugpu-sim --devices 4; sharing one device between ranks is the
# daemon's business); every rank checks every word of
# a ring exchange from malloc'd memory in VRAM and an allreduce from mapped
# BOs. Open MPI's shared-memory transport copies between the ranks with
# process_vm_readv/writev (CMA: forced here, so the cross-process copies of
# pages in VRAM are what is tested).
# Usage: run.sh BUILD_DIR EXAMPLE
set -u
. "$(dirname "$0")/../sh_util.sh"
B=$1
ex=$2
tmp=$(mktemp -d /tmp/ugpu-mpi-test.XXXXXX)
sim=
trap '[ -n "$sim" ] && kill "$sim" 2>/dev/null; rm -rf "$tmp"' EXIT

need mpirun openmpi-bin
# Open MPI refuses root unless told (CI runs as root); no hwloc binding on
# an oversubscribed 2-core machine.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=cma
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_hwloc_base_binding_policy=none

start_sim "$B" "$tmp/sim" "$tmp/gpu.sock.3" --socket-path="$tmp/gpu.sock" --devices 4 --vram 64M
devs="vfio-user:$tmp/gpu.sock.0 vfio-user:$tmp/gpu.sock.1 vfio-user:$tmp/gpu.sock.2 vfio-user:$tmp/gpu.sock.3"

for np in 2 4; do
	# shellcheck disable=SC2086
	timeout 120 mpirun -np $np "$ex" $devs >"$tmp/out" 2>&1
	rc=$?
	if [ $rc -ne 0 ] || ! grep -q "^ok: $np ranks" "$tmp/out"; then
		echo "FAIL: mpirun -np $np: exit $rc"
		cat "$tmp/out"
		exit 1
	fi
	cat "$tmp/out"
done
echo "mpi: -np 2 and -np 4 exchanged ugpu memory byte-exact"
