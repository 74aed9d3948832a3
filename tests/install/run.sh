#!/bin/sh
# Install the build into a scratch prefix and check what a user gets:
#  - no archive anywhere, and no installed ELF file (library or program)
#    exports a symbol of ours without the ugpu_ prefix;
#  - libugpu.so.0 (SONAME) exports exactly the UGPU_API functions of the
#    installed headers, each in its node of src/libugpu.map (abi.sh);
#  - the installed ugpu-demo loads the installed libugpu.so.0;
#  - an outside program builds against it twice — through pkg-config
#    (--static too: it must not ask for an archive) and through
#    find_package(ugpu) — and runs.
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

# Nothing installed may hand a user an internal symbol: no archive (it
# would carry every internal global), and in each ELF file every defined
# dynamic symbol of ours (unversioned, or in a UGPU_* node) is ugpu_*.
# Programs also export copy-relocated libc data (stdout@GLIBC_2.2.5): not ours.
bad=""
for f in $(find "$prefix" -type f | sort); do
	magic=$(head -c 7 "$f" | tr -d '\0')
	case $magic in
	'!<arch>')
		bad="$bad
    ${f#"$prefix"/}: a static archive"
		continue ;;
	"$(printf '\177ELF')"*) ;;
	*) continue ;;
	esac
	for s in $(nm -D --defined-only "$f" 2>/dev/null | awk '!($2 == "A" && $3 ~ /^UGPU_/) { print $3 }'); do
		case $s in
		*@*) ver=${s#*@}; ver=${ver#@}; [ "${ver#UGPU_}" != "$ver" ] || continue ;;
		esac
		case ${s%%@*} in
		ugpu_*) ;;
		*) bad="$bad
    ${f#"$prefix"/}: ${s%%@*}" ;;
		esac
	done
done
[ -z "$bad" ] || { echo "FAIL: the installed tree exposes internal symbols:$bad"; exit 1; }
sh "$src/tests/install/abi.sh" "$lib" "$src/src/libugpu.map" "$prefix/include"

# The installed demo (linked against libugpu.so.0, public API only) finds
# the library of its own prefix ($ORIGIN RUNPATH), wherever that is.
if [ -x "$prefix/bin/ugpu-demo" ]; then
	found=$(ldd "$prefix/bin/ugpu-demo" | awk '$1 == "libugpu.so.0" { print $3 }')
	[ "$(readlink -f "$found")" = "$(readlink -f "$lib")" ] || {
		echo "FAIL: the installed ugpu-demo loads libugpu.so.0 from '$found', not $lib"
		exit 1
	}
fi

# 1. pkg-config
PKG_CONFIG_PATH=$libdir/pkgconfig
export PKG_CONFIG_PATH
cc -std=c11 -Wall -Wextra -Werror -o "$work/consumer-pc" "$src/tests/install/consumer/consumer.c" \
	$(pkg-config --cflags --libs ugpu)
LD_LIBRARY_PATH=$libdir "$work/consumer-pc"
# Only the shared library is installed: a --static query must not name the
# private dependencies of a static link (that would promise an archive).
pc_dyn=$(pkg-config --libs ugpu)
pc_static=$(pkg-config --static --libs ugpu)
[ "$pc_static" = "$pc_dyn" ] || {
	echo "FAIL: pkg-config --static --libs ugpu asks for a static link ($pc_static) but only $lib is installed"
	exit 1
}

# 2. find_package(ugpu)
cmake -S "$src/tests/install/consumer" -B "$work/cbuild" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/cbuild" >/dev/null
LD_LIBRARY_PATH=$libdir "$work/cbuild/consumer"

echo "install: ok (SONAME $soname, no archive, no unprefixed export, pkg-config (--static too) and find_package)"
