#!/bin/sh
# Install the build into a scratch prefix, then build an outside program
# against it twice — through pkg-config and through find_package(ugpu) — and
# run both. Also checks the shared library's ABI hygiene: SONAME libugpu.so.0
# and nothing exported but ugpu_* symbols under a version node.
# Usage: run.sh SOURCE_DIR BUILD_DIR
set -eu
src=$1
bld=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

cmake --install "$bld" --prefix "$prefix" >/dev/null
libdir=$(ls -d "$prefix"/lib*/ | head -n 1)
libdir=${libdir%/}
lib=$(ls "$libdir"/libugpu.so.0.* | head -n 1)

soname=$(readelf -d "$lib" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
[ "$soname" = "libugpu.so.0" ] || { echo "FAIL: SONAME is '$soname'"; exit 1; }

bad=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep -v '^ugpu_' | grep -v '^UGPU_' || true)
[ -z "$bad" ] || { echo "FAIL: symbols exported beyond ugpu_*:"; echo "$bad"; exit 1; }
nver=$(objdump -T "$lib" | grep -c 'UGPU_0\.1 *ugpu_' || true)
[ "$nver" -gt 0 ] || { echo "FAIL: no ugpu_ symbol bound to version node UGPU_0.1"; exit 1; }

# 1. pkg-config
PKG_CONFIG_PATH=$libdir/pkgconfig
export PKG_CONFIG_PATH
cc -std=c11 -Wall -Wextra -Werror -o "$work/consumer-pc" "$src/tests/install/consumer/consumer.c" \
	$(pkg-config --cflags --libs ugpu)
LD_LIBRARY_PATH=$libdir "$work/consumer-pc"

# 2. find_package(ugpu)
cmake -S "$src/tests/install/consumer" -B "$work/cbuild" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/cbuild" >/dev/null
LD_LIBRARY_PATH=$libdir "$work/cbuild/consumer"

echo "install: ok (SONAME $soname, $nver versioned exports, pkg-config and find_package)"
