#!/bin/sh
# Install the build into a scratch prefix and check what a user gets:
#  - no archive anywhere, and no installed ELF file (library or program)
#    exports a symbol of ours without the ugpu_ prefix;
#  - libugpu.so.0 (SONAME) exports exactly the UGPU_API functions of the
#    installed headers, each in its node of src/libugpu.map (abi.sh);
#  - the installed ugpu-demo loads the installed libugpu.so.0;
#  - an outside program builds against it twice — through pkg-config
#    (--static too: it must not ask for an archive) and through
#    find_package(ugpu) — and runs;
#  - the tools (ugpu-sim included) run from the prefix; the man pages of
#    ugpuctl, ugpu-sim and libugpu are there with the version filled in and
#    format without a warning; the bash completion of ugpuctl completes; the
#    udev rule and the sysusers file are there;
#  - with DESTDIR everything lands below DESTDIR/PREFIX.
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

# 3. tools, man pages, completion, udev rule
ver=$(sed -n 's/^project(ugpu VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
for t in ugpuctl ugpu-sim ugpu-demo ugpu-bench; do
	[ -x "$prefix/bin/$t" ] || { echo "FAIL: bin/$t is not installed"; exit 1; }
	out=$("$prefix/bin/$t" --version)
	[ "$out" = "$t (ugpu) $ver" ] || { echo "FAIL: installed $t --version says '$out'"; exit 1; }
done
for page in man1/ugpuctl.1 man1/ugpu-sim.1 man7/libugpu.7 man8/ugpud.8; do
	f=$prefix/share/man/$page
	[ -f "$f" ] || { echo "FAIL: share/man/$page is not installed"; exit 1; }
	grep -q "ugpu $ver" "$f" || { echo "FAIL: $page does not carry version $ver"; exit 1; }
	if command -v groff >/dev/null 2>&1; then
		warn=$(groff -man -ww -z "$f" 2>&1)
		[ -z "$warn" ] || { echo "FAIL: $page: $warn"; exit 1; }
	fi
done
comp=$prefix/share/bash-completion/completions/ugpuctl
[ -f "$comp" ] || { echo "FAIL: the bash completion of ugpuctl is not installed"; exit 1; }
# bash-completion's helpers stubbed: the script's own logic is what is checked
got=$(bash -c '
	_init_completion() { cur=${COMP_WORDS[COMP_CWORD]}; prev=${COMP_WORDS[COMP_CWORD-1]};
		words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD; }
	_filedir() { :; }
	. "$1"
	COMP_WORDS=(ugpuctl su); COMP_CWORD=1; _ugpuctl; echo "${COMPREPLY[*]}"
	COMP_WORDS=(ugpuctl unplug r); COMP_CWORD=2; _ugpuctl; echo "${COMPREPLY[*]}"
	COMP_WORDS=(ugpuctl suspend --h); COMP_CWORD=2; _ugpuctl; echo "${COMPREPLY[*]}"
	COMP_WORDS=(ugpuctl clients --j); COMP_CWORD=2; _ugpuctl; echo "${COMPREPLY[*]}"
	COMP_WORDS=(ugpuctl kill --); COMP_CWORD=2; _ugpuctl; echo "${COMPREPLY[*]}"
' sh "$comp")
[ "$got" = "suspend
request
--hold-ms --help
--json
--help --version" ] || { echo "FAIL: the bash completion of ugpuctl completes to: $got"; exit 1; }
[ -f "$prefix/lib/udev/rules.d/70-ugpu-userfaultfd.rules" ] ||
	{ echo "FAIL: lib/udev/rules.d/70-ugpu-userfaultfd.rules is not installed"; exit 1; }
[ -f "$prefix/lib/sysusers.d/ugpu.conf" ] || { echo "FAIL: lib/sysusers.d/ugpu.conf is not installed"; exit 1; }
out=$("$prefix/sbin/ugpud" --version) && [ "$out" = "ugpud (ugpu) $ver" ] ||
	{ echo "FAIL: sbin/ugpud is not installed or its --version says '$out'"; exit 1; }
for u in ugpud.service ugpud.socket; do
	[ -f "$prefix/lib/systemd/system/$u" ] || { echo "FAIL: lib/systemd/system/$u is not installed"; exit 1; }
done
grep -q "^ExecStart=$prefix/sbin/ugpud " "$prefix/lib/systemd/system/ugpud.service" ||
	{ echo "FAIL: ugpud.service does not start $prefix/sbin/ugpud"; exit 1; }

# 4. DESTDIR: staged below DESTDIR, nothing in the prefix itself
DESTDIR=$work/stage cmake --install "$bld" --prefix "$work/opt" >/dev/null
[ -x "$work/stage$work/opt/bin/ugpuctl" ] && [ ! -e "$work/opt" ] ||
	{ echo "FAIL: DESTDIR=$work/stage did not stage the install below it"; exit 1; }

echo "install: ok (SONAME $soname, no archive, no unprefixed export, pkg-config (--static too) and find_package, tools, man pages, completion, udev rule, DESTDIR)"
